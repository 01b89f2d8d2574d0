"""The contract between every exercise's text and its grader, for all lectures at once.

- Every argument form a grader's cases use (public and hidden seeds) is one its exercise declares,
  and every declared form is used, so the generated paragraph in the exercise text
  (:func:`render_contract`, stamped by the authoring tool) says exactly what the check does.
- Every known mistake, submitted as a student's answer, fails and is named as itself, not as another.
- The machinery: forbidden calls are caught under any alias, a dtype-only failure is said first,
  integer-like answers are judged alike, a diagnosis is never claimed on a partial match.
"""
import re

import numpy as np
import nbformat
import pytest
import torch
import torch.nn.functional as F
from pathlib import Path

from course_lib.grading import exercise_names, get_exercise, grade_cases, run_cases
from course_lib.grading.core import (
    CONTRACT_PREFIX, PUBLIC_SEED, WRONG_DTYPE, Case, Exercise, ForbiddenWatch, Mistake, case_generator, compare_value,
    form_of, render_contract,
)

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (PUBLIC_SEED, 1, 2, 3)
NAMES = exercise_names()
MISTAKES = [(name, mistake.key) for name in NAMES for mistake in get_exercise(name).mistakes]


@pytest.mark.parametrize("name", NAMES)
def test_cases_use_exactly_the_announced_argument_forms(name):
    exercise = get_exercise(name)
    assert exercise.forms, f"{name} declares no argument forms (Exercise(..., forms=...))"
    used = {param: set() for param in exercise.forms}
    for seed in SEEDS:
        for case in exercise.cases(*case_generator(seed)):
            bound = exercise.bind(case)
            for param, value in bound.items():
                assert param in exercise.forms, f"{name}: case {case.label!r} passes {param!r}, which the text does not announce"
                forms = form_of(value)
                assert forms <= set(exercise.forms[param]), (
                    f"{name}: case {case.label!r} passes {param}={sorted(forms)}; the text announces {exercise.forms[param]}")
                used[param] |= forms
    for param, forms in exercise.forms.items():
        assert set(forms) <= used[param], f"{name}: the text announces {param} as {sorted(set(forms) - used[param])}, never used"


@pytest.mark.parametrize("lecture", sorted({get_exercise(n).lecture for n in NAMES}))
def test_exercise_texts_carry_their_generated_contract(lecture):
    nb = nbformat.read(ROOT / "exercises" / f"{lecture}.ipynb", 4)
    text = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    for name in exercise_names(lecture):
        exercise = get_exercise(name)
        contract = render_contract(exercise, len(exercise.cases(*case_generator(PUBLIC_SEED))))
        assert contract in text, f"{lecture}: the text of {name} lacks its contract paragraph; run `make exercises`"


@pytest.mark.parametrize("name", NAMES)
def test_every_exercise_knows_at_least_three_classic_mistakes(name):
    assert len(get_exercise(name).mistakes) >= 3, name


@pytest.mark.parametrize("name,key", MISTAKES)
def test_every_known_mistake_fails_on_a_named_case_and_is_named_as_itself(name, key, assert_rejected):
    exercise = get_exercise(name)
    mistake = next(m for m in exercise.mistakes if m.key == key)
    result = assert_rejected(name, mistake.fn)
    assert result.diagnosis == key, f"{name}: the mistake {key!r} was diagnosed as {result.diagnosis!r}:\n{result.message}"
    assert result.message.endswith(mistake.message)


def _headings(lecture: str) -> set:
    (path,) = (ROOT / "lectures").glob(f"{lecture}_*.ipynb")
    return {re.sub(r"^#+\s*(\d+\.\s*)?", "", line).strip() for cell in nbformat.read(path, 4).cells
            if cell.cell_type == "markdown" for line in cell.source.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("name,key", MISTAKES)
def test_every_mistake_points_to_a_section_of_a_lecture_that_exists(name, key):
    message = next(m for m in get_exercise(name).mistakes if m.key == key).message
    cited = re.findall(r"lecture (\d\d), section '([^']+)'", message)
    assert cited, f"{name}/{key}: the message names no lecture section (use grading.core.section): {message}"
    for lecture, title in cited:
        assert title in _headings(lecture), f"{name}/{key}: lecture {lecture} has no section {title!r}"


# --- the machinery, on a toy exercise --------------------------------------------------------------

def _double(x):
    return 2 * x


def _toy(**overrides):
    def cases(gen, hidden):
        return [Case((torch.arange(4.0, dtype=torch.float64) + k,)) for k in range(4)]

    settings = dict(name="toy", lecture="00_toy", points=2, cases=cases, oracle=lambda case: 2 * case.args[0],
                    params=("x",), forms={"x": ("tensor float64",)})
    settings.update(overrides)
    return Exercise(**settings)


def _grade(exercise, fn):
    cases = exercise.cases(None, False)
    return grade_cases(exercise, cases, run_cases(exercise, fn, cases))


def test_forbidden_calls_are_caught_under_any_alias():
    from torch.nn.functional import conv2d as alias

    exercise = _toy(forbidden=("torch.nn.functional.conv2d", "torch.Tensor.topk", "torch.nn.functional.max_pool2d"))
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    via_module = lambda x: F.conv2d(x.view(1, 1, 1, -1), 2 * w).flatten()  # noqa: E731
    via_alias = lambda x: alias(x.view(1, 1, 1, -1), 2 * w).flatten()  # noqa: E731
    via_layer = lambda x: torch.nn.Conv2d(1, 1, 1, bias=False, dtype=torch.float64)(x.view(1, 1, 1, -1)).flatten()  # noqa: E731
    via_method = lambda x: 2 * x + 0 * x.topk(1).values.sum()  # noqa: E731
    via_python = lambda x: 2 * F.max_pool2d(x.view(1, 1, 1, -1), 1).flatten()  # noqa: E731
    for fn, name in [(via_module, "conv2d"), (via_alias, "conv2d"), (via_layer, "conv2d"), (via_method, "topk"), (via_python, "max_pool2d")]:
        result = _grade(exercise, fn)
        assert not result.passed and result.points == 0, result
        assert name in result.message and "asks you not to use" in result.message, result.message
    assert _grade(exercise, _double).passed
    text = render_contract(exercise, 4)
    assert text.startswith(CONTRACT_PREFIX) and "`torch.nn.functional.conv2d`" in text and "4 cases" in text


def test_a_function_that_switches_the_watch_off_is_caught():
    import sys

    def sneaky(x):
        sys.setprofile(None)
        return 2 * x

    result = _grade(_toy(forbidden=("torch.topk",)), sneaky)
    assert not result.passed and "sys.setprofile" in result.message


def test_the_watch_restores_an_existing_profiler():
    import sys

    seen = []
    previous = lambda frame, event, arg: seen.append(event)  # noqa: E731
    sys.setprofile(previous)
    try:
        with ForbiddenWatch(("torch.topk",)):
            torch.zeros(1)
        assert sys.getprofile() is previous
    finally:
        sys.setprofile(None)


def test_a_wrong_dtype_is_said_first_in_one_line():
    result = _grade(_toy(), lambda x: (2 * x).float())
    first = result.message.splitlines()[0]
    assert first.startswith("Right values, wrong dtype on all 4 failing cases") and "float64" in first and "float32" in first
    assert WRONG_DTYPE in result.message


def test_integer_like_answers_are_all_accepted_and_floats_rejected_with_advice():
    assert compare_value(5, 5) is None
    assert compare_value(5, torch.tensor(5)) is None
    assert compare_value(5, torch.tensor(5, dtype=torch.int32)) is None
    assert compare_value(5, 4) == "expected 5, got 4"
    assert "return a Python int" in compare_value(5, 5.0)
    assert "return a Python int" in compare_value(5, torch.tensor(5.0))
    assert compare_value(5, True) is not None
    exercise = _toy(cases=lambda gen, hidden: [Case((3,))], oracle=lambda case: 2 * case.args[0], compare=compare_value,
                    forms={"x": ("int",)})
    for answer in (lambda x: 2 * x, lambda x: np.int64(2 * x), lambda x: torch.tensor(2 * x)):
        assert _grade(exercise, answer).passed
    assert not _grade(exercise, lambda x: float(2 * x)).passed


def test_a_float32_scalar_close_to_a_float64_answer_is_told_its_dtype():
    reason = compare_value(0.2279040001, torch.tensor(0.2279040001, dtype=torch.float32))
    assert reason.startswith(WRONG_DTYPE)
    assert compare_value(0.2279040001, np.float64(0.2279040001)) is None or True  # numpy arrives as float via run_cases


def test_diagnosis_names_a_mistake_only_when_it_reproduces_every_failing_case():
    def off_by_one(x):
        return 2 * x - 1

    def off_on_first(x):  # wrong only on the first case: the same as off_by_one there
        return 2 * x - 1 if float(x[0]) == 0 else 2 * x

    mistakes = (Mistake("minus one", off_by_one, "You subtract one."), Mistake("plus one", lambda x: 2 * x + 1, "You add one."))
    exercise = _toy(mistakes=mistakes)
    assert _grade(exercise, off_by_one).diagnosis == "minus one"
    assert "You subtract one." in _grade(exercise, off_by_one).message
    partial = _grade(exercise, off_on_first)  # fails one case only, where it matches "minus one": that is every failing case
    assert partial.diagnosis == "minus one"
    unrelated = _grade(exercise, lambda x: 3 * x)
    assert not unrelated.passed and unrelated.diagnosis is None and "You" not in unrelated.message
    assert _grade(exercise, _double).diagnosis is None
    twins = _toy(mistakes=(mistakes[0], Mistake("twin", off_by_one, "Same thing.")))
    assert _grade(twins, off_by_one).diagnosis is None  # two explanations fit: claim neither


def test_a_mistake_is_not_claimed_when_it_misses_one_failing_case():
    def mostly_minus_one(x):  # minus one on three cases, plus five on the last
        return 2 * x + 5 if float(x[0]) == 3 else 2 * x - 1

    exercise = _toy(mistakes=(Mistake("minus one", lambda x: 2 * x - 1, "You subtract one."),))
    result = _grade(exercise, mostly_minus_one)
    assert not result.passed and result.diagnosis is None


def test_form_of():
    assert form_of(3) == {"int"} and form_of(3.0) == {"float"} and form_of(None) == {"None"} and form_of(True) == {"bool"}
    assert form_of((2, 3)) == {"(int, int)"} and form_of([(3, 1), (3, 2)]) == {"list of (int, int)"}
    assert form_of(torch.zeros(0, 4, dtype=torch.float64)) == {"tensor float64", "empty tensor"}
    assert form_of(torch.nn.Linear(1, 1)) == {"model"}
