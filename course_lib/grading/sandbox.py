"""Run one student notebook in its own kernel and bring back only raw outputs.

:func:`run_notebook` gives each submission a scratch directory and a fresh kernel (started by
``jupyter_client`` and driven cell by cell by ``nbclient``), runs the notebook's code cells under a
time limit, then runs :mod:`~course_lib.grading.harness` once per exercise in the same kernel and
reads back the outputs it wrote. It takes only the notebook's bytes and the cases' inputs
(:func:`case_inputs`: arguments as data-only JSON, never the expected answers) and returns the
*raw outcome*: plain JSON data holding the harness's output documents as the kernel wrote them,
undecoded. :func:`decode_outcome` turns it into an :class:`Outcome` wherever the cases are, so the
kernel can run on another machine (:mod:`~course_lib.grading.cluster`) while only plain data
travels. :func:`run_submission` does both on this machine. Comparing the outputs with the oracles
is the caller's job, in its own process (see :mod:`~course_lib.grading.cli`).

The kernel is confined three ways:

* limits: ``RLIMIT_DATA`` (writable memory the process can allocate; unlike ``RLIMIT_AS`` it
  does not count the address space torch reserves without using), ``RLIMIT_FSIZE`` and no core
  dumps, set by a tiny reaper that runs the kernel as its child; a wall-clock limit per phase,
  enforced by interrupting the kernel and, if it does not stop, killing it;
* an end for every process a submission starts: the reaper is a child subreaper, so a daemon that
  double-forks and calls ``setsid`` is still its descendant, and when the kernel ends (or is
  killed) the reaper kills everything left below it. Inside bubblewrap the kernel's own pid
  namespace does the same;
* bubblewrap, where it works (:class:`Sandbox`): no network, the whole file system read-only,
  the output directory, the other submissions, home directories and ``solutions/`` hidden, a
  private ``/tmp``, and only the scratch directory writable; kernels talk to the grader over Unix
  sockets in that directory, since they have no network at all;
* a small environment: the grader's variables are not passed on (the hidden seed least of all),
  and nothing the kernel prints is kept.
"""
from __future__ import annotations

import asyncio
import glob
import json
import math
import os
import shutil
import signal
import site
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, DeadKernelError
from nbformat.v4 import new_code_cell, new_notebook

from . import serialize
from .core import HIDDEN_SEED_ENV

__all__ = ["Limits", "Outcome", "Sandbox", "InvalidNotebook", "library_root", "private_paths", "read_notebook",
           "read_code_cells", "case_inputs", "run_notebook", "not_run", "decode_outcome", "run_submission",
           "read_outputs", "parse_outputs", "collect_outputs"]

NOTEBOOK_LIMIT = 100 * 2**20  # bytes of notebook JSON worth reading
MESSAGE_LIMIT = 32 * 2**20  # bytes of one kernel message; bigger ones are dropped by zmq
GRACE = 10.0  # seconds an interrupted kernel gets to stop before it is killed

# The reaper every kernel runs under (python -I -S -c, so it starts in ms): it sets the limits the kernel
# inherits, becomes a child subreaper (processes orphaned below it, such as a double-forked setsid daemon,
# are reparented to it rather than to init), runs the kernel (bwrap or Python) as its child, and when the
# kernel ends or it receives SIGTERM, kills every process left below it before exiting with the kernel's
# status. PR_SET_PDEATHSIG sends it that SIGTERM if the grader itself dies.
_REAPER = """\
import ctypes, os, resource, signal, sys
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_DATA, (n, n))
resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


class Stop(Exception):
    pass


def stop(*_):
    raise Stop


signal.signal(signal.SIGTERM, stop)
kernel = os.fork()
if kernel == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is for the kernel, not for us
code = 1
try:
    while True:  # reap orphans as they die, until the kernel itself ends
        pid, status = os.waitpid(-1, 0)
        if pid == kernel:
            code = os.waitstatus_to_exitcode(status)
            break
except (Stop, ChildProcessError):
    pass
signal.signal(signal.SIGTERM, signal.SIG_IGN)
me = str(os.getpid())


def children():
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except (OSError, ValueError):
            continue
        if stat[stat.rfind(")") + 2 :].split()[1:2] == [me]:
            found.append(int(entry))
    return found


while True:  # killing a child hands its own children to us: repeat until nothing is left
    left = children()
    if not left:
        break
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in left:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
sys.exit(code if code >= 0 else 128 - code)
"""
_KERNEL_SPEC = KernelSpec(
    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    display_name="Python 3 (graded submission)",
    language="python",
    interrupt_mode="message",  # a signal would reach bwrap, not the kernel inside it
)
_KEPT_ENV = {"PATH", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH", "TORCH_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
_KEPT_ENV_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "COURSE_")


def library_root() -> Path:
    """The directory that holds the ``course_lib`` package (a checkout, or site-packages)."""
    return Path(__file__).resolve().parents[2]


def private_paths(scratch_root: Path) -> list[Path]:
    """What kernels on this machine must never read, besides what the grader names: every
    submission's scratch directory (their own is mounted back), home directories, ``solutions/``."""
    return [scratch_root, Path.home(), Path("/root"), Path("/home"), library_root() / "solutions"]


@dataclass(frozen=True)
class Limits:
    """Per-submission limits. ``timeout`` applies to running the notebook and, separately, to
    calling its functions on the cases; ``memory_mb`` to what the kernel may allocate."""

    timeout: float = 300.0
    memory_mb: int = 4096
    startup: float = 60.0
    fast: bool = True
    threads: int | None = None  # torch threads per kernel; None: the cores shared between jobs


@dataclass
class Outcome:
    """What one submission's kernel produced.

    ``outputs`` maps each exercise to its list of ``(status, value)`` pairs (see
    :func:`~course_lib.grading.run_cases`) or, when there are none, to the reason why. (While a
    kernel runs, in :func:`run_notebook`, it maps each exercise to its raw entry instead.)
    ``status`` is ``"ok"``, ``"timeout"``, ``"crashed"``, ``"invalid"`` or ``"error"``;
    ``reason`` explains any status but ``"ok"``; ``cell_errors`` lists the notebook's own errors.
    """

    status: str
    reason: str = ""
    outputs: dict = field(default_factory=dict)
    cell_errors: list = field(default_factory=list)


class InvalidNotebook(ValueError):
    """A submission that is not a readable Jupyter notebook."""


def read_notebook(path: Path) -> bytes:
    """The bytes of the notebook file at ``path``; ``InvalidNotebook`` if unreadable or too large."""
    try:
        with open(path, "rb") as file:
            raw = file.read(NOTEBOOK_LIMIT + 1)
    except OSError as err:
        raise InvalidNotebook(f"cannot read the file: {err.strerror}") from None
    if len(raw) > NOTEBOOK_LIMIT:
        raise InvalidNotebook(f"the file is over {NOTEBOOK_LIMIT // 2**20} MB")
    return raw


def read_code_cells(notebook: Path | bytes) -> list[str]:
    """The source of every code cell of a notebook (a file, or its bytes); ``InvalidNotebook`` otherwise."""
    raw = notebook if isinstance(notebook, bytes) else read_notebook(notebook)
    if len(raw) > NOTEBOOK_LIMIT:  # bytes read elsewhere (a cluster task's) get the same limit
        raise InvalidNotebook(f"the file is over {NOTEBOOK_LIMIT // 2**20} MB")
    try:
        notebook = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InvalidNotebook(f"the file is not valid notebook JSON ({str(err)[:100]})") from None
    if type(notebook) is not dict or notebook.get("nbformat") != 4 or type(notebook.get("cells")) is not list:
        raise InvalidNotebook("the file is not a version 4 Jupyter notebook (no nbformat 4 cell list)")
    sources = []
    for cell in notebook["cells"]:
        if type(cell) is not dict or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if type(source) is list and all(type(line) is str for line in source):
            source = "".join(source)
        if type(source) is not str:
            raise InvalidNotebook("a code cell's source is neither text nor a list of lines")
        sources.append(source)
    return sources


class Sandbox:
    """Confines kernels with bubblewrap where it works, and says plainly when it does not.

    ``hide`` lists paths kernels must not read (the output directory, the submissions, home
    directories, ``solutions/``): each becomes an empty read-only directory or an empty file, and
    what the kernel needs from inside one (Python, the library) is mounted back on top.
    """

    def __init__(self, command: list[str] | None, status: str, hide=(), tmpfs_size: bool = False):
        self.command, self.status = command, status
        self._hide = [Path(p).resolve() for p in hide]
        self._tmpfs_size = tmpfs_size

    @property
    def active(self) -> bool:
        return self.command is not None

    @classmethod
    def probe(cls, scratch: Path, hide=(), enabled: bool = True, limits: Limits = Limits()) -> "Sandbox":
        """A sandbox using ``bwrap`` if it is installed and works here (tried once, in ``scratch``)."""
        if not enabled:
            return cls(None, "not sandboxed: disabled by --no-sandbox")
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            return cls(None, "not sandboxed: bubblewrap (bwrap) is not installed; `apt-get install bubblewrap` isolates kernels")
        try:
            usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30).stdout
            version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
            candidate = cls([bwrap], f"sandboxed with {version or 'bubblewrap'} (no network, read-only file system)", hide, "--size" in usage)
            scratch.mkdir(parents=True, exist_ok=True)
            trial = subprocess.run(candidate.wrap(["true"], scratch, limits), capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as err:
            return cls(None, f"not sandboxed: bwrap could not run ({err})")
        if trial.returncode != 0:
            detail = (trial.stderr.strip().splitlines() or ["no message"])[-1]
            return cls(None, f"not sandboxed: bwrap cannot create a sandbox on this machine ({detail})")
        return candidate

    def wrap(self, command: list[str], scratch: Path, limits: Limits) -> list[str]:
        """``command`` under the reaper (memory limits; every process it leaves is ended with it) and,
        when active, inside the sandbox."""
        limit = str(limits.memory_mb * 2**20)
        inner = self._bwrap_args(scratch, limit) + command if self.active else command
        return [sys.executable, "-I", "-S", "-c", _REAPER, limit, *inner]

    def _bwrap_args(self, scratch: Path, size: str) -> list[str]:
        sized = ["--size", size] if self._tmpfs_size else []
        args = [*self.command, "--die-with-parent", "--unshare-all", "--cap-drop", "ALL", "--ro-bind", "/", "/", "--dev", "/dev"]
        for device in sorted(glob.glob("/dev/nvidia*")):  # GPUs stay usable
            args += ["--dev-bind", device, device]
        args += ["--proc", "/proc", *sized, "--tmpfs", "/dev/shm"]
        emptied = []
        for action, path in _mount_plan(self._hide, _needed_paths(), private=[Path("/tmp")]):
            if action == "show":
                args += ["--ro-bind", str(path), str(path)]
            elif action == "private":
                args += [*sized, "--tmpfs", str(path)]
            elif path.is_dir():
                args += ["--tmpfs", str(path)]
                emptied += ["--remount-ro", str(path)]
            else:
                args += ["--ro-bind", "/dev/null", str(path)]
        # Mount points are made inside the emptied directories first, then those become read-only.
        # ipykernel exits when its parent is not JPY_PARENT_PID, which inside the pid namespace it
        # never is; --die-with-parent ties the kernel's life to the grader instead.
        return args + ["--bind", str(scratch), str(scratch), *emptied, "--chdir", str(scratch),
                       "--unsetenv", "JPY_PARENT_PID", "--"]


def _needed_paths() -> list[Path]:
    """What a kernel must be able to read: the Python installation and the library."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()]
    paths += [site.getusersitepackages(), Path(sys.executable).parent, Path(sys.executable).resolve().parent]
    paths.append(library_root() / "course_lib")
    return sorted({Path(p).resolve() for p in paths if os.path.isdir(p)})


def _mount_plan(hide: list[Path], show: list[Path], private: list[Path]) -> list[tuple[str, Path]]:
    """Mount actions, shallowest path first so that deeper ones win.

    ``("private", p)``: an empty writable directory (``/tmp``); ``("hide", p)``: an empty
    directory or file; ``("show", p)``: a needed path, bound again where a hidden or private
    directory covers it. A needed path itself is never hidden, and paths inside a private
    directory need no hiding.
    """
    def under(path, folders):
        return any(folder == path or folder in path.parents for folder in folders)

    plan = [("private", path) for path in private]
    for path in hide:
        if not path.exists() or under(path, private):
            continue
        if path in show:  # hiding it would hide what the kernel needs; its contents are shown again below
            continue
        plan.append(("hide", path))
    covering = [path for action, path in plan if path.is_dir()]
    plan += [("show", needed) for needed in show if any(folder in needed.parents for folder in covering)]
    return sorted(set(plan), key=lambda item: (len(item[1].parts), str(item[1])))


def kernel_environment(scratch: Path, limits: Limits) -> dict[str, str]:
    """The kernel's environment: a few of the grader's variables, never the hidden seed."""
    env = {key: value for key, value in os.environ.items() if key in _KEPT_ENV or key.startswith(_KEPT_ENV_PREFIXES)}
    env.pop(HIDDEN_SEED_ENV, None)
    home = scratch / "home"
    env.update(
        HOME=str(home),
        TMPDIR=str(scratch / "tmp"),
        PYTHONPATH=str(library_root()),
        PYTHONDONTWRITEBYTECODE="1",
        MPLBACKEND="agg",
        MPLCONFIGDIR=str(home / ".config" / "matplotlib"),
        XDG_CACHE_HOME=str(home / ".cache"),
        COURSE_FAST="1" if limits.fast else "0",
    )
    env.setdefault("OMP_NUM_THREADS", str(limits.threads or 1))
    return env


class _KernelManager(AsyncKernelManager):
    """Starts ipykernel from this Python, wrapped by ``wrap``, over Unix sockets in ``scratch``; its client
    polls in slices (:mod:`course_lib.kernel_client`), so a submission with widgets is not timed out
    by a missed reply."""

    def __init__(self, wrap, scratch: Path, **kwargs):
        super().__init__(transport="ipc", ip=str(scratch / "k"), connection_file=str(scratch / "kernel.json"),
                         client_class="course_lib.kernel_client.SlicedPollClient", **kwargs)
        self._wrap = wrap

    @property
    def kernel_spec(self) -> KernelSpec:
        return _KERNEL_SPEC

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        return self._wrap(super().format_kernel_cmd(extra_arguments))

    def client(self, **kwargs):
        # The shared context carries the message-size cap to the client's sockets too.
        return super().client(context=self.context, **kwargs)


class _Client(NotebookClient):
    """Runs cells and keeps none of their output: grading needs only what they define."""

    def process_message(self, msg, cell, cell_index):
        content = msg.get("content") or {}
        if msg.get("msg_type") == "status" and content.get("execution_state") == "idle":
            raise CellExecutionComplete()
        return None


def message_context() -> zmq.asyncio.Context:
    """A zmq context whose sockets drop any message over ``MESSAGE_LIMIT`` bytes."""
    context = zmq.asyncio.Context()
    context.setsockopt(zmq.MAXMSGSIZE, MESSAGE_LIMIT)
    return context


def _excerpt(source: str, width: int = 60) -> str:
    line = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def case_inputs(cases: dict) -> dict[str, str]:
    """What a kernel gets of ``cases`` (exercise name to list of :class:`~course_lib.grading.core.Case`):
    each exercise's case arguments as data-only JSON text. Never the expected answers."""
    return {name: serialize.dumps([[case.args, case.kwargs] for case in exercise_cases])
            for name, exercise_cases in cases.items()}


def not_run(status: str, reason: str, names, why: str) -> dict:
    """The raw outcome of a submission whose functions were never called: ``why`` for each of ``names``."""
    return {"status": status, "reason": reason, "cell_errors": [], "outputs": {name: {"reason": why} for name in names}}


async def run_notebook(notebook: bytes, scratch: Path, inputs: dict, sandbox: Sandbox, limits: Limits, context) -> dict:
    """Run the notebook ``notebook`` (its bytes) in a fresh kernel in ``scratch`` and call its functions
    on ``inputs`` (:func:`case_inputs`); return the raw outcome, plain JSON data::

        {"status": "ok", "reason": "", "cell_errors": ["NameError: ..."],
         "outputs": {name: {"raw": "<the harness's output document>"} or {"reason": "why there is none"}}}

    The output documents are passed on as the kernel wrote them: :func:`decode_outcome` parses and
    checks them where the cases are. Never raises for anything the submission does.
    """
    try:
        sources = read_code_cells(notebook)
    except InvalidNotebook as err:
        return not_run("invalid", f"invalid notebook: {err}", inputs, f"not run: {err}")
    for sub in ("cases", "outputs", "tmp", "home"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    for name, text in inputs.items():
        (scratch / "cases" / f"{name}.json").write_text(text)
    (scratch / "submission.ipynb").write_bytes(notebook)

    harness = ["import course_lib.grading.harness as _h; _h.prepare()"] + [
        f"import course_lib.grading.harness as _h; _h.run({name!r}, 'cases/{name}.json', 'outputs/{name}.json', globals())"
        for name in inputs
    ]
    km = _KernelManager(lambda cmd: sandbox.wrap(cmd, scratch, limits), scratch, context=context)
    client = _Client(
        new_notebook(cells=[new_code_cell(source) for source in sources + harness]),
        km=km, allow_errors=True, interrupt_on_timeout=True, record_timing=False,
        startup_timeout=int(limits.startup), iopub_timeout=2,
    )
    run = _Run(km, client, notebook_cells=len(sources))
    try:
        await km.start_kernel(
            cwd=str(scratch), env=kernel_environment(scratch, limits),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            extra_arguments=[
                "--HistoryManager.hist_file=:memory:",
                "--IPKernelApp.outstream_class=course_lib.grading.harness.DiscardedOutput",
                "--IPKernelApp.capture_fd_output=False",
            ],
        )
        await client.async_start_new_kernel_client()
    except Exception as err:  # noqa: BLE001 - any failure to start is this submission's error, not the batch's
        await run.stop()
        return not_run("error", f"the kernel did not start: {err}", inputs, "not run: the kernel did not start")
    try:
        outcome = await run.notebook(limits.timeout)
        if await km.is_alive():
            await run.harness(list(inputs), limits.timeout, scratch / "outputs", outcome)
        for name in inputs:
            outcome.outputs.setdefault(name, {"reason": f"not run: {outcome.reason}"})
        return asdict(outcome)
    finally:
        await run.stop()


_OUTCOME_STATUSES = ("ok", "timeout", "crashed", "invalid", "error")


def decode_outcome(raw, cases: dict) -> Outcome:
    """The :class:`Outcome` of a raw outcome from :func:`run_notebook`, its outputs parsed and
    decoded as plain data (:func:`parse_outputs`) against ``cases``. ``ValueError`` if malformed."""
    if (type(raw) is not dict or raw.get("status") not in _OUTCOME_STATUSES or type(raw.get("reason")) is not str
            or type(raw.get("outputs")) is not dict or type(raw.get("cell_errors")) is not list):
        raise ValueError("malformed raw outcome")
    outputs = {}
    for name, exercise_cases in cases.items():
        entry = raw["outputs"].get(name)
        if type(entry) is dict and type(entry.get("raw")) is str:
            outputs[name] = parse_outputs(entry["raw"], name, len(exercise_cases))
        elif type(entry) is dict and type(entry.get("reason")) is str:
            outputs[name] = entry["reason"]
        else:
            outputs[name] = f"not run: {raw['reason']}"
    return Outcome(raw["status"], raw["reason"], outputs, [str(error) for error in raw["cell_errors"]])


async def run_submission(notebook: Path, scratch: Path, cases: dict, sandbox: Sandbox, limits: Limits, context) -> Outcome:
    """Run the notebook file ``notebook`` in a fresh kernel in ``scratch`` and collect its outputs on
    ``cases`` (exercise names to lists of :class:`~course_lib.grading.core.Case`), on this machine:
    :func:`run_notebook` then :func:`decode_outcome`. Never raises for anything the submission does.
    """
    try:
        data = read_notebook(notebook)
    except InvalidNotebook as err:
        raw = not_run("invalid", f"invalid notebook: {err}", cases, f"not run: {err}")
    else:
        raw = await run_notebook(data, scratch, case_inputs(cases), sandbox, limits, context)
    return decode_outcome(raw, cases)


class _Run:
    """The state of one kernel while it runs a submission: the watchdog and the cell errors."""

    def __init__(self, km: _KernelManager, client: _Client, notebook_cells: int):
        self.km, self.client, self.notebook_cells = km, client, notebook_cells
        self.killed = False
        self.errors: list[str] = []
        client.on_cell_error = self._record_error

    def _record_error(self, cell, cell_index, execute_reply):
        content = execute_reply.get("content") or {}
        name, value = str(content.get("ename"))[:60], str(content.get("evalue"))[:200]
        self.errors.append(f"{name}: {value}" if value else name)

    def _kill(self) -> None:
        self.killed = True
        asyncio.ensure_future(self._end())

    async def _end(self) -> None:
        """End the kernel and everything it started: SIGTERM to its reaper, which kills them all and
        exits; the whole process group is killed only if the reaper does not go within ``GRACE``."""
        process = getattr(self.km.provisioner, "process", None)
        if process is None or process.poll() is not None:
            return
        try:
            os.kill(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + GRACE
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if process.poll() is None:
            await self.km.signal_kernel(signal.SIGKILL)

    async def _execute(self, index: int, seconds: float) -> None:
        """Run cell ``index`` for at most ``seconds`` (then interrupt; kill after ``GRACE``)."""
        self.client.timeout = max(1, math.ceil(seconds))
        watchdog = asyncio.get_running_loop().call_later(seconds + GRACE, self._kill)
        try:
            await self.client.async_execute_cell(self.client.nb.cells[index], index, store_history=False)
        finally:
            watchdog.cancel()

    async def notebook(self, timeout: float) -> Outcome:
        deadline = time.monotonic() + timeout
        for index in range(self.notebook_cells):
            cell = self.client.nb.cells[index]
            try:
                await self._execute(index, deadline - time.monotonic())
            except DeadKernelError:
                where = f"code cell {index + 1} (`{_excerpt(cell.source)}`)"
                if self.killed:
                    return Outcome("timeout", f"the notebook ran past {timeout:g} s in {where} and did not stop when interrupted", cell_errors=self.errors)
                return Outcome("crashed", f"the kernel died while running {where}", cell_errors=self.errors)
            if time.monotonic() >= deadline:
                return Outcome("timeout", f"the notebook was stopped after {timeout:g} s in code cell {index + 1} "
                               f"(`{_excerpt(cell.source)}`); what it had defined by then was graded", cell_errors=self.errors)
        return Outcome("ok", cell_errors=self.errors)

    async def harness(self, names: list, timeout: float, out_dir: Path, outcome: Outcome) -> None:
        """Load the harness, then run each exercise's cell, sharing ``timeout`` fairly; put each
        exercise's raw entry (its output document, or why there is none) in ``outcome.outputs``."""
        deadline = time.monotonic() + timeout
        notebook_errors = len(self.errors)
        cells = [("the grading harness", self.notebook_cells)]
        cells += [(name, self.notebook_cells + 1 + k) for k, name in enumerate(names)]
        for k, (name, index) in enumerate(cells):
            # Loading imports every exercise module (seconds: torchvision); it may use the whole
            # budget, and each exercise gets an equal share of what is left.
            share = deadline - time.monotonic() if k == 0 else (deadline - time.monotonic()) / (len(cells) - k)
            started = time.monotonic()
            try:
                await self._execute(index, share)
            except DeadKernelError:
                why = f"took longer than {share:.0f} s and did not stop" if self.killed else "crashed the kernel"
                outcome.status, outcome.reason = ("timeout" if self.killed else "crashed"), f"calling {name} {why}"
                break
            if k == 0:
                continue
            raw = read_outputs(out_dir, name)
            if raw is None:
                if time.monotonic() - started >= share:
                    reason = f"calling {name} on the cases took longer than {share:.0f} s"
                    if outcome.status == "ok":
                        outcome.status, outcome.reason = "timeout", reason
                else:
                    failure = self.errors[-1] if len(self.errors) > notebook_errors else "no output"
                    reason = f"the grading harness could not run {name} ({failure})"
                outcome.outputs[name] = {"reason": reason}
            elif isinstance(raw, str):
                outcome.outputs[name] = {"reason": raw}
            else:
                try:
                    outcome.outputs[name] = {"raw": raw.decode("utf-8")}
                except UnicodeDecodeError:
                    outcome.outputs[name] = {"reason": f"the outputs of {name} are unreadable (not UTF-8 text)"}
        del self.errors[notebook_errors:]  # the harness's own errors are reported per exercise

    async def stop(self) -> None:
        """Shut the kernel down at once, with every process it started, and close its channels."""
        try:
            if self.client.kc is not None:
                self.client.kc.stop_channels()
            await self._end()
            await self.km.shutdown_kernel(now=True)
        except Exception:  # noqa: BLE001 - a kernel that is already gone is fine
            pass


_STATUSES = ("ok", "error", "not implemented")


def read_outputs(out_dir: Path, name: str):
    """The bytes of the harness's output document for ``name``, a reason (``str``) why they cannot
    be read, or ``None`` when the harness wrote nothing.

    The kernel controls ``out_dir``, so the file is opened without following links, only if it is
    a regular file, and read up to one byte over ``serialize.MAX_BYTES`` (:func:`parse_outputs`
    refuses that).
    """
    try:
        folder = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fd = os.open(f"{name}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return None
    finally:
        os.close(folder)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return f"the outputs of {name} are not in a regular file"
        return file.read(serialize.MAX_BYTES + 1)


def parse_outputs(raw: str | bytes, name: str, n_cases: int):
    """The harness's output document for ``name`` as ``n_cases`` checked ``(status, value)`` pairs,
    or a reason (``str``) why it is unusable. Every value is decoded as plain data."""
    try:
        document = serialize.parse(raw)
    except ValueError as err:
        return f"the outputs of {name} are unreadable ({err})"
    if document == {"missing": True}:
        return f"the notebook does not define {name}"
    outputs = document.get("outputs") if type(document) is dict else None
    if type(outputs) is not list or len(outputs) > n_cases:
        return f"the outputs of {name} are malformed"
    pairs = [_checked_pair(item) for item in outputs]
    if "not implemented" in [status for status, _ in pairs]:
        return pairs
    return pairs + [("error", "no output came back for this case")] * (n_cases - len(pairs))


def collect_outputs(out_dir: Path, name: str, n_cases: int):
    """The harness's outputs for ``name`` in ``out_dir``, read and parsed here: checked pairs, a
    reason (``str``) why they are unusable, or ``None`` when the harness wrote nothing."""
    raw = read_outputs(out_dir, name)
    return raw if raw is None or isinstance(raw, str) else parse_outputs(raw, name, n_cases)


def _checked_pair(item) -> tuple:
    if type(item) is not list or len(item) != 2 or type(item[0]) is not str or item[0] not in _STATUSES:
        return ("error", "malformed output")
    status, value = item
    if status == "ok":
        try:
            return ("ok", serialize.decode(value, device="cpu"))
        except ValueError as err:
            return ("error", str(err))
    if status == "error":
        return ("error", value[:500] if type(value) is str else "raised an error")
    return ("not implemented", None)
