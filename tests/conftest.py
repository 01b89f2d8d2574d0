"""Shared test helpers."""
import pytest

from course_lib.grading import check


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
