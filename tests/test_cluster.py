"""Grading on a Dask cluster (``course-grade ... --cluster``): the same grades as a local run, nothing
lost when a worker dies, and nothing of the seed or the oracles sent to a worker.

Cluster workers and kernels cost seconds to start, so ONE run (module fixture ``runs``) grades a
batch of honest, failing and adversarial submissions (test_instructor's builders) locally with
``--jobs 2`` and on ``--cluster local:2``, while a watcher thread kills the worker running two
extra submissions: ``sleeper`` once (it must be run again and graded as usual) and ``doomed`` twice
(it must be marked crashed). Every argument sent to the cluster is recorded, and the watcher reads
every worker's environment, restarted ones included. The tests assert on what the fixture saw.
"""
import base64
import contextlib
import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from test_instructor import ASSIGNMENT, FULL, NAMES, REPO, SEED, define, honest_points, read_rows, write_notebooks

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

from course_lib.grading import cli  # noqa: E402
from course_lib.grading.cli import draw_cases, grade_batch, grade_main  # noqa: E402
from course_lib.grading.cluster import (  # noqa: E402
    ClusterError,
    ClusterRunner,
    _versions,
    _worker_info,
    grade_on_worker,
    sandbox_summary,
)
from course_lib.grading.core import HIDDEN_SEED_ENV  # noqa: E402
from course_lib.grading.sandbox import Limits, Outcome, case_inputs, decode_outcome, not_run  # noqa: E402

TIMEOUT = 60  # no submission here runs long; the margin is for a loaded machine
SLEEP = 5  # seconds the killed submissions sleep once they have started, so that the watcher sees them running
KILLS = {"doomed": 2, "sleeper": 1}  # how often the watcher kills the worker running each
# In the order they are sent; the killed ones early but apart, so that while one's worker restarts the
# other worker grades. The rest are test_instructor's submissions.
BATCH = ["honest", "sleeper", "stub", "doomed", "mistaken_b", "monkeypatch", "escapes", "exit", "invalid_json", "partial"]


def sleeping(student: str) -> list:
    """A submission that defines conv_output_size, says it started (a file in its scratch directory,
    which the watcher finds) and sleeps."""
    return [define("conv_output_size"), f"import time\nopen('started-{student}', 'w').close()\ntime.sleep({SLEEP})"]


def ours(process) -> bool:
    """Whether a process is one the run started (multiprocessing's resource tracker, started with the
    first worker, lives as long as the test process)."""
    try:
        return "multiprocessing.resource_tracker" not in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


class Watcher(threading.Thread):
    """Kills the worker running ``doomed`` and ``sleeper`` (as KILLS says) and reads the environment
    every worker process started with, restarted ones included.

    It looks at processes only, never through Dask, so that a dying worker cannot slow it down: the
    cluster's worker processes are this process's children (their nannies run in it), and each
    kernel's reaper is a child of its worker whose working directory is the submission's scratch
    directory, where the submission says it started.
    """

    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.error = threading.Event(), None
        self.kills, self.environments, self.marks = Counter(), {}, set()

    def run(self):
        try:
            while not self.stop.wait(0.2):
                for worker in psutil.Process().children():
                    try:
                        self._look_at(worker)
                    except psutil.Error:  # a process that just ended
                        continue
        except Exception as err:  # noqa: BLE001 - reported by the test
            self.error = err

    def _look_at(self, worker):
        if "spawn_main" not in " ".join(worker.cmdline()):  # not a worker (multiprocessing's resource tracker)
            return
        if worker.pid not in self.environments:
            self.environments[worker.pid] = worker.environ().get(HIDDEN_SEED_ENV)
        for reaper in worker.children():
            for mark in Path(reaper.cwd()).glob("started-*"):
                student = mark.name.removeprefix("started-")
                if mark not in self.marks and self.kills[student] < KILLS[student]:
                    self.marks.add(mark)
                    worker.send_signal(signal.SIGKILL)
                    self.kills[student] += 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    subs = root / "submissions"
    server = socket.socket()  # a port the escapes submission must not reach
    server.bind(("127.0.0.1", 0))
    server.listen()
    fields_ = {"OUT_DIR": str(root / "cluster"), "OTHER_FILE": str(subs / "honest.ipynb"), "PORT_NUMBER": server.getsockname()[1],
               "SOLUTIONS_DIR": str(REPO / "solutions"), "DAEMON_FILE": str(root / "daemon.log"), "DAEMON_NAME": "unused"}
    written = {path.stem: path for path in write_notebooks(subs, fields_)}
    for student in KILLS:
        written[student] = subs / f"{student}.ipynb"
        nbformat.write(new_notebook(cells=[new_code_cell(source) for source in sleeping(student)]), written[student])
    batch = [written[student] for student in BATCH]

    sent, feedback_calls, children_before = [], Counter(), {p.pid for p in psutil.Process().children(recursive=True)}
    watcher = Watcher()
    original_feedback = cli.feedback

    def recording(name):
        method = getattr(distributed.Client, name)

        def record(self, *args, **kwargs):
            sent.append((name, args, kwargs))
            return method(self, *args, **kwargs)
        return record

    def counted_feedback(assignment, student, outcome, results):
        feedback_calls[student] += 1
        return original_feedback(assignment, student, outcome, results)

    with contextlib.closing(server), pytest.MonkeyPatch.context() as patch:
        patch.setenv(HIDDEN_SEED_ENV, str(SEED))
        local = grade_batch(ASSIGNMENT, [path for path in batch if path.stem != "doomed"], root / "local", jobs=2,
                            limits=Limits(timeout=TIMEOUT, memory_mb=2048), progress=False)
        for name in ("submit", "run", "run_on_scheduler"):
            patch.setattr(distributed.Client, name, recording(name))
        patch.setattr(cli, "feedback", counted_feedback)
        watcher.start()
        try:
            with contextlib.redirect_stderr(io.StringIO()) as stderr:
                code = grade_main([ASSIGNMENT, *map(str, batch), "--out", str(root / "cluster"), "--cluster", "local:2",
                                   "--timeout", str(TIMEOUT), "--memory", "2048"])
        finally:
            watcher.stop.set()
            watcher.join(60)
        seed_restored = os.environ.get(HIDDEN_SEED_ENV)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # worker processes the nannies killed take a moment to go
        left = [process for process in psutil.Process().children(recursive=True)
                if process.pid not in children_before and ours(process)]
        if not left:
            break
        time.sleep(0.5)
    return {"local": local, "cluster": read_rows(root / "cluster"), "code": code, "root": root, "sent": sent,
            "feedback_calls": feedback_calls, "watcher": watcher, "left": left, "seed_restored": seed_restored, "stderr": stderr.getvalue(),
            "state": json.loads((root / "cluster" / "grading.json").read_text()), "batch": batch}


def test_the_cluster_gives_exactly_the_grades_of_a_local_run(runs):
    assert runs["code"] == 0 and runs["watcher"].error is None, runs["watcher"].error
    local, cluster = runs["local"], runs["cluster"]
    assert set(cluster) == {path.stem for path in runs["batch"]}
    assert set(local) == set(cluster) - {"doomed"}
    for student in local:
        assert cluster[student] == local[student], student
        text = (runs["root"] / "cluster" / "feedback" / f"{student}.md").read_text()
        assert text == (runs["root"] / "local" / "feedback" / f"{student}.md").read_text(), student
    # ... and those grades are the right ones, not merely equal.
    assert float(cluster["honest"]["total"]) == FULL and cluster["honest"]["status"] == "ok"
    for student in ("monkeypatch", "mistaken_b", "partial"):
        assert {name: float(cluster[student][name]) for name in NAMES} == honest_points(student, SEED), student
    assert cluster["mistaken_b"]["mistakes"] and cluster["partial"]["reason"].startswith("1 cell raised an error")
    assert cluster["exit"]["status"] == "crashed" and cluster["invalid_json"]["status"] == "invalid"
    assert float(cluster["stub"]["total"]) == 0


def test_a_worker_that_dies_mid_submission_loses_nothing(runs):
    watcher, cluster = runs["watcher"], runs["cluster"]
    assert dict(watcher.kills) == KILLS, "the watcher did not kill the workers it meant to"
    # Every student is graded exactly once: one feedback written, one row.
    assert runs["feedback_calls"] == Counter({path.stem: 1 for path in runs["batch"]})
    sleeper = {name: float(cluster["sleeper"][name]) for name in NAMES}
    assert sleeper == {name: 2.0 if name == "conv_output_size" else 0.0 for name in NAMES}
    assert cluster["sleeper"]["status"] == "ok"
    assert cluster["doomed"]["status"] == "crashed" and float(cluster["doomed"]["total"]) == 0
    assert cluster["doomed"]["reason"].startswith("the worker running it died twice (tcp://127.0.0.1:")
    state = runs["state"]
    assert set(state["ran_on"]) == {path.stem for path in runs["batch"]}
    workers = state["cluster"]["workers"]
    assert sum(worker["graded"] for worker in workers.values()) == len(state["ran_on"])
    assert len(workers) >= 3, "the restarted workers were not used"
    # The scheduler's own retries are off for the run (each death reaches the grader), then restored.
    assert [kwargs["value"] for name, _, kwargs in runs["sent"] if name == "run_on_scheduler"] == [0, 3]
    assert state["sandbox"] in {sandbox_summary({address: worker["sandbox"] for address, worker in workers.items()})}


def test_no_process_outlives_the_run(runs):
    assert not runs["left"], [(p.pid, p.cmdline()) for p in runs["left"] if p.is_running()]


def test_the_hidden_seed_never_reaches_a_worker(runs):
    environments = runs["watcher"].environments
    assert len(environments) >= 3  # the first two worker processes and at least one that its nanny started again
    assert set(environments.values()) == {None}
    assert runs["seed_restored"] == str(SEED)  # taken out only while the cluster ran


def test_only_the_notebook_the_case_inputs_and_the_limits_are_sent(runs):
    cases = draw_cases(ASSIGNMENT, SEED)
    submits = [args for name, args, _ in runs["sent"] if name == "submit"]
    notebooks = {path.read_bytes() for path in runs["batch"]}
    assert len(submits) == len(runs["batch"]) + len(KILLS)  # one per attempt: the killed ones are run again once
    for function, notebook, inputs, limits, hide, sandbox, versions in submits:
        assert function is grade_on_worker and notebook in notebooks and sandbox is True
        assert inputs == case_inputs(cases)  # each case's [args, kwargs] as data-only JSON, nothing else
        assert set(limits) == {field.name for field in fields(Limits)} and all(type(path) is str for path in hide)
        assert set(versions) == {"course_lib", "torch"}
    everything = pickle.dumps([(args[1:], kwargs) for _, args, kwargs in runs["sent"]])
    for form in (str(SEED).encode(), SEED.to_bytes(4, "little"), SEED.to_bytes(8, "little")):
        assert form not in everything
    # The oracles' answers stay here: no expected tensor's bytes travel.
    expected = [case.expected for exercise_cases in cases.values() for case in exercise_cases]
    data = [base64.b64encode(value.contiguous().numpy().tobytes()) for value in expected
            if hasattr(value, "numpy") and value.numel() >= 8]
    assert data and not [raw for raw in data if raw in everything]


def test_the_run_says_where_each_submission_ran_and_every_workers_sandbox(runs):
    state, said = runs["state"], runs["stderr"]
    scheduler, workers = state["cluster"]["scheduler"], state["cluster"]["workers"]
    assert state["seed"] == SEED and scheduler.startswith("tcp://127.0.0.1:")
    assert set(state["ran_on"].values()) <= set(workers)
    first = said.splitlines()[0]
    assert first.startswith(f"{ASSIGNMENT}: grading {len(runs['batch'])} of {len(runs['batch'])} submissions (0 already graded) "
                            f"on 2 Dask workers at {scheduler}; ")
    assert first.endswith(", on all 2 workers")  # the sandbox of this machine's workers is one kind
    assert f"where the submissions ran ({len(workers)} Dask workers at {scheduler}):" in said
    for address, worker in workers.items():
        assert f"  {address}  " in said and worker["sandbox"].startswith(("sandboxed", "not sandboxed", "unknown"))
    assert "run again after their worker died: doomed, sleeper" in said or "run again after their worker died: sleeper, doomed" in said
    assert "marked crashed, their worker died twice: doomed" in said


# --- without a cluster -------------------------------------------------------------------------------

def test_sandbox_summary_names_the_workers_without_a_sandbox():
    good = "sandboxed with bubblewrap 0.8.0 (no network, read-only file system)"
    assert sandbox_summary({"tcp://a:1": good}) == f"{good}, on the 1 worker"
    assert sandbox_summary({"tcp://a:1": good, "tcp://b:1": good}) == f"{good}, on all 2 workers"
    missing = "not sandboxed: bubblewrap (bwrap) is not installed"
    assert sandbox_summary({"tcp://a:1": good, "tcp://b:1": missing}) == f"not sandboxed on 1 of 2 workers (tcp://b:1: {missing})"


def test_a_worker_without_bubblewrap_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    info = _worker_info([str(tmp_path / "hidden")], True, 1024, dask_worker=SimpleNamespace(local_directory=str(tmp_path)))
    assert info["sandbox"].startswith("not sandboxed: bubblewrap (bwrap) is not installed")
    assert info["versions"]["course_lib"] and info["versions"]["torch"]


def test_workers_without_the_course_or_with_another_version_are_refused():
    class Client:  # what a scheduler with one outdated worker answers
        def wait_for_workers(self, n, timeout):
            pass

        def run(self, function, *args):
            return {"tcp://a:1": {"versions": {"course_lib": "0.0.1", "torch": "1.0.0"}, "sandbox": "x"},
                    "tcp://b:1": {"versions": _versions(), "sandbox": "x"}}

    runner = ClusterRunner("tcp://127.0.0.1:1", Limits(), [], False)
    runner.client, runner.scheduler = Client(), "tcp://127.0.0.1:1"
    with pytest.raises(ClusterError, match=r"1 of 2 workers run other versions .*tcp://a:1 has course_lib 0\.0\.1, torch 1\.0\.0.*"
                                           r'pip install "cnn-workbook\[cluster\]=='):
        runner._check_workers()

    class Bare(Client):  # a worker without the course cannot even unpickle the probe
        def run(self, function, *args):
            raise ModuleNotFoundError("No module named 'course_lib'")

    runner.client = Bare()
    with pytest.raises(ClusterError, match=r"No module named 'course_lib'\); every worker needs the course installed: "
                                           r'pip install "cnn-workbook\[cluster\]"'):
        runner._check_workers()


def test_a_raw_outcome_is_decoded_as_plain_data_and_checked():
    cases = {"conv_output_size": draw_cases(ASSIGNMENT, SEED)["conv_output_size"][:2]}
    raw = {"status": "ok", "reason": "", "cell_errors": ["NameError: x"],
           "outputs": {"conv_output_size": {"raw": json.dumps({"outputs": [["ok", 5], ["ok", {"$pickle": "x"}]]})}}}
    outcome = decode_outcome(json.loads(json.dumps(raw)), cases)
    assert outcome == Outcome("ok", "", {"conv_output_size": [("ok", 5), ("error", "malformed value tagged '$pickle'")]},
                              ["NameError: x"])
    assert decode_outcome(not_run("crashed", "died", cases, "not run: died"), cases).outputs == {"conv_output_size": "not run: died"}
    for bad in ({"status": "great"}, {**raw, "outputs": []}, [raw]):
        with pytest.raises(ValueError, match="malformed raw outcome"):
            decode_outcome(bad, cases)


@pytest.mark.parametrize("argv, message", [
    (["--cluster", "local:0"], "local:N with N >= 1, got 'local:0'"),
    (["--cluster", "local:2", "--jobs", "2"], "--jobs is for grading on this machine"),
])
def test_cluster_usage_errors(tmp_path, capsys, argv, message):
    (tmp_path / "a.ipynb").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        grade_main([ASSIGNMENT, str(tmp_path / "a.ipynb"), "--out", str(tmp_path / "o"), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_local_grading_does_not_import_dask():
    code = ("import sys\nfrom course_lib.grading import cli, exercise_names\nexercise_names()\n"
            "assert 'distributed' not in sys.modules and 'dask' not in sys.modules, 'Dask was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]


def test_without_dask_the_error_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
    (tmp_path / "a.ipynb").write_text("{}")
    with pytest.raises(SystemExit):
        grade_main([ASSIGNMENT, str(tmp_path / "a.ipynb"), "--out", str(tmp_path / "o"), "--cluster", "tcp://127.0.0.1:1"])
    assert 'pip install "cnn-workbook[cluster]"' in capsys.readouterr().err
