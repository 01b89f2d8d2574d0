"""Graders: ``check(name, fn)`` gives a student specific feedback on one exercise in under a second.

Each lecture's exercises live in a sibling module (``grading/conv.py`` for lecture 01, ...). Their
oracles never call the ``course_lib`` function of the same name: they use torch/torchvision built-ins,
empirical measurements, or the lectures' hand-worked examples.
"""
from __future__ import annotations

import importlib
import os
import pkgutil

from .core import (
    HIDDEN_SEED_ENV,
    Case,
    CheckResult,
    Exercise,
    case_generator,
    exercise_names,
    get_exercise,
)

__all__ = ["check", "summary", "grade_cases", "run_cases", "CheckResult", "Exercise", "Case", "exercise_names", "get_exercise", "HIDDEN_SEED_ENV"]

# Every module of this package except the machinery below is a lecture's exercise module; each
# registers its exercises (with their lecture) when imported, so adding a lecture touches no list.
_MACHINERY = {"core", "cli", "harness", "sandbox", "serialize"}


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _MACHINERY and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


NOT_IMPLEMENTED = "not implemented yet: replace `raise NotImplementedError()` with your code, then run this cell again"


def grade_cases(exercise: Exercise, cases, outputs) -> CheckResult:
    """Score ``outputs`` (one per case: ``("ok", value)``, ``("error", message)`` or
    ``("not implemented", None)``) against the oracle. Runs wherever the oracle is trusted."""
    rows = []
    for case, (status, value) in zip(cases, outputs):
        if status == "not implemented":
            return CheckResult(exercise.name, False, 0, exercise.points, NOT_IMPLEMENTED, status="not implemented")
        if status == "error":
            reason = value
        else:
            try:
                reason = exercise.compare(exercise.expected(case), value)
            except Exception as err:  # an answer so odd that comparing it fails is still just wrong
                reason = f"returned a value that could not be compared ({type(err).__name__}: {err})"
        rows.append((case.label, reason is None, reason))
    failures = [(label, reason) for label, ok, reason in rows if not ok]
    points = round(exercise.points * (len(rows) - len(failures)) / max(len(rows), 1), 2)
    if not failures:
        message = f"all {len(rows)} cases passed"
    else:
        label, reason = failures[0]
        message = f"{len(failures)} of {len(rows)} cases failed. First failure, for {exercise.name}({label}):\n  {reason}"
    return CheckResult(exercise.name, not failures, points, exercise.points, message, rows)


def run_cases(exercise: Exercise, fn, cases) -> list:
    """Call the student's ``fn`` on every case, turning exceptions into data (see :func:`grade_cases`)."""
    outputs = []
    for case in cases:
        try:
            outputs.append(("ok", exercise.call(fn, case)))
        except NotImplementedError:
            outputs.append(("not implemented", None))
            break
        except Exception as err:
            outputs.append(("error", f"raised {type(err).__name__}: {err}"))
    return outputs


def _check(name: str, fn, seed: int | None = None) -> CheckResult:
    exercise = get_exercise(name)
    if not callable(fn):
        return CheckResult(name, False, 0, exercise.points, f"expected a function or class for {name}, got {type(fn).__name__}", status="error")
    generator, hidden = case_generator(seed)
    cases = exercise.cases(generator, hidden)
    return grade_cases(exercise, cases, run_cases(exercise, fn, cases))


def check(name: str, fn, seed: int | None = None) -> CheckResult:
    """Check the student's ``fn`` for exercise ``name`` and return a :class:`CheckResult`.

    Cases come from the public seed, or from ``COURSE_GRADING_SEED`` (the instructor's hidden cases),
    or from ``seed`` when given. Never raises for a wrong answer: it explains it. Under nbgrader's
    autograder (``NBGRADER_EXECUTION`` set) a failed check raises ``AssertionError`` instead, because
    that is how nbgrader learns that a test cell failed.
    """
    result = _check(name, fn, seed)
    if os.environ.get("NBGRADER_EXECUTION") in ("autograde", "validate") and not result.passed:
        raise AssertionError(str(result))
    return result


def summary(namespace: dict, lecture: str) -> list[CheckResult]:
    """Check every exercise of ``lecture`` found in ``namespace`` (pass ``globals()``), print one line
    each and the total, and return the results."""
    names = exercise_names(lecture)
    if not names:
        raise ValueError(f"lecture must name a lecture with exercises, got {lecture!r}")
    results = []
    for name in names:
        fn = namespace.get(name)
        if fn is None:
            exercise = get_exercise(name)
            results.append(CheckResult(name, False, 0, exercise.points, f"{name} is not defined: run its cell first", status="error"))
        else:
            results.append(_check(name, fn))
    for result in results:
        mark = "PASS" if result.passed else ("TODO" if result.status == "not implemented" else "FAIL")
        print(f"[{mark}] {result.name:24s} {result.points:g}/{result.max_points:g}")
    print(f"total: {sum(r.points for r in results):g} / {sum(r.max_points for r in results):g} points")
    return results
