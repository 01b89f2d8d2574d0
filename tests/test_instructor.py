"""Instructor grading: one batch of honest and adversarial submissions, graded in isolated kernels.

Kernels cost seconds to start, so every adversarial notebook goes into ONE sandboxed grading run
(module fixture ``batch``) and the tests assert on its rows and feedback. Each adversarial
submission must score no more than its honest score while the rest of the batch is graded right.
A second, small run exercises the command line without the sandbox. Honest functions are the
solution notebook's own code (the exercises forbid calling ``course_lib.conv``); submissions that
make a known mistake use the grader's own wrong versions, and must be named in their feedback and in
the class summary; a daemon a submission leaves behind must not outlive its grading.
"""
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from course_lib.grading import check, exercise_names, get_exercise
from course_lib.grading.cli import grade_batch, grade_main, mistake_counts, release, release_main, summary
from course_lib.grading.sandbox import Limits, Sandbox, _mount_plan, collect_outputs, library_root

ASSIGNMENT = "01_conv_arithmetic"
NAMES = exercise_names(ASSIGNMENT)
POINTS = {name: get_exercise(name).points for name in NAMES}
FULL = sum(POINTS.values())
TIMEOUT = 30
REPO = library_root()
SEED = 20240601
SOLUTION_CELLS = {
    cell.metadata["nbgrader"]["grade_id"]: cell.source
    for cell in nbformat.read(REPO / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4).cells
    if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source
}


def define(*names) -> str:
    """A code cell defining ``names`` with the solution notebook's code."""
    return "\n\n".join(["import torch\nimport torch.nn.functional as F", *(SOLUTION_CELLS[name] for name in names)])


def made_mistakes(count: int) -> dict:
    """``{exercise: index}`` of the first known mistake of ``count`` exercises that the hidden cases name."""
    chosen = {}
    for name in NAMES:
        for index, mistake in enumerate(get_exercise(name).mistakes):
            if check(name, mistake.fn, seed=SEED).diagnosis == mistake.key:
                chosen[name] = index
                break
        if len(chosen) == count:
            return chosen
    raise AssertionError(f"{ASSIGNMENT} has fewer than {count} exercises whose known mistakes the hidden cases name")


def make_mistakes(chosen: dict) -> str:
    return "from course_lib.grading import get_exercise\n" + "\n".join(
        f"{name} = get_exercise({name!r}).mistakes[{index}].fn" for name, index in chosen.items())


IMPORT_ALL = define(*NAMES)
CHOSEN = made_mistakes(2)
MISTAKEN = {"mistaken_a": dict(list(CHOSEN.items())[:1]), "mistaken_b": CHOSEN}  # the first mistake twice, the second once
# A daemon that double-forks, leaves the kernel's session and keeps appending to a file; named so that
# the tests find it in /proc.
DAEMON = (
    "import ctypes, os, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        ctypes.CDLL(None).prctl(15, DAEMON_NAME.encode(), 0, 0, 0)\n"
    "        while True:\n"
    "            try:\n"
    "                with open(DAEMON_FILE, 'a') as file:\n"
    "                    file.write('x')\n"
    "            except OSError:\n"
    "                pass\n"
    "            time.sleep(0.05)\n"
    "    os._exit(0)\n"
    "time.sleep(0.5)"
)
DAEMON_NAME = f"daemon{secrets.token_hex(4)}"

# Each notebook is a list of code cells; the fixture replaces OUT_DIR, OTHER_FILE, PORT_NUMBER and
# SOLUTIONS_DIR with the batch's paths.
NOTEBOOKS = {
    "honest": [IMPORT_ALL],
    "stub": ["def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):\n    raise NotImplementedError()",
             "def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):\n    raise NotImplementedError()"],
    "partial": [define("conv_output_size", "receptive_field"), "print(undefined_name)"],
    "infinite_loop": [define("conv_output_size"), "while True:\n    pass", define("conv_params")],
    "slow_function": [define("conv_output_size", "receptive_field"),
                      "def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):\n    while True:\n        pass"],
    "stubborn": [define("conv_output_size"),
                 "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"],
    "exit": [define("conv_output_size"), "import os\nos._exit(3)"],
    "segfault": [define("conv_output_size"), "import ctypes\nctypes.string_at(0)"],
    "memory_hog": [
        define("conv_output_size", "conv_params"),
        # 16 GB that is never touched: without a limit this would quietly succeed
        "try:\n    untouched = torch.empty(2**31, dtype=torch.float64)\nexcept (RuntimeError, MemoryError):\n    untouched = None\n"
        "if untouched is not None:\n    conv_output_size = lambda *args, **kwargs: -1  # the limit did not hold",
        "blocks = []\nwhile True:\n    blocks.append(bytearray(2**26))",
        "del blocks\ndef conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):\n    return torch.ones(2**31, dtype=torch.float64)",
    ],
    "flood": [
        "for _ in range(50):\n    print('x' * 1_000_000)\nprint('y' * 64_000_000)",
        "from IPython.display import display\nfor _ in range(2000):\n    display({'text/plain': 'z' * 10_000}, raw=True)",
        define("conv_output_size"),
    ],
    "monkeypatch": [
        "import torch, torch.testing\nimport course_lib.grading as grading, course_lib.grading.core as core\n"
        "from course_lib.grading import CheckResult\n"
        "torch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
        "torch.testing.assert_close = lambda *a, **k: None\n"
        "core.compare_tensor = core.compare_value = lambda *a, **k: None\n"
        "for exercise in core.REGISTRY.values():\n    exercise.compare = lambda *a, **k: None\n    exercise.oracle = lambda case: None\n"
        "grading.grade_cases = lambda ex, cases, outputs: CheckResult(ex.name, True, ex.points, ex.points, 'all passed')\n"
        "grading.check = lambda name, fn, seed=None: CheckResult(name, True, 99, 99, 'all passed')\n"
        "grading.run_cases = lambda ex, fn, cases: [('ok', -1)] * len(cases)",
        "def conv_output_size(*args, **kwargs):\n    return 0\n"
        "def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):\n    return torch.zeros(1)",
    ],
    "always_equal": [
        "import torch\n"
        "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n"
        "class LyingInt(int):\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\n"
        "class LyingTensor(torch.Tensor):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        if getattr(func, '__name__', '') in ('allclose', 'equal', 'isclose'):\n            return True\n"
        "        return super().__torch_function__(func, types, args, kwargs or {})\n"
        "def conv_output_size(*args, **kwargs):\n    return AlwaysEqual()\n"
        "def conv_params(*args, **kwargs):\n    return LyingInt(0)\n"
        "def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):\n    return torch.zeros(1).as_subclass(LyingTensor)\n"
        "def conv2d_naive(x, weight, bias=None, stride=1, padding=0, dilation=1):\n"
        "    return torch.zeros(x.shape[0], weight.shape[0], 1, 1, device='meta')",
    ],
    "bad_values": [
        define(*NAMES),
        "import numpy as np\nref = dict(globals())\n"
        "def conv_output_size(*args, **kwargs):\n    return np.int64(ref['conv_output_size'](*args, **kwargs))  # right value, numpy type\n"
        "def conv2d_naive(*args, **kwargs):\n    return ref['conv2d_naive'](*args, **kwargs).unsqueeze(0)  # wrong shape\n"
        "def conv2d(*args, **kwargs):\n    return torch.full_like(ref['conv2d'](*args, **kwargs), float('nan'))\n"
        "def conv_params(*args, **kwargs):\n    return float(ref['conv_params'](*args, **kwargs))  # float, not int\n"
        "def receptive_field(layers):\n    return float('inf')\n"
        "def conv2d_weight_grad(*args, **kwargs):\n    return ref['conv2d_weight_grad'](*args, **kwargs).half()  # wrong dtype",
    ],
    "edited_checks": [
        define("conv_output_size") + "\nimport course_lib.grading as grading\n"
        "from course_lib.grading import CheckResult\n"
        "def check(name, fn, seed=None):\n    return CheckResult(name, True, 99, 99, 'all cases passed')\n"
        "grading.check = check\n"
        "def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):\n    return x",
        "check('conv2d', conv2d)",
    ],
    # Every escape that works costs the submission one function: its score shows what held.
    "escapes": [
        IMPORT_ALL + "\nimport os, socket\n"
        "def works(action):\n    try:\n        action()\n        return True\n    except Exception:\n        return False\n"
        "def forge():\n    with open(os.path.join(OUT_DIR, 'grades.csv'), 'w') as f:\n        f.write('student,total\\nescapes,999\\n')\n"
        "def read_other():\n    with open(OTHER_FILE) as f:\n        assert 'def conv_output_size' in f.read()\n"
        "def read_seed():\n    with open(os.path.join(OUT_DIR, 'grading.json')) as f:\n        assert 'seed' in f.read()\n"
        "def read_solutions():\n    assert os.listdir(SOLUTIONS_DIR)\n"
        "def connect():\n    socket.create_connection(('127.0.0.1', PORT_NUMBER), timeout=3).close()\n"
        "wrong = lambda *args, **kwargs: -1\n"
        "if works(forge):\n    conv_output_size = wrong\n"
        "if works(read_other):\n    conv_params = wrong\n"
        "if works(connect):\n    receptive_field = wrong\n"
        "if works(read_seed):\n    conv2d_weight_grad = wrong\n"
        "if works(read_solutions):\n    conv2d = wrong\n"
        "del conv2d_naive",
    ],
    "daemon": [define("conv_output_size"), DAEMON],
    **{student: [make_mistakes(chosen)] for student, chosen in MISTAKEN.items()},
}
HONEST = {  # the exercises each submission implements correctly (with the solution notebook's code)
    "honest": NAMES,
    "bad_values": ["conv_output_size"],
    "daemon": ["conv_output_size"],
    "partial": ["conv_output_size", "receptive_field"],
    "infinite_loop": ["conv_output_size"],
    "slow_function": ["conv_output_size", "receptive_field"],
    "memory_hog": ["conv_output_size", "conv_params"],
    "flood": ["conv_output_size"],
    "edited_checks": ["conv_output_size"],
    "escapes": ["conv_output_size", "conv_params", "receptive_field", "conv2d_weight_grad", "conv2d"],
}
STATUS = {"infinite_loop": "timeout", "slow_function": "timeout", "stubborn": "timeout", "exit": "crashed",
          "segfault": "crashed", "invalid_json": "invalid", "not_a_notebook": "invalid"}


def write_notebooks(folder: Path, fields: dict) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for student, cells in NOTEBOOKS.items():
        path = folder / f"{student}.ipynb"
        sources = []
        for cell in cells:
            for key, value in fields.items():
                cell = cell.replace(key, repr(value))
            sources.append(cell)
        nbformat.write(new_notebook(cells=[new_code_cell(source) for source in sources]), path)
        paths.append(path)
    (folder / "invalid_json.ipynb").write_text('{"cells": [ this is not json')
    (folder / "not_a_notebook.ipynb").write_text(json.dumps({"cells": "none", "nbformat": 4}))
    return paths + [folder / "invalid_json.ipynb", folder / "not_a_notebook.ipynb"]


def honest_points(student: str, seed: int) -> dict:
    """What the submission's correct functions (and known mistakes) score when checked directly, here."""
    namespace = {}
    exec(define(*NAMES), namespace)  # noqa: S102 - the repository's own solution code
    fns = {name: namespace[name] for name in HONEST.get(student, [])}
    fns.update({name: get_exercise(name).mistakes[index].fn for name, index in MISTAKEN.get(student, {}).items()})
    return {name: check(name, fns[name], seed=seed).points if name in fns else 0.0 for name in NAMES}


def daemons() -> list[int]:
    """Pids of the processes named DAEMON_NAME (a test's daemon that outlived its grading)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as file:
                if file.read().strip() == DAEMON_NAME:
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


@pytest.fixture(scope="module", autouse=True)
def no_daemon_left_behind():
    """Whatever the tests find, no daemon of theirs survives the module."""
    yield
    for pid in daemons():
        os.kill(pid, signal.SIGKILL)


def read_rows(out: Path) -> dict:
    with open(out / "grades.csv", newline="") as file:
        return {row["student"]: row for row in csv.DictReader(file)}


@pytest.fixture(scope="module")
def listener():
    """A TCP server on localhost that a sandboxed kernel must not reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture(scope="module")
def batch(tmp_path_factory, listener):
    root = tmp_path_factory.mktemp("class")
    out, subs = root / "out", root / "submissions"
    fields = {"OUT_DIR": str(out), "OTHER_FILE": str(subs / "honest.ipynb"), "PORT_NUMBER": listener,
              "SOLUTIONS_DIR": str(REPO / "solutions"), "DAEMON_FILE": str(root / "daemon.log"), "DAEMON_NAME": DAEMON_NAME}
    paths = write_notebooks(subs, fields)
    repo_notebooks = {"repo_solution": REPO / "solutions" / f"{ASSIGNMENT}.ipynb",
                      "repo_exercise": REPO / "exercises" / f"{ASSIGNMENT}.ipynb"}
    for student, source in repo_notebooks.items():
        if source.exists():
            paths.append(Path(shutil.copy(source, subs / f"{student}.ipynb")))
    rows = grade_batch(ASSIGNMENT, paths, out, jobs=2, limits=Limits(timeout=TIMEOUT, memory_mb=2048),
                       seed=SEED, progress=False)
    return {"rows": rows, "out": out, "state": json.loads((out / "grading.json").read_text())}


@pytest.fixture
def sandboxed(batch):
    if not batch["state"]["sandbox"].startswith("sandboxed"):
        pytest.skip(f"bubblewrap cannot sandbox on this machine: {batch['state']['sandbox']}")


def points(row) -> dict:
    return {name: float(row[name]) for name in NAMES}


def test_every_submission_has_a_row_feedback_and_a_consistent_total(batch):
    rows, out = batch["rows"], batch["out"]
    assert rows == read_rows(out)
    assert set(NOTEBOOKS) | set(STATUS) <= set(rows)
    for student, row in rows.items():
        assert float(row["total"]) == pytest.approx(sum(points(row).values()))
        assert float(row["max"]) == FULL
        text = (out / "feedback" / f"{student}.md").read_text()
        assert f"feedback for {student}" in text and f"/ {FULL:g} points" in text
    assert not list(out.glob(".*.partial")) and not list((out / "feedback").glob(".*"))


@pytest.mark.parametrize("student", sorted(set(NOTEBOOKS) | set(STATUS)))
def test_no_submission_scores_more_than_its_honest_score(batch, student):
    row = batch["rows"][student]
    expected = honest_points(student, SEED)
    if student == "escapes" and not batch["state"]["sandbox"].startswith("sandboxed"):
        expected = dict.fromkeys(NAMES, 0.0)  # unsandboxed, every escape works and costs a function
    if student == "memory_hog":
        # The bar: never more than the honest score. Whether the kernel survives hitting its memory
        # limit depends on the machine's load, so its exact score is not pinned here; the limit itself is
        # checked deterministically by test_memory_limit_stops_large_allocations.
        assert all(points(row)[name] <= expected[name] for name in NAMES), row
        assert row["status"] in ("ok", "crashed"), row
        return
    assert points(row) == expected, row
    assert row["status"] == STATUS.get(student, "ok"), row


@pytest.mark.parametrize("enabled", [False, True])
def test_memory_limit_stops_large_allocations(tmp_path, enabled):
    import subprocess
    import sys

    limits = Limits(timeout=60, memory_mb=1024)
    sandbox = Sandbox.probe(tmp_path, enabled=enabled, limits=limits)
    if enabled and not sandbox.active:
        pytest.skip(f"bwrap is not usable here: {sandbox.status}")
    code = "import torch\ntry:\n    torch.empty(2**31, dtype=torch.float64)\nexcept (RuntimeError, MemoryError):\n    print('refused')\nelse:\n    print('allocated')"
    done = subprocess.run(sandbox.wrap([sys.executable, "-c", code], tmp_path, limits), capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "refused", (done.stdout, done.stderr[-500:])


def test_timeouts_crashes_and_invalid_notebooks_are_explained(batch):
    rows, out = batch["rows"], batch["out"]
    assert f"stopped after {TIMEOUT} s in code cell 2 (`while True:`)" in rows["infinite_loop"]["reason"]
    assert "did not stop when interrupted" in rows["stubborn"]["reason"]
    assert "calling conv2d on the cases took longer than" in rows["slow_function"]["reason"]
    assert "kernel died while running code cell 2 (`import os`)" in rows["exit"]["reason"]
    assert "kernel died while running code cell 2 (`import ctypes`)" in rows["segfault"]["reason"]
    assert "not valid notebook JSON" in rows["invalid_json"]["reason"]
    assert "not a version 4 Jupyter notebook" in rows["not_a_notebook"]["reason"]
    assert "MemoryError" in (out / "feedback" / "memory_hog.md").read_text()
    stub = (out / "feedback" / "stub.md").read_text()
    assert "not implemented" in stub and "the notebook does not define conv2d_naive" in stub


def test_feedback_names_the_first_failing_case_in_plain_words(batch):
    text = (batch["out"] / "feedback" / "bad_values.md").read_text()
    assert "| `conv_output_size` | 2 / 2 | passed |" in text  # a NumPy integer is an integer
    assert "return a Python int" in text
    assert "expected shape" in text and "Right values, wrong dtype" in text and "expected float32, got float16" in text
    assert "cases failed" in text
    always = (batch["out"] / "feedback" / "always_equal.md").read_text()
    assert "unsupported" in always and "meta device" in always


def test_failed_cells_are_said_in_the_reason(batch):
    rows = batch["rows"]
    assert rows["partial"]["status"] == "ok"
    assert rows["partial"]["reason"] == "1 cell raised an error (the first: NameError: name 'undefined_name' is not defined)"
    assert rows["honest"]["reason"] == ""


def test_known_mistakes_are_named_in_feedback_and_counted_for_the_class(batch):
    rows, feedback = batch["rows"], batch["out"] / "feedback"
    (first, index), (second, other) = CHOSEN.items()
    first_key, second_key = get_exercise(first).mistakes[index].key, get_exercise(second).mistakes[other].key
    assert rows["mistaken_a"]["mistakes"] == f"{first}: {first_key}"
    assert rows["mistaken_b"]["mistakes"] == f"{first}: {first_key}; {second}: {second_key}"
    assert rows["honest"]["mistakes"] == ""
    text = (feedback / "mistaken_a.md").read_text()
    assert f"| `{first}` |" in text and f"failed: {first_key} |" in text
    assert f"**Likely mistake ({first_key}):** {get_exercise(first).mistakes[index].message}" in text
    counts = mistake_counts(rows)
    assert counts[first, first_key] >= 2 and counts[second, second_key] >= 1
    table = summary(NAMES, rows)
    assert "classic mistakes the checks named (students who made each):" in table
    lines = [line.split() for line in table.splitlines()]
    assert [first, *first_key.split(), str(counts[first, first_key])] in lines
    assert [second, *second_key.split(), str(counts[second, second_key])] in lines


def test_no_process_outlives_its_grading(batch):
    assert not daemons(), f"the daemon a submission started is still running ({batch['state']['sandbox']})"


def test_hidden_seed_is_recorded_and_kept_from_the_kernel(batch):
    assert batch["state"]["seed"] == SEED and batch["state"]["assignment"] == ASSIGNMENT
    assert batch["state"]["exercises"] == NAMES


def test_sandbox_blocks_writing_reading_and_network(batch, sandboxed):
    got, honest = points(batch["rows"]["escapes"]), honest_points("escapes", SEED)
    for name, escape in [("conv_output_size", "wrote into the output directory"), ("conv_params", "read another student's notebook"),
                         ("receptive_field", "reached the network"), ("conv2d_weight_grad", "read the hidden seed"),
                         ("conv2d", "read solutions/")]:
        assert got[name] == honest[name], f"the kernel {escape}"


def test_repository_solution_gets_full_marks_and_exercise_gets_zero(batch):
    if not (REPO / "solutions" / f"{ASSIGNMENT}.ipynb").exists() or not (REPO / "exercises" / f"{ASSIGNMENT}.ipynb").exists():
        pytest.skip("solutions/ and exercises/ notebooks of lecture 01 are not in the repository yet")
    rows, feedback = batch["rows"], batch["out"] / "feedback"
    assert float(rows["repo_solution"]["total"]) == FULL and rows["repo_solution"]["status"] == "ok", \
        (feedback / "repo_solution.md").read_text()
    assert float(rows["repo_exercise"]["total"]) == 0 and rows["repo_exercise"]["status"] == "ok"


# --- the command line without the sandbox, resuming, and usage errors ---------------------------------

@pytest.fixture(scope="module")
def unsandboxed(tmp_path_factory, listener):
    root = tmp_path_factory.mktemp("fallback")
    out, subs = root / "out", root / "subs"
    write_notebooks(subs, {"OUT_DIR": str(out), "OTHER_FILE": str(subs / "honest.ipynb"), "PORT_NUMBER": listener,
                           "SOLUTIONS_DIR": str(REPO / "solutions"), "DAEMON_FILE": str(root / "daemon.log"),
                           "DAEMON_NAME": DAEMON_NAME})
    argv = [ASSIGNMENT, str(subs / "honest.ipynb"), str(subs / "escapes.ipynb"), str(subs / "daemon.ipynb"),
            "--out", str(out), "--jobs", "2", "--timeout", str(TIMEOUT), "--memory", "2048", "--no-sandbox"]
    return {"argv": argv, "out": out, "subs": subs, "daemon_log": root / "daemon.log"}


def test_cli_without_sandbox_grades_and_says_so(unsandboxed, capsys):
    assert grade_main([*unsandboxed["argv"], "--seed", "5"]) == 0
    captured = capsys.readouterr()
    assert "not sandboxed: disabled by --no-sandbox" in captured.err
    assert "pass rate" in captured.out and "3 students" in captured.out
    rows = read_rows(unsandboxed["out"])
    assert points(rows["honest"]) == honest_points("honest", 5)
    # Unsandboxed, the escapes work and cost the submission its points, but its forged
    # grades.csv does not survive: every row is what the grader computed.
    assert set(rows) == {"honest", "escapes", "daemon"} and float(rows["escapes"]["total"]) < FULL
    # The daemon left its kernel's session, but not the reaper's reach: it ended with its grading.
    assert unsandboxed["daemon_log"].exists() and not daemons()
    size = unsandboxed["daemon_log"].stat().st_size
    time.sleep(0.5)
    assert unsandboxed["daemon_log"].stat().st_size == size
    assert json.loads((unsandboxed["out"] / "grading.json").read_text())["seed"] == 5

    before = (unsandboxed["out"] / "grades.csv").read_text()
    assert grade_main(unsandboxed["argv"]) == 0  # the recorded seed; everyone already graded: nothing runs
    assert "grading 0 of 3 submissions (3 already graded)" in capsys.readouterr().err
    assert (unsandboxed["out"] / "grades.csv").read_text() == before

    with pytest.raises(SystemExit):  # another seed would make the grades incomparable
        grade_main([*unsandboxed["argv"], "--seed", "6"])
    assert "graded with another seed" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["99_nothing", "x.ipynb", "--out", "o"], "assignment must be one of"),
    ([ASSIGNMENT, "missing.ipynb", "--out", "o"], "submission must be a notebook file"),
    ([ASSIGNMENT, "a.ipynb", "--out", "o", "--jobs", "0"], "--jobs must be >= 1"),
])
def test_cli_usage_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.ipynb").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        grade_main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_duplicate_student_ids_are_refused(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "sam.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="two submissions have the student id 'sam'"):
        grade_batch(ASSIGNMENT, [tmp_path / "a" / "sam.ipynb", tmp_path / "b" / "sam.ipynb"], tmp_path / "out")


# --- the protocol's trusted side, without kernels -----------------------------------------------------

def test_collect_outputs_trusts_nothing_in_the_scratch_directory(tmp_path):
    folder = tmp_path / "outputs"
    folder.mkdir()
    assert collect_outputs(folder, "f", 3) is None
    (folder / "f.json").write_text(json.dumps({"outputs": [["ok", 1], ["error", "raised KeyError: 'x'"]]}))
    assert collect_outputs(folder, "f", 3) == [("ok", 1), ("error", "raised KeyError: 'x'"),
                                               ("error", "no output came back for this case")]
    (folder / "f.json").write_text(json.dumps({"outputs": [["ok", 1], ["cheat", 2], ["ok", {"$pickle": "x"}]]}))
    assert [status for status, _ in collect_outputs(folder, "f", 3)] == ["ok", "error", "error"]
    (folder / "f.json").write_text(json.dumps({"outputs": [["ok", 1]] * 4}))
    assert "malformed" in collect_outputs(folder, "f", 3)
    (folder / "f.json").write_text(json.dumps({"outputs": [["not implemented", None]]}))
    assert collect_outputs(folder, "f", 3) == [("not implemented", None)]
    (folder / "f.json").write_text(json.dumps({"missing": True}))
    assert collect_outputs(folder, "f", 3) == "the notebook does not define f"
    (folder / "f.json").unlink()
    (folder / "f.json").symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps({"outputs": [["ok", 1]]}))
    assert collect_outputs(folder, "f", 1) is None  # links are not followed
    (folder / "f.json").unlink()
    os.mkfifo(folder / "f.json")
    assert "not in a regular file" in collect_outputs(folder, "f", 1)  # and a FIFO cannot block the grader
    assert stat.S_ISFIFO(os.stat(folder / "f.json").st_mode)


def test_mount_plan_hides_homes_but_keeps_python_and_the_library(tmp_path):
    home, lib = tmp_path / "home", tmp_path / "home" / "course"
    python, subs, out = home / ".pyenv" / "3.11", home / "course" / "subs", tmp_path / "out"
    for folder in (python, lib / "course_lib", subs, out):
        folder.mkdir(parents=True)
    (subs / "ann.ipynb").write_text("{}")
    hide = [home, out, subs, subs / "ann.ipynb", lib / "course_lib", tmp_path / "private" / "x"]
    private = tmp_path / "private"
    (private / "x").mkdir(parents=True)
    plan = _mount_plan(hide, [python, lib / "course_lib"], private=[private])
    assert plan == sorted(plan, key=lambda item: len(item[1].parts))  # deeper mounts come later and win
    assert set(plan) == {("private", private), ("hide", home), ("hide", out), ("hide", subs),
                         ("hide", subs / "ann.ipynb"), ("show", python), ("show", lib / "course_lib")}


# --- release and nbgrader metadata ----------------------------------------------------------------------

def test_release_copies_the_student_bundle_without_solutions(tmp_path):
    source = tmp_path / "course"
    shutil.copytree(REPO / "course_lib", source / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("lectures", "exercises", "solutions", "tests"):
        (source / folder).mkdir()
        nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), source / folder / "01_demo.ipynb")
    (source / "README.md").write_text("# course\n")
    copied = release(source, tmp_path / "bundle")
    assert copied == ["README.md", "course_lib", "lectures", "exercises"]
    bundle = tmp_path / "bundle"
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "course_lib", "exercises", "lectures"]
    assert not list(bundle.rglob("__pycache__")) and (bundle / "course_lib" / "grading" / "cli.py").exists()

    with pytest.raises(ValueError, match="not empty"):
        release(source, bundle)
    nbformat.write(new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")]),
                   source / "exercises" / "02_leak.ipynb")
    with pytest.raises(ValueError, match="contains a solution"):
        release(source, bundle, force=True)
    (source / "exercises" / "02_leak.ipynb").unlink()
    assert release(source, bundle, force=True) == copied
    with pytest.raises(ValueError, match="inside a released part"):
        release(source, source / "exercises" / "out")


def test_release_command_on_the_repository(tmp_path, capsys):
    if not (REPO / "exercises").is_dir():
        pytest.skip("no exercises/ in this checkout")
    assert release_main([str(tmp_path / "release"), "--source", str(REPO)]) == 0
    assert "released" in capsys.readouterr().out
    bundle = tmp_path / "release"
    assert (bundle / "course_lib" / "__init__.py").exists() and (bundle / "exercises").is_dir()
    assert not (bundle / "solutions").exists() and not (bundle / "tests").exists()


def test_exercise_notebooks_carry_nbgrader_metadata():
    path = REPO / "exercises" / f"{ASSIGNMENT}.ipynb"
    if not path.exists():
        pytest.skip("exercises/01_conv_arithmetic.ipynb is not in the repository yet")
    cells = [cell.metadata.get("nbgrader") for cell in nbformat.read(path, as_version=4).cells]
    solutions = {meta["grade_id"] for meta in cells if meta and meta.get("solution")}
    graded = {meta["grade_id"]: meta["points"] for meta in cells if meta and meta.get("grade")}
    assert solutions == set(NAMES)
    assert graded == {f"check_{name}": points for name, points in POINTS.items()}


def test_sandbox_probe_falls_back_with_a_clear_status(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap at all
    box = Sandbox.probe(tmp_path / "scratch")
    assert not box.active and "bubblewrap (bwrap) is not installed" in box.status
    fake = tmp_path / "bwrap"  # installed, but namespaces are not allowed here (a locked-down container)
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    box = Sandbox.probe(tmp_path / "scratch")
    assert not box.active and box.status.endswith("cannot create a sandbox on this machine (bwrap: setting up uid map: Permission denied)")
    assert Sandbox.probe(tmp_path / "scratch", enabled=False).status == "not sandboxed: disabled by --no-sandbox"


def test_kernel_messages_over_the_limit_are_dropped_not_buffered():
    import zmq

    from course_lib.grading.sandbox import MESSAGE_LIMIT, message_context

    context = message_context()
    socket = context.socket(zmq.SUB)
    try:
        assert socket.getsockopt(zmq.MAXMSGSIZE) == MESSAGE_LIMIT
    finally:
        socket.close()
        context.destroy()
