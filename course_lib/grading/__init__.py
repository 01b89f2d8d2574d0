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
    WRONG_DTYPE,
    Case,
    CheckResult,
    Exercise,
    ForbiddenWatch,
    Mistake,
    case_generator,
    exercise_names,
    get_exercise,
    plain_scalars,
)

__all__ = ["check", "summary", "grade_cases", "run_cases", "diagnose", "CheckResult", "Exercise", "Case", "Mistake",
           "exercise_names", "get_exercise", "HIDDEN_SEED_ENV"]

# Every module of this package except the machinery below is a lecture's exercise module; each
# registers its exercises (with their lecture) when imported, so adding a lecture touches no list.
_MACHINERY = {"core", "cli", "cluster", "harness", "sandbox", "serialize"}


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _MACHINERY and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


NOT_IMPLEMENTED = "not implemented yet: replace `raise NotImplementedError()` with your code, then run this cell again"


def grade_cases(exercise: Exercise, cases, outputs) -> CheckResult:
    """Score ``outputs`` (one per case: ``("ok", value)``, ``("error", message)`` or
    ``("not implemented", None)``) against the oracle. Runs wherever the oracle is trusted.

    The message gives the number of failing cases and the first one; when every failure is only a
    wrong dtype it says so first, in one line; when one known mistake of the exercise reproduces the
    answer on every failing case, it names that mistake (:func:`diagnose`).
    """
    rows, failing = [], []
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
        if reason is not None:
            failing.append((case, status, value))
    failures = [(label, reason) for label, ok, reason in rows if not ok]
    points = round(exercise.points * (len(rows) - len(failures)) / max(len(rows), 1), 2)
    if not failures:
        return CheckResult(exercise.name, True, points, exercise.points, f"all {len(rows)} cases passed", rows)
    label, reason = failures[0]
    dtype = [r for _, r in failures if r.startswith(WRONG_DTYPE)]
    head = ""
    if len(dtype) == len(failures):
        head = f"Right values, wrong dtype on all {len(failures)} failing cases ({dtype[0].split(': ', 1)[1]}).\n"
    message = f"{head}{len(failures)} of {len(rows)} cases failed. First failure, for {exercise.name}({label}):\n  {reason}"
    mistake = diagnose(exercise, failing)
    if mistake is not None:
        message += f"\n{mistake.message}"
    return CheckResult(exercise.name, False, points, exercise.points, message, rows,
                       diagnosis=mistake.key if mistake is not None else None)


def diagnose(exercise: Exercise, failing) -> "Mistake | None":
    """The one known mistake of ``exercise`` that reproduces the student's answer on every failing
    case (``failing``: ``(case, status, value)`` triples), else ``None``.

    A mistake reproduces a case when it returns an answer the exercise's comparison cannot tell from
    the student's, or when both raise the same type of exception. Two mistakes that both fit are
    not told apart, so neither is claimed. Each mistake's output on a case is computed once and
    kept on the case.
    """
    if not failing or not exercise.mistakes:
        return None
    matches = []
    for mistake in exercise.mistakes:
        for case, status, value in failing:
            if mistake.key not in case.mistake_outputs:
                case.mistake_outputs[mistake.key] = run_cases(exercise, mistake.fn, [case])[0]
            their_status, theirs = case.mistake_outputs[mistake.key]
            if status == "ok" and their_status == "ok":
                try:
                    same = exercise.compare(theirs, value) is None
                except Exception:
                    same = False
            else:
                same = status == their_status == "error" and value.split(":")[0] == theirs.split(":")[0]
            if not same:
                break
        else:
            matches.append(mistake)
    return matches[0] if len(matches) == 1 else None


def run_cases(exercise: Exercise, fn, cases) -> list:
    """Call the student's ``fn`` on every case, turning exceptions into data (see :func:`grade_cases`).

    NumPy scalars in what ``fn`` returns become Python ones (:func:`~.core.plain_scalars`), and a
    call of a function the exercise forbids makes that case an error that names the function.
    """
    outputs = []
    for case in cases:
        watch = ForbiddenWatch(exercise.forbidden)
        try:
            with watch:
                value = exercise.call(fn, case)
        except NotImplementedError:
            outputs.append(("not implemented", None))
            break
        except Exception as err:
            outputs.append(("error", watch.message() if watch.hit else f"raised {type(err).__name__}: {err}"))
            continue
        outputs.append(("error", watch.message()) if watch.hit else ("ok", plain_scalars(value)))
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
    or from ``seed`` when given. Never raises for a wrong answer: it explains it. Warnings raised
    while ``fn`` runs are collected and listed at the end of the message instead of being printed.

    Under nbgrader's autograder and validator (``NBGRADER_EXECUTION`` set) it prints the report and
    returns the points as a plain float: nbgrader reads a check cell's number as its partial credit
    (so a check cell scores what ``check`` scores), and a cell that writes nothing to stderr is not
    counted as failed because a student's code raised a warning.
    """
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _check(name, fn, seed)
    seen = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    if seen:
        shown = "; ".join(text[:200] for text in seen[:3]) + (f"; and {len(seen) - 3} more" if len(seen) > 3 else "")
        result.message += f"\n(warnings raised while it ran, which cost no points: {shown})"
    if os.environ.get("NBGRADER_EXECUTION") in ("autograde", "validate"):
        print(result)
        return float(result.points)
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
