"""Instructor command lines: ``course-grade`` grades a class, ``course-release`` builds the bundle.

``course-grade 01_conv_arithmetic submissions/*.ipynb --out grades/`` runs every submission in its
own kernel (:mod:`~course_lib.grading.sandbox`), takes back only the raw outputs of the student's
functions on hidden cases, and scores them here, in this process, against the oracles. It writes
``grades/grades.csv`` and ``grades/feedback/<student>.md`` after each submission, atomically, so an
interrupted run keeps everything already graded and the next run skips it. With ``--cluster`` the
kernels run on the workers of a Dask cluster instead (:mod:`~course_lib.grading.cluster`); the
cases, the oracles and the scoring stay here either way.

``course-release release/`` copies what students get (README, lectures, exercises, the library)
and nothing else: no solutions, no tests.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from .. import __version__
from . import CheckResult, grade_cases, serialize
from .core import HIDDEN_SEED_ENV, REGISTRY, case_generator, exercise_names, get_exercise
from .sandbox import Limits, Outcome, Sandbox, library_root, message_context, private_paths, run_submission

__all__ = ["grade_main", "release_main", "grade_batch", "score", "release", "feedback", "summary", "mistake_counts"]

STATE_FILE = "grading.json"
GRADES_FILE = "grades.csv"


# --- grading -------------------------------------------------------------------------------------

def score(cases: dict, outcome: Outcome) -> list[CheckResult]:
    """Compare a submission's raw outputs with the oracles: one :class:`CheckResult` per exercise.

    This is the trusted half of grading; it sees only data that came back from the kernel.
    """
    results = []
    for name, exercise_cases in cases.items():
        exercise, outputs = get_exercise(name), outcome.outputs.get(name, "not run")
        if isinstance(outputs, list):
            results.append(grade_cases(exercise, exercise_cases, outputs))
        else:
            results.append(CheckResult(name, False, 0, exercise.points, outputs, status="error"))
    return results


def draw_cases(assignment: str, seed: int) -> dict:
    """Each exercise's cases from ``seed``, with the oracle's answers filled in once for the class."""
    cases = {}
    for name in exercise_names(assignment):
        exercise = get_exercise(name)
        generator, hidden = case_generator(seed)
        cases[name] = exercise.cases(generator, hidden)
        try:
            serialize.encode([[case.args, case.kwargs] for case in cases[name]])
        except serialize.UnsupportedValue as err:
            raise ValueError(f"the cases of {name} cannot be sent to a kernel as plain data: {err}") from None
        for case in cases[name]:
            if case.expected is None:
                case.expected = exercise.oracle(case)
    return cases


def grade_batch(assignment: str, submissions: list, out: Path, *, jobs: int = 1, limits: Limits = Limits(),
                force: bool = False, seed: int | None = None, sandbox: bool = True, progress: bool = True,
                cluster: str | None = None) -> dict:
    """Grade ``submissions`` (notebook paths; the student id is the file's stem) into ``out``.

    Kernels run here, ``jobs`` at a time, or with ``cluster`` (a Dask scheduler's address, or
    ``"local:N"``) on that cluster's workers (:mod:`~course_lib.grading.cluster`).
    Returns every row of ``out/grades.csv`` (this run's and earlier ones'), keyed by student.
    Raises ``ValueError`` for bad arguments, never for a bad submission.
    """
    names = exercise_names(assignment)
    if not names:
        lectures = sorted({exercise.lecture for exercise in REGISTRY.values()})
        raise ValueError(f"assignment must be one of {lectures}, got {assignment!r}")
    students = _students(submissions)
    out = Path(out)
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    seed, rows, ran_on = _resume(out, assignment, names, seed, force)
    todo = [(student, path) for student, path in students.items() if force or student not in rows]
    for student, _ in todo:  # where a regraded student ran before no longer applies
        ran_on.pop(student, None)
    cases = draw_cases(assignment, seed)
    # What no kernel may read, wherever it runs: the grades and the submissions.
    hidden = [out, *(path for submission in students.values() for path in (submission, submission.parent))]
    if cluster is None:
        if limits.threads is None:  # share the cores between concurrent kernels
            limits = replace(limits, threads=max(1, (os.cpu_count() or 1) // max(jobs, 1)))
        runner = _Here(jobs, limits, hidden, sandbox)
    else:
        from .cluster import ClusterRunner  # Dask is imported only for a cluster run

        runner = ClusterRunner(cluster, limits, hidden, sandbox)

    with runner:
        def save_state() -> None:
            _write_state(out, assignment, names, seed, runner.status, runner.state(ran_on))

        save_state()
        print(f"{assignment}: grading {len(todo)} of {len(students)} submissions "
              f"({len(students) - len(todo)} already graded){runner.where}; {runner.status}", file=sys.stderr)
        bar = tqdm(total=len(todo), desc="grading", unit="notebook", disable=None if progress else True)

        def record(student: str, outcome: Outcome, worker: str | None = None) -> None:
            results = score(cases, outcome)
            _write_atomic(out / "feedback" / f"{student}.md", feedback(assignment, student, outcome, results))
            rows[student] = _row(student, outcome, results)
            _write_atomic(out / GRADES_FILE, _grades_csv(names, rows))
            if worker is not None:
                ran_on[student] = worker
                save_state()
            bar.update()

        try:
            runner.grade(todo, cases, record)
        finally:
            bar.close()
            save_state()  # again, in case an unsandboxed kernel wrote there
    report = runner.report()
    if report:
        print(report, file=sys.stderr)
    return rows


class _Here:
    """Kernels on this machine, ``jobs`` at a time: how :func:`grade_batch` runs without a cluster.

    :class:`~course_lib.grading.cluster.ClusterRunner` is the same interface over Dask workers.
    """

    where = ""

    def __init__(self, jobs: int, limits: Limits, hidden: list, sandbox: bool):
        self.jobs, self.limits, self.hidden, self.sandbox = jobs, limits, hidden, sandbox

    def __enter__(self) -> "_Here":
        self.scratch_root = Path(tempfile.mkdtemp(prefix="course-grade-"))
        hidden = self.hidden + private_paths(self.scratch_root)
        self.box = Sandbox.probe(self.scratch_root / "probe", hidden, enabled=self.sandbox, limits=self.limits)
        self.status = self.box.status
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.scratch_root, ignore_errors=True)

    def grade(self, todo: list, cases: dict, record) -> None:
        asyncio.run(_grade_all(todo, cases, self.box, self.limits, self.scratch_root, self.jobs, record))

    def state(self, ran_on: dict) -> dict:
        return {}

    def report(self) -> str:
        return ""


def _students(submissions) -> dict:
    students = {}
    for submission in submissions:
        path = Path(submission).resolve()
        if not path.is_file():
            raise ValueError(f"submission must be a notebook file, got {str(submission)!r}")
        if path.stem in students:
            raise ValueError(f"two submissions have the student id {path.stem!r}: {students[path.stem]} and {path}")
        students[path.stem] = path
    return students


async def _grade_all(todo, cases, box: Sandbox, limits: Limits, scratch_root: Path, jobs: int, record) -> None:
    context = message_context()
    slots = asyncio.Semaphore(max(1, jobs))

    async def one(index: int, student: str, path: Path) -> None:
        async with slots:
            scratch = scratch_root / f"s{index}"
            try:
                outcome = await run_submission(path, scratch, cases, box, limits, context)
            except Exception as err:  # noqa: BLE001 - one submission's failure must not stop the batch
                reason = f"grading failed: {type(err).__name__}: {err}"
                outcome = Outcome("error", reason, dict.fromkeys(cases, f"not run: {reason}"))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            record(student, outcome)

    try:
        await asyncio.gather(*(one(i, student, path) for i, (student, path) in enumerate(todo)))
    finally:
        context.destroy(linger=0)


# --- state of an output directory ----------------------------------------------------------------

def _resume(out: Path, assignment: str, names: list, seed: int | None, force: bool) -> tuple[int, dict, dict]:
    """The seed to use, the rows already graded and the workers they ran on (cluster runs), checked
    against what ``out`` holds."""
    state_path = out / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if seed is None and os.environ.get(HIDDEN_SEED_ENV, "").strip():
        seed = int(os.environ[HIDDEN_SEED_ENV])
    if state and state.get("assignment") != assignment:
        raise ValueError(f"{out} holds grades of {state.get('assignment')!r}, not {assignment!r}; use another --out")
    if seed is None:
        seed = state.get("seed", secrets.randbelow(2**31))
    rows = _read_grades(out / GRADES_FILE)
    if state and state.get("seed") != seed:
        if not force:
            raise ValueError(f"{out} was graded with another seed; pass --force to regrade everyone with the new one")
        rows = {}  # grades drawn from another seed are not comparable
    if rows and state.get("exercises") != names:
        if not force:
            raise ValueError(f"{out} was graded with other exercises ({state.get('exercises')}); pass --force to regrade")
        rows = {}
    return seed, rows, {student: worker for student, worker in state.get("ran_on", {}).items() if student in rows}


def _write_state(out: Path, assignment: str, names: list, seed: int, sandbox: str, extra: dict) -> None:
    state = {"assignment": assignment, "exercises": names, "seed": seed, "sandbox": sandbox, "course_lib": __version__, **extra}
    _write_atomic(out / STATE_FILE, json.dumps(state, indent=2) + "\n")


def _read_grades(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as file:
        return {row["student"]: row for row in csv.DictReader(file)}


def _row(student: str, outcome: Outcome, results: list[CheckResult]) -> dict:
    row = {"student": student}
    row.update({result.name: f"{result.points:g}" for result in results})
    row.update(
        total=f"{sum(r.points for r in results):g}", max=f"{sum(r.max_points for r in results):g}",
        status=outcome.status, reason="; ".join(filter(None, [outcome.reason, _cell_errors(outcome)])),
        mistakes=MISTAKE_SEPARATOR.join(f"{r.name}: {r.diagnosis}" for r in results if r.diagnosis),
    )
    return row


MISTAKE_SEPARATOR = "; "  # between the "exercise: mistake" entries of a row's mistakes column


def _cell_errors(outcome: Outcome) -> str:
    """One line on the notebook's own errors, e.g. "2 cells raised an error (the first: NameError: ...)"."""
    count = len(outcome.cell_errors)
    if not count:
        return ""
    return f"{count} cell{'s' if count > 1 else ''} raised an error (the first: {outcome.cell_errors[0]})"


def _grades_csv(names: list, rows: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["student", *names, "total", "max", "status", "reason", "mistakes"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[student] for student in sorted(rows))
    return buffer.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (or a crash) sees the old file or the new one."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


# --- reports ---------------------------------------------------------------------------------------

def feedback(assignment: str, student: str, outcome: Outcome, results: list[CheckResult]) -> str:
    """The Markdown a student receives: points per exercise, the first failing case of each, and the
    classic mistake that explains the failures where the check recognised one."""
    total, best = sum(r.points for r in results), sum(r.max_points for r in results)
    lines = [f"# {assignment}: feedback for {student}", "", f"**Score: {total:g} / {best:g} points**", ""]
    if outcome.status != "ok":
        lines += [f"> **{outcome.status}**: {outcome.reason}", ""]
    if outcome.cell_errors:
        count = len(outcome.cell_errors)
        lines += [f"While your notebook ran, {count} cell{'s' if count > 1 else ''} raised an error; "
                  f"the first: `{outcome.cell_errors[0]}`", ""]
    lines += ["| exercise | points | result |", "|---|---:|---|"]
    for r in results:
        verdict = "passed" if r.passed else (r.status if r.status != "graded" else "failed")
        if r.diagnosis:
            verdict += f": {r.diagnosis}"
        lines.append(f"| `{r.name}` | {r.points:g} / {r.max_points:g} | {verdict} |")
    for r in results:
        if not r.passed:
            explanation = _diagnosis(r)
            message = r.message.replace(f"\n{explanation}", "") if explanation else r.message
            lines += ["", f"## {r.name} ({r.points:g} / {r.max_points:g})", "", "```text", message, "```"]
            if explanation:
                lines += ["", f"**Likely mistake ({r.diagnosis}):** {explanation}"]
    return "\n".join(lines) + "\n"


def _diagnosis(result: CheckResult) -> str:
    """The sentence that explains ``result``'s named mistake, or ``""``."""
    if not result.diagnosis:
        return ""
    mistakes = {mistake.key: mistake.message for mistake in get_exercise(result.name).mistakes}
    return mistakes.get(result.diagnosis, "")


def mistake_counts(rows: dict) -> dict:
    """``{(exercise, mistake): number of students}`` over the ``mistakes`` column of ``rows``."""
    counts = {}
    for row in rows.values():
        for entry in filter(None, (row.get("mistakes") or "").split(MISTAKE_SEPARATOR)):
            name, _, key = entry.partition(": ")
            counts[name, key] = counts.get((name, key), 0) + 1
    return counts


def summary(names: list, rows: dict) -> str:
    """Mean, median and per-exercise pass rate (full points) over ``rows``, as a text table, then how
    many students made each classic mistake the checks recognised (what to go over again in class)."""
    if not rows:
        return "no submissions graded"
    width = max(len(name) for name in [*names, "total"])
    lines = [f"{'exercise':<{width}}  {'max':>5}  {'mean':>6}  {'pass rate':>9}"]
    for name in [*names, "total"]:
        got = [float(row[name]) for row in rows.values()]
        best = max((float(row["max"]) for row in rows.values()), default=0) if name == "total" else get_exercise(name).points
        passed = sum(points >= best for points in got) / len(got)
        lines.append(f"{name:<{width}}  {best:>5g}  {statistics.fmean(got):>6.2f}  {passed:>9.0%}")
    totals = [float(row["total"]) for row in rows.values()]
    statuses = {}
    for row in rows.values():
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    lines += ["", f"{len(rows)} students; total mean {statistics.fmean(totals):.2f}, median {statistics.median(totals):g}",
              "status: " + ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))]
    counts = mistake_counts(rows)
    if counts:
        order = sorted(counts.items(), key=lambda item: (-item[1], names.index(item[0][0]) if item[0][0] in names else 0, item[0][1]))
        mistake_width = max(len("mistake"), *(len(key) for (_, key), _ in order))
        lines += ["", "classic mistakes the checks named (students who made each):",
                  f"{'exercise':<{width}}  {'mistake':<{mistake_width}}  {'students':>8}"]
        lines += [f"{name:<{width}}  {key:<{mistake_width}}  {count:>8}" for (name, key), count in order]
    return "\n".join(lines)


# --- release -----------------------------------------------------------------------------------------

RELEASED = ["README.md", "pyproject.toml", "environment.yml", "constraints.txt", "course_lib", "lectures", "exercises"]
REQUIRED = ["course_lib", "exercises"]


def release(source: Path, dest: Path, force: bool = False) -> list[str]:
    """Copy the student bundle from the course checkout ``source`` into ``dest``; return what was copied.

    Refuses an exercise notebook that still holds a solution block, and a non-empty ``dest``
    unless ``force``. Solutions, tests and CI files are never copied.
    """
    source, dest = Path(source).resolve(), Path(dest).resolve()
    for part in REQUIRED:
        if not (source / part).exists():
            raise ValueError(f"source must be a course checkout with {part}/, got {str(source)!r}")
    for notebook in sorted((source / "exercises").glob("*.ipynb")):
        if "BEGIN SOLUTION" in notebook.read_text(encoding="utf-8"):
            raise ValueError(f"{notebook} contains a solution; rebuild exercises with `python -m course_lib.authoring`")
    if any(dest == source / part or source / part in dest.parents for part in RELEASED):
        raise ValueError(f"dest must not be inside a released part of {source}, got {str(dest)!r}")
    if dest.exists() and any(dest.iterdir()) and not force:
        raise ValueError(f"dest {str(dest)!r} is not empty; pass --force to replace it")
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent if dest.parent.exists() else None))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    copied = []
    for part in RELEASED:
        origin = source / part
        if origin.is_dir():
            shutil.copytree(origin, staging / part, ignore=ignore)
        elif origin.is_file():
            shutil.copy2(origin, staging / part)
        else:
            continue
        copied.append(part)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staging, dest)
    return copied


# --- command lines -------------------------------------------------------------------------------------

def grade_main(argv=None) -> int:
    """``course-grade ASSIGNMENT SUBMISSION... --out DIR [--jobs N | --cluster ADDRESS] [--timeout S] [--memory MB] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="course-grade",
        description="Grade submitted notebooks in isolated kernels against hidden cases.",
        epilog=f"The hidden seed comes from --seed, else ${HIDDEN_SEED_ENV}, else the one recorded in DIR, "
               "else a random one, recorded in DIR/grading.json.",
    )
    parser.add_argument("assignment", help="exercise notebook stem, e.g. 01_conv_arithmetic")
    parser.add_argument("submissions", nargs="+", type=Path, help="submitted notebooks; the student id is the file's stem")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="where grades.csv and feedback/ go")
    parser.add_argument("--jobs", type=int, metavar="N", help="kernels run at once on this machine (default 1)")
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="run the kernels on the workers of the Dask cluster whose scheduler is at ADDRESS "
                             "(tcp://host:8786), or on N local worker processes (local:N); needs "
                             'pip install "cnn-workbook[cluster]"')
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="limit for running a notebook, and again for calling its functions (default 300)")
    parser.add_argument("--memory", type=int, default=4096, metavar="MB", help="memory a kernel may allocate (default 4096)")
    parser.add_argument("--force", action="store_true", help="regrade students already in DIR")
    parser.add_argument("--seed", type=int, help="seed of the hidden cases")
    parser.add_argument("--full", action="store_true", help="run notebooks in full mode (default: COURSE_FAST=1)")
    parser.add_argument("--no-sandbox", action="store_true", help="do not use bubblewrap even where it works")
    args = parser.parse_args(argv)
    if (args.jobs is not None and args.jobs < 1) or args.timeout <= 0 or args.memory < 256:
        parser.error("--jobs must be >= 1, --timeout > 0 and --memory >= 256")
    if args.jobs is not None and args.cluster:
        parser.error("--jobs is for grading on this machine; on a cluster each worker runs as many kernels as it has threads")
    cluster_errors = ()
    if args.cluster:
        from .cluster import ClusterError  # the module imports Dask only once a run starts

        cluster_errors = ClusterError
    limits = Limits(timeout=args.timeout, memory_mb=args.memory, fast=not args.full)
    try:
        rows = grade_batch(args.assignment, args.submissions, args.out, jobs=args.jobs or 1, limits=limits,
                           force=args.force, seed=args.seed, sandbox=not args.no_sandbox, cluster=args.cluster)
    except ValueError as err:
        parser.error(str(err))
    except cluster_errors as err:
        print(f"course-grade: {err}\nwhat was graded so far is saved in {args.out}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: what was graded so far is saved in {args.out}", file=sys.stderr)
        return 130
    print(summary(exercise_names(args.assignment), rows))
    print(f"grades: {args.out / GRADES_FILE}; feedback: {args.out / 'feedback'}")
    return 0


def release_main(argv=None) -> int:
    """``course-release DIR [--source ROOT] [--force]``."""
    default_source = library_root() if (library_root() / "exercises").is_dir() else Path.cwd()
    parser = argparse.ArgumentParser(prog="course-release", description="Write the student bundle, without solutions.")
    parser.add_argument("dest", type=Path, metavar="DIR")
    parser.add_argument("--source", type=Path, default=default_source, help=f"course checkout (default {default_source})")
    parser.add_argument("--force", action="store_true", help="replace DIR if it is not empty")
    args = parser.parse_args(argv)
    try:
        copied = release(args.source, args.dest, force=args.force)
    except ValueError as err:
        parser.error(str(err))
    print(f"released {', '.join(copied)} to {args.dest}")
    return 0


if __name__ == "__main__":  # python -m course_lib.grading.cli [release] ...
    sys.exit(release_main(sys.argv[2:]) if sys.argv[1:2] == ["release"] else grade_main())
