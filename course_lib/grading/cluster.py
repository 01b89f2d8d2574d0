"""Grade a class on a Dask cluster: ``course-grade ... --cluster ADDRESS`` (or ``--cluster local:N``).

The grading process keeps everything that decides a grade: it draws the cases from the hidden
seed, computes the oracles' answers, scores and writes ``grades.csv`` and the feedback, as a
local run does (:func:`~course_lib.grading.cli.grade_batch`). Only the kernels move: each
submission becomes one task, :func:`grade_on_worker`, that runs it on a worker in its own
sandboxed kernel (:func:`~course_lib.grading.sandbox.run_notebook`, with the worker's own
:class:`~course_lib.grading.sandbox.Sandbox` probe) and returns the raw outcome as JSON text.

What a task carries: the notebook's bytes, the cases' inputs as data-only JSON
(:func:`~course_lib.grading.sandbox.case_inputs`: arguments, never the expected answers or the
seed), the limits, the sandbox settings (on or off, and the grading machine's paths a kernel must
not read, for workers that share its file system) and the version of the course. What comes back:
a JSON string (which worker, its sandbox status, and the raw outcome with the harness's output
documents as the kernel wrote them), decoded here with :mod:`~course_lib.grading.serialize`.

Retries. A worker that dies takes its running submissions with it. The scheduler's own retry
counter (``allowed-failures``) counts a death against every task *assigned* to the worker, queued
ones included, so a submission that never started could be marked. Here the grading process sends a
task only to a worker with a free thread (pinned to it), so assigned means running; it sets the
scheduler's ``allowed_failures`` to 0 for the run (restored after), so that each death reaches it at
once as ``KilledWorker``, and counts deaths per student itself: the first sends the submission
again, the second marks it ``crashed`` ("the worker running it died twice"). A student's row is
written once, when a result (or that mark) arrives, and a re-run grades whoever has no row yet.

Dask is imported only when a cluster run starts; without it the error names
``pip install "cnn-workbook[cluster]"``. ``python -m course_lib.grading.cluster bench`` measures
submissions per minute on this machine against a local cluster.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from queue import Empty, SimpleQueue

import torch

from .. import __version__
from .core import HIDDEN_SEED_ENV
from .sandbox import (
    InvalidNotebook,
    Limits,
    Outcome,
    Sandbox,
    case_inputs,
    decode_outcome,
    library_root,
    message_context,
    not_run,
    private_paths,
    read_notebook,
    run_notebook,
)

__all__ = ["ClusterRunner", "ClusterError", "VersionMismatch", "local_cluster", "grade_on_worker", "sandbox_summary"]

INSTALL_HINT = 'pip install "cnn-workbook[cluster]"'
WORKER_WAIT = 60.0  # seconds without any usable worker before a run gives up
RETRIES = 1  # times a submission runs again after the worker running it died
POLL = 1.0  # seconds between looks for workers that joined (restarted by their nanny, or added)


class ClusterError(RuntimeError):
    """The cluster cannot grade: unreachable, no workers, or workers with another version."""


class VersionMismatch(RuntimeError):
    """Raised on a worker whose course (or torch) is not the grading process's version."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ValueError(f"--cluster needs Dask distributed, which is not installed: {INSTALL_HINT}") from None
    return distributed


def _versions() -> dict:
    """What must match between the grading process and every worker: the course, and the torch
    that runs the students' code (local builds such as +cpu or +cu128 may differ)."""
    return {"course_lib": __version__, "torch": torch.__version__.split("+")[0]}


def _describe(versions: dict) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def _local_workers(address: str) -> int | None:
    """N for ``"local:N"``, ``None`` for a scheduler address; ``ValueError`` for a bad local form."""
    if not address.startswith("local:"):
        return None
    count = address.removeprefix("local:")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"cluster must be a scheduler address (tcp://host:8786) or local:N with N >= 1, got {address!r}")
    return int(count)


@contextmanager
def local_cluster(n_workers: int):
    """A Dask ``LocalCluster`` of ``n_workers`` single-threaded worker processes on 127.0.0.1,
    without a dashboard, whose workers never see the hidden seed.

    Worker processes inherit this process's environment, also those their nannies start again after
    a crash, so the seed's variable is taken out of ``os.environ`` for as long as the cluster runs.
    Workers get no Dask memory limit: a kernel's memory is limited by ``--memory`` instead, and the
    worker process itself stays small.
    """
    distributed = _distributed()
    seed = os.environ.pop(HIDDEN_SEED_ENV, None)
    try:
        # The scheduler always serves HTTP (health checks); on a free port of 127.0.0.1, with no dashboard.
        with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
                                      memory_limit=0) as cluster:
            yield cluster
    finally:
        if seed is not None:
            os.environ[HIDDEN_SEED_ENV] = seed


def sandbox_summary(statuses: dict) -> str:
    """One line on the sandboxes of every worker (address to :attr:`Sandbox.status`)."""
    if not statuses:
        return "no worker has reported its sandbox yet"
    count = len(statuses)
    workers = f"{count} worker{'s' if count > 1 else ''}"
    kinds = sorted(set(statuses.values()))
    if len(kinds) == 1:
        return f"{kinds[0]}, on {'the' if count == 1 else 'all'} {workers}"
    unsandboxed = {address: status for address, status in sorted(statuses.items()) if not status.startswith("sandboxed")}
    if not unsandboxed:
        return f"sandboxed on all {workers} ({'; '.join(kinds)})"
    listed = "; ".join(f"{address}: {status}" for address, status in unsandboxed.items())
    return f"not sandboxed on {len(unsandboxed)} of {workers} ({listed})"


# --- what runs on a worker ----------------------------------------------------------------------

_SANDBOXES: dict = {}  # per worker process: the sandbox probed for each run's settings


def _scratch_root(worker) -> Path:
    """Where a worker's kernels get their scratch directories: inside its Dask work directory,
    which Dask removes with the worker."""
    root = Path(worker.local_directory) / "course-grade"
    root.mkdir(exist_ok=True)
    return root


def _worker_sandbox(worker, hide: list, enabled: bool, memory_mb: int) -> Sandbox:
    """This worker's sandbox for a run's settings, probed here the first time it is needed."""
    key = (tuple(hide), enabled, memory_mb)
    if key not in _SANDBOXES:
        root = _scratch_root(worker)
        hidden = [*hide, worker.local_directory, *private_paths(root)]
        _SANDBOXES[key] = Sandbox.probe(root / "probe", hidden, enabled=enabled, limits=Limits(memory_mb=memory_mb))
    return _SANDBOXES[key]


def _worker_info(hide: list, enabled: bool, memory_mb: int, dask_worker=None) -> dict:
    """Run on every worker when a run starts: its versions and its sandbox's status."""
    return {"versions": _versions(), "sandbox": _worker_sandbox(dask_worker, hide, enabled, memory_mb).status}


def grade_on_worker(notebook: bytes, inputs: dict, limits: dict, hide: list, sandbox: bool, versions: dict) -> str:
    """One submission, on whichever worker runs this task: its notebook (bytes) in a fresh sandboxed
    kernel, its functions called on ``inputs`` (exercise name to the cases' arguments as data-only
    JSON). Returns JSON text: ``{"worker": address, "sandbox": status, "outcome": raw outcome}``.

    ``limits`` is :class:`Limits` as a dict; a ``threads`` of ``None`` shares this worker's cores
    between the kernels it runs at once. Raises :class:`VersionMismatch` on a worker whose versions
    differ from ``versions`` (the grading process's), before running anything.
    """
    worker = _distributed().get_worker()
    if _versions() != versions:
        raise VersionMismatch(f"worker {worker.address} has {_describe(_versions())}, the grading process {_describe(versions)}")
    limits = Limits(**limits)
    if limits.threads is None:
        limits = replace(limits, threads=max(1, len(os.sched_getaffinity(0)) // max(worker.state.nthreads, 1)))
    box = _worker_sandbox(worker, hide, sandbox, limits.memory_mb)
    scratch = Path(tempfile.mkdtemp(dir=_scratch_root(worker)))
    try:
        raw = asyncio.run(_run_here(notebook, scratch, inputs, box, limits))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return json.dumps({"worker": worker.address, "sandbox": box.status, "outcome": raw}, separators=(",", ":"))


async def _run_here(notebook: bytes, scratch: Path, inputs: dict, box: Sandbox, limits: Limits) -> dict:
    context = message_context()
    try:
        return await run_notebook(notebook, scratch, inputs, box, limits, context)
    finally:
        context.destroy(linger=0)


def _allowed_failures(value: int, dask_scheduler=None) -> int:
    """Run on the scheduler: how many worker deaths a task survives; returns the previous value."""
    previous, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, value
    return previous


# --- what runs in the grading process -------------------------------------------------------------

class ClusterRunner:
    """Runs submissions on a Dask cluster for :func:`~course_lib.grading.cli.grade_batch`.

    ``address`` is a scheduler's (``tcp://host:8786``), or ``"local:N"`` for a local cluster of N
    worker processes started for the run. ``hidden`` lists the grading machine's paths no kernel may
    read (they matter on workers that share its file system). As a context manager it connects,
    checks every worker's versions and sandbox, and sets the scheduler's retry counter for the run.
    """

    def __init__(self, address: str, limits: Limits, hidden: list, sandbox: bool):
        self.local = _local_workers(address)
        self.distributed = _distributed()
        self.address, self.limits, self.sandbox = address, limits, sandbox
        self.hide = [str(path) for path in hidden]
        self.workers: dict = {}  # address: {"sandbox": status, "graded": count this run}
        self.refused: dict = {}  # address: why its results are not used (another version)
        self.retried: list = []  # students run again after a worker died
        self.crashed: list = []  # students whose worker died twice
        self._stack = ExitStack()

    # -- connection

    def __enter__(self) -> "ClusterRunner":
        try:
            if self.local:
                cluster = self._stack.enter_context(local_cluster(self.local))
                self.scheduler = cluster.scheduler_address
                if self.limits.threads is None:  # the workers share this machine's cores
                    self.limits = replace(self.limits, threads=max(1, (os.cpu_count() or 1) // self.local))
            else:
                self.scheduler = self.address
            try:
                self.client = self._stack.enter_context(self.distributed.Client(self.scheduler, timeout=30, set_as_default=False))
            except (OSError, TimeoutError) as err:
                raise ClusterError(f"cannot reach the Dask scheduler at {self.scheduler}: {err}") from None
            self._check_workers()
            try:
                previous = self.client.run_on_scheduler(_allowed_failures, value=0)
            except Exception as err:  # noqa: BLE001 - typically the course missing on the scheduler
                raise ClusterError(f"the scheduler at {self.scheduler} cannot run the course's code "
                                   f"({type(err).__name__}: {err}); it needs the course too: {INSTALL_HINT}") from None
            self._stack.callback(self.client.run_on_scheduler, _allowed_failures, value=previous)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _check_workers(self) -> None:
        """Every worker's versions and sandbox, asked once; refuses a cluster with another version."""
        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT)
        except TimeoutError:
            raise ClusterError(f"no worker joined the Dask scheduler at {self.scheduler} within {WORKER_WAIT:g} s; "
                               f"start some with `dask worker {self.scheduler}`") from None
        try:
            infos = self.client.run(_worker_info, self.hide, self.sandbox, self.limits.memory_mb)
        except Exception as err:  # noqa: BLE001 - typically the course missing on a worker
            raise ClusterError(f"a worker cannot run the course's code ({type(err).__name__}: {err}); "
                               f"every worker needs the course installed: {INSTALL_HINT}") from None
        mine = _versions()
        wrong = {address: info["versions"] for address, info in sorted(infos.items()) if info["versions"] != mine}
        if wrong:
            listed = "; ".join(f"{address} has {_describe(versions)}" for address, versions in wrong.items())
            raise ClusterError(f"{len(wrong)} of {len(infos)} workers run other versions than this process "
                               f"({_describe(mine)}): {listed}. Install the same course on every worker "
                               f"(pip install \"cnn-workbook[cluster]=={__version__}\") and restart them.")
        self.workers = {address: {"sandbox": info["sandbox"], "graded": 0} for address, info in sorted(infos.items())}

    # -- what grade_batch reads

    @property
    def status(self) -> str:
        return sandbox_summary({address: worker["sandbox"] for address, worker in self.workers.items()})

    @property
    def where(self) -> str:
        return f" on {self._workers_at()}"

    def _workers_at(self) -> str:
        count = len(self.workers)
        return f"{count} Dask worker{'s' if count != 1 else ''} at {self.scheduler}"

    def state(self, ran_on: dict) -> dict:
        """What grading.json records of the run: the scheduler, every worker, and where each student ran."""
        return {"cluster": {"scheduler": self.scheduler, "workers": self.workers}, "ran_on": dict(sorted(ran_on.items()))}

    def report(self) -> str:
        """Where the submissions ran: per worker, its address, count and sandbox; then retries."""
        width = max(len(address) for address in self.workers) if self.workers else 0
        lines = [f"where the submissions ran ({self._workers_at()}):"]
        lines += [f"  {address:<{width}}  {worker['graded']:>4} submission{'s' if worker['graded'] != 1 else ' '}  {worker['sandbox']}"
                  for address, worker in self.workers.items()]
        if self.retried:
            lines.append(f"run again after their worker died: {', '.join(self.retried)}")
        if self.crashed:
            lines.append(f"marked crashed, their worker died twice: {', '.join(self.crashed)}")
        lines += [f"not used: {address}: {why}" for address, why in self.refused.items()]
        return "\n".join(lines)

    # -- grading

    def grade(self, todo: list, cases: dict, record) -> None:
        """Run every ``(student, path)`` of ``todo`` on the workers; ``record(student, outcome, worker)``
        each result as it arrives.

        Finished tasks arrive on a queue (each future's done-callback puts it there), read with a
        timeout rather than a blocking ``as_completed``: between results the loop looks for free
        threads, so a worker restarted by its nanny or added to the cluster gets work at once.
        """
        inputs = case_inputs(cases)
        queue, running, deaths, finished = deque(todo), {}, {}, SimpleQueue()
        stalled = time.monotonic()
        while queue or running:
            self._dispatch(queue, running, inputs, cases, record, finished)
            if not running:
                if queue and time.monotonic() - stalled > WORKER_WAIT:
                    raise ClusterError(f"no usable worker for {WORKER_WAIT:g} s; {len(queue)} submissions are not graded "
                                       "yet: run the same command again once workers are back")
                time.sleep(POLL)
                continue
            stalled = time.monotonic()
            try:
                future = finished.get(timeout=POLL)
            except Empty:  # look for workers that joined, then wait again
                continue
            student, path, worker = running.pop(future)
            self._collect(future, student, path, worker, cases, record, queue, deaths)

    def _free_threads(self, running: dict) -> list:
        """One worker address per thread not running a submission of ours."""
        busy = Counter(worker for _, _, worker in running.values())
        return [address for address, threads in self.client.nthreads().items() if address not in self.refused
                for _ in range(threads - busy[address])]

    def _dispatch(self, queue: deque, running: dict, inputs: dict, cases: dict, record, finished: SimpleQueue) -> None:
        for worker in self._free_threads(running):
            while queue:
                student, path = queue.popleft()
                try:
                    notebook = read_notebook(path)
                except InvalidNotebook as err:  # nothing to send
                    record(student, decode_outcome(not_run("invalid", f"invalid notebook: {err}", cases, f"not run: {err}"), cases))
                    continue
                # Pinned to a free thread, so that the task runs as soon as it arrives; should that
                # worker be gone already, the scheduler places it elsewhere.
                future = self.client.submit(grade_on_worker, notebook, inputs, asdict(self.limits), self.hide, self.sandbox,
                                            _versions(), key=f"course-grade-{student}-{secrets.token_hex(4)}",
                                            workers=[worker], allow_other_workers=True)
                running[future] = (student, path, worker)
                future.add_done_callback(finished.put)
                break

    def _collect(self, future, student: str, path: Path, worker: str, cases: dict, record, queue: deque, deaths: dict) -> None:
        """Record one finished task, or send its submission again after its worker died once."""
        try:
            document = json.loads(future.result())
            outcome, worker = decode_outcome(document["outcome"], cases), str(document["worker"])
            self.workers.setdefault(worker, {"sandbox": str(document["sandbox"]), "graded": 0})
        except self.distributed.KilledWorker:
            deaths.setdefault(student, []).append(worker)
            if len(deaths[student]) <= RETRIES:
                self.retried.append(student)
                queue.appendleft((student, path))
                return
            reason = f"the worker running it died twice ({', '.join(deaths[student])})"
            outcome = decode_outcome(not_run("crashed", reason, cases, f"not run: {reason}"), cases)
            self.crashed.append(student)
        except VersionMismatch as err:  # a worker that joined after the check: use the others
            self.refused[worker] = str(err)
            queue.appendleft((student, path))
            return
        except self.distributed.CancelledError:
            raise ClusterError(f"the scheduler cancelled the grading of {student}; run the same command again to grade "
                               "whoever is not graded yet") from None
        except Exception as err:  # noqa: BLE001 - as in a local run, one submission's failure must not stop the batch
            reason = f"grading failed: {type(err).__name__}: {err}"
            outcome = Outcome("error", reason, dict.fromkeys(cases, f"not run: {reason}"))
        finally:
            future.release()
        self.workers.setdefault(worker, {"sandbox": "unknown: the worker died before it reported", "graded": 0})
        self.workers[worker]["graded"] += 1
        record(student, outcome, worker)


# --- throughput benchmark -------------------------------------------------------------------------

def bench(n: int, assignment: str = "01_conv_arithmetic", workers: int = 2) -> str:
    """Submissions per minute grading ``n`` copies of the solution notebook of ``assignment`` with
    ``--jobs workers`` on this machine and on a local cluster of ``workers`` workers; as a table."""
    from .cli import grade_batch

    solution = library_root() / "solutions" / f"{assignment}.ipynb"
    if not solution.is_file():
        raise ValueError(f"bench needs {solution}, the solution notebook of {assignment!r}")
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="course-grade-bench-"))
    try:
        paths = []
        for index in range(n):
            paths.append(root / "submissions" / f"student{index:03d}.ipynb")
            paths[-1].parent.mkdir(exist_ok=True)
            shutil.copyfile(solution, paths[-1])
        started = time.perf_counter()
        with local_cluster(workers):
            startup = time.perf_counter() - started
        timings = {}
        for label, options in [(f"--jobs {workers} (this machine)", {"jobs": workers}),
                               (f"--cluster local:{workers}", {"cluster": f"local:{workers}"})]:
            started = time.perf_counter()
            rows = grade_batch(assignment, paths, root / label.split()[0], seed=1, progress=False, **options)
            timings[label] = time.perf_counter() - started
            statuses = Counter(row["status"] for row in rows.values())
            if statuses != {"ok": n}:
                raise RuntimeError(f"{label}: expected {n} graded submissions, got {dict(statuses)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    width = max(len(label) for label in timings)
    lines = [f"grading {n} copies of solutions/{assignment}.ipynb, {workers} kernels at a time, sandbox as configured",
             f"{'run':<{width}}  {'wall s':>7}  {'s/submission':>12}  {'submissions/min':>15}"]
    for label, seconds in timings.items():
        lines.append(f"{label:<{width}}  {seconds:>7.1f}  {seconds / n:>12.2f}  {60 * n / seconds:>15.1f}")
    local, remote = timings.values()
    lines += [f"cluster overhead: {(remote - local) / n:+.2f} s per submission "
              f"(starting and stopping the local cluster alone: {startup:.1f} s, once per run)",
              f"load average (1 min) before: {load_before[0]:.2f}, after: {load_after[0]:.2f}; {os.cpu_count()} cores"]
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m course_lib.grading.cluster bench [--n 20] [--workers 2] [--assignment NN_slug]``."""
    parser = argparse.ArgumentParser(prog="python -m course_lib.grading.cluster",
                                     description="Throughput of course-grade on this machine vs a local Dask cluster.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("bench", help="submissions per minute, --jobs N here vs --cluster local:N")
    command.add_argument("--n", type=int, default=20, help="copies of the solution notebook to grade (default 20)")
    command.add_argument("--workers", type=int, default=2, help="kernels at a time in both runs (default 2)")
    command.add_argument("--assignment", default="01_conv_arithmetic", help="whose solution notebook (default 01_conv_arithmetic)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.workers < 1:
        parser.error("--n and --workers must be >= 1")
    try:
        print(bench(args.n, args.assignment, args.workers))
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
