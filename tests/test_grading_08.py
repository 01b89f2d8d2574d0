"""Graders of lecture 08: the solution notebook's answers and a student's straightforward loop versions
pass; the classic mistakes ((row, col) for (x, y), ``<`` at the disk's rim, the radius used as a
diameter, half-pixel centres, the first maximal pixel of a flat disk, PCK counting invisible joints or
using one normalizer for every figure, ...) fail with a message that names the failing case and the
mistake; odd answers are explained, not crashing."""
import math

import nbformat
import pytest
import torch
from pathlib import Path

from course_lib import pose
from course_lib.grading import check, exercise_names
from course_lib.grading.core import case_generator, get_exercise
from course_lib.grading.pose import LECTURE, pck_example
from odd_answers import Liar

REFERENCE = ["disk_heatmaps", "decode_heatmaps", "pck"]
ROOT = Path(__file__).resolve().parent.parent


def solutions():
    """The functions the solution notebook defines (its solution cells, executed)."""
    namespace = {}
    exec("import torch", namespace)
    for cell in nbformat.read(ROOT / "solutions" / f"{LECTURE}.ipynb", 4).cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            exec(cell.source, namespace)
    return {name: namespace[name] for name in REFERENCE}


# --- what a student might write: plain loops, with a switch per classic mistake -------------------

def disk(keypoints, height, width, radius, *, swap=False, strict=False, diameter=False, half=False):
    out = torch.zeros(*keypoints.shape[:-1], height, width, dtype=keypoints.dtype)
    flat_out, flat_kp = out.view(-1, height, width), keypoints.reshape(-1, 2)
    r = radius / 2 if diameter else radius
    for k, (x, y) in enumerate(flat_kp.tolist()):
        if swap:
            x, y = y, x
        for i in range(height):
            for j in range(width):
                px, py = (j + 0.5, i + 0.5) if half else (j, i)
                d2 = (px - x) ** 2 + (py - y) ** 2
                flat_out[k, i, j] = float(d2 < r * r if strict else d2 <= r * r)
    return out


def decode(heatmaps, *, first=False, swap=False):
    height, width = heatmaps.shape[-2:]
    maps = heatmaps.reshape(-1, height, width)
    out = torch.zeros(len(maps), 2, dtype=heatmaps.dtype)
    for k, grid in enumerate(maps.tolist()):
        top = max(max(row) for row in grid)
        where = [(j, i) for i in range(height) for j in range(width) if grid[i][j] == top]
        if first:
            where = where[:1]
        x, y = sum(j for j, _ in where) / len(where), sum(i for _, i in where) / len(where)
        out[k] = torch.tensor([y, x] if swap else [x, y])
    return out.reshape(*heatmaps.shape[:-2], 2)


def score(pred, gt, threshold, normalizer, visible=None, *, count_invisible=False, global_size=False, strict=False):
    figures = pred.reshape(-1, pred.shape[-2], 2)
    truth = gt.reshape(-1, gt.shape[-2], 2)
    sizes = normalizer.reshape(-1).tolist() if isinstance(normalizer, torch.Tensor) else [normalizer] * len(figures)
    if global_size:
        sizes = [sum(sizes) / len(sizes)] * len(sizes)
    seen = torch.ones(figures.shape[:2], dtype=torch.bool) if visible is None or count_invisible else visible.reshape(figures.shape[:2])
    correct = counted = 0
    for n in range(len(figures)):
        for k in range(figures.shape[1]):
            if seen[n, k]:
                d = math.dist(figures[n, k].tolist(), truth[n, k].tolist())
                limit = threshold * sizes[n]
                counted += 1
                correct += d < limit if strict else d <= limit
    return torch.tensor(correct / counted, dtype=pred.dtype)


STUDENT = {"disk_heatmaps": disk, "decode_heatmaps": decode, "pck": score}


def wrong(name, **switches):
    return lambda *args, **kwargs: STUDENT[name](*args, **kwargs, **switches)


# each wrong version, and the known mistake the check must name for it
WRONG = {
    "disk_heatmaps": [(wrong("disk_heatmaps", swap=True), "xy_swapped"), (wrong("disk_heatmaps", strict=True), "strict_rim"),
                      (wrong("disk_heatmaps", diameter=True), "diameter"), (wrong("disk_heatmaps", half=True), "half_pixel")],
    "decode_heatmaps": [(wrong("decode_heatmaps", first=True), "first_pixel"), (wrong("decode_heatmaps", swap=True), "row_col")],
    "pck": [(wrong("pck", count_invisible=True), "counts_invisible"), (wrong("pck", global_size=True), "global_normalizer"),
            (wrong("pck", strict=True), "strict_limit")],
}


def test_every_exercise_has_wrong_answers_listed():
    assert exercise_names(LECTURE) == REFERENCE  # notebook order
    assert set(WRONG) == set(REFERENCE)


@pytest.mark.parametrize("name", REFERENCE)
def test_solution_and_student_versions_pass(name):
    for fn in (solutions()[name], STUDENT[name]):
        result = check(name, fn)
        assert result.passed and result.points == result.max_points, result.message


@pytest.mark.parametrize("name", REFERENCE)
def test_course_lib_agrees_with_every_oracle_on_public_and_hidden_cases(name):
    # course_lib.pose is forbidden inside a student's answer, so compare it with the oracle directly
    exercise = get_exercise(name)
    for seed in (None, 987, 20240601):
        for case in exercise.cases(*case_generator(seed)):
            assert exercise.compare(exercise.expected(case), getattr(pose, name)(*case.args, **case.kwargs)) is None, case.label


@pytest.mark.parametrize("name", REFERENCE)
def test_hidden_cases_pass_too(name):
    for seed in (987, 20240601):
        assert check(name, solutions()[name], seed=seed).passed


@pytest.mark.parametrize("name,index", [(n, i) for n, fns in WRONG.items() for i in range(len(fns))])
def test_wrong_answers_fail_with_a_named_case_and_mistake(name, index, assert_rejected):
    fn, key = WRONG[name][index]
    result = assert_rejected(name, fn)
    assert result.diagnosis == key, result.message
    assert "lecture 08, section" in result.message


def test_the_mistakes_fail_on_the_cases_built_for_them(assert_rejected):
    assert "rim" in assert_rejected("disk_heatmaps", WRONG["disk_heatmaps"][1][0]).message
    assert "lecture example" in assert_rejected("decode_heatmaps", WRONG["decode_heatmaps"][0][0]).message
    assert "lecture example" in assert_rejected("pck", WRONG["pck"][0][0]).message
    assert "lecture example" in assert_rejected("pck", WRONG["pck"][1][0]).message


def test_worked_examples_hold():
    maps = pose.disk_heatmaps(torch.tensor([[5.0, 2.0]]), 5, 8, 2.0)
    assert int(maps.sum()) == 13 and pose.decode_heatmaps(maps).tolist() == [[5.0, 2.0]]
    assert pose.decode_argmax(maps).tolist() == [[5.0, 0.0]]  # the first maximal pixel: the disk's top
    pred, gt, threshold, sizes, visible = pck_example()
    assert float(pose.pck(pred, gt, threshold, sizes, visible)) == pytest.approx(0.8)
    assert float(pose.pck(pred, gt, threshold, sizes)) == pytest.approx(5 / 6)


def test_forbidden_course_lib_pose_is_caught():
    result = check("disk_heatmaps", lambda kp, h, w, r: pose.disk_heatmaps(kp, h, w, r))
    assert not result.passed and "course_lib.pose" in result.message


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize(
    "answer",
    [None, Liar(), "maps", torch.zeros(1, 1, 1), lambda right: torch.full_like(right, float("nan")),
     lambda right: right.to(torch.int32), lambda right: right.tolist(), lambda right: float(right.sum()),
     lambda right: (_ for _ in ()).throw(RuntimeError("boom"))],
    ids=["none", "liar", "str", "wrong-shape", "nan", "int32", "list", "float", "raises"],
)
def test_odd_answers_are_explained_not_crashing(name, answer):
    reference = solutions()[name]

    def fn(*args, **kwargs):
        return answer(reference(*args, **kwargs)) if callable(answer) else answer

    result = check(name, fn)
    assert not result.passed and result.message
    assert "expected" in result.message or "raised" in result.message


def test_a_stub_reports_not_implemented():
    def stub(*args):
        raise NotImplementedError()

    for name in REFERENCE:
        result = check(name, stub)
        assert result.status == "not implemented" and result.points == 0
