"""Shared test helpers."""
import dataclasses

import pytest

from course_lib.grading import check, get_exercise, grade_cases, run_cases
from course_lib.grading.core import case_generator


@pytest.fixture
def assert_rejected():
    """``assert_rejected(name, fn)``: the grader fails ``fn`` and its message names the failing case."""

    def rejected(name, fn):
        result = check(name, fn)
        assert not result.passed and result.points < result.max_points, result
        assert f"First failure, for {name}(" in result.message, result.message
        assert "expected" in result.message or "raised" in result.message, result.message
        return result

    return rejected


@pytest.fixture
def assert_mistake_fails_on(assert_rejected):
    """``assert_mistake_fails_on(name, key, case)``: the known mistake ``key`` of exercise ``name`` is
    rejected, and among its failing cases is one whose label contains ``case`` (the case built for it)."""

    def fails_on(name, key, case):
        mistake = next(m for m in get_exercise(name).mistakes if m.key == key)
        result = assert_rejected(name, mistake.fn)
        assert any(case in label for label, ok, _ in result.cases if not ok), result.message

    return fails_on


@pytest.fixture
def unwatched():
    """``unwatched(name, fn, seed=None)``: ``fn`` graded on the exercise's cases without the forbidden-call
    watch, so that course_lib's own functions (which the exercises forbid) can be checked against the oracles."""

    def grade(name, fn, seed=None):
        exercise = dataclasses.replace(get_exercise(name), forbidden=())
        cases = exercise.cases(*case_generator(seed))
        return grade_cases(exercise, cases, run_cases(exercise, fn, cases))

    return grade
