"""Graders of lecture 04: a student's correct answer passes, plausible wrong answers fail with a message
that names the failing case, odd answers are explained, and the hand-built models behave as the
oracles assume."""
import pytest
import torch

from course_lib import visualize
from course_lib.grading import check, exercise_names
from course_lib.grading.core import case_generator, get_exercise
from course_lib.grading.visualize import LECTURE, _model
from odd_answers import Liar

REFERENCE = ["occlusion_map", "saliency_map", "class_visualization_step"]


# --- what a student might write -------------------------------------------------------------------

def occlusion(model, image, target, patch_size, stride, fill=0.0, *, rows_off=0, ignore_stride=False,
              ignore_fill=False, output="prob", transpose=False):
    """A loop over positions, as a student would start, with switches for the usual mistakes."""
    stride = 1 if ignore_stride else stride
    _, height, width = image.shape
    rows, cols = (height - patch_size) // stride + 1 - rows_off, (width - patch_size) // stride + 1 - rows_off
    batch = image.repeat(rows * cols, 1, 1, 1)
    for i in range(rows):
        for j in range(cols):
            a, b = (j, i) if transpose else (i, j)
            batch[i * cols + j, :, a * stride : a * stride + patch_size, b * stride : b * stride + patch_size] = 0.0 if ignore_fill else fill
    with torch.no_grad():
        logits = model(batch)
    scores = {"prob": logits.softmax(-1), "logit": logits, "logprob": logits.log_softmax(-1)}[output]
    return scores[:, target].view(rows, cols)


def saliency(model, image, target, *, reduce="absmax", score="logit"):
    x = image.clone().requires_grad_(True)
    logits = model(x[None])
    value = {"logit": logits, "prob": logits.softmax(-1), "logprob": logits.log_softmax(-1)}[score][0, target]
    (grad,) = torch.autograd.grad(value, x)
    return {"absmax": grad.abs().amax(0), "signed": grad.amax(0), "sum": grad.abs().sum(0), "mean": grad.abs().mean(0)}[reduce]


def step(model, image, target, lr, l2=0.0, *, normalise="mean", l2_sign=-1.0, direction=1.0, l2_factor=2.0, score="logit"):
    x = image.clone().requires_grad_(True)
    logits = model(x[None])
    value = logits.softmax(-1)[0, target] if score == "prob" else logits[0, target]
    (grad,) = torch.autograd.grad(value, x)
    grad = grad + l2_sign * l2_factor * l2 * image
    scale = {"mean": grad.abs().mean() + 1e-8, "max": grad.abs().max() + 1e-8, "norm": grad.norm() + 1e-8, "none": 1.0}[normalise]
    return image + direction * lr * grad / scale


WRONG = {
    "occlusion_map": [
        lambda *a, **k: occlusion(*a, **k, output="logit"),  # logits, not probabilities
        lambda *a, **k: occlusion(*a, **k, output="logprob"),  # log-probabilities
        lambda *a, **k: occlusion(*a, **k, rows_off=1),  # range(H - patch): misses the last row and column
        lambda *a, **k: occlusion(*a, **k, ignore_stride=True),
        lambda *a, **k: occlusion(*a, **k, ignore_fill=True),  # always occludes with zeros
        lambda *a, **k: occlusion(*a, **k, transpose=True),  # rows and columns swapped
    ],
    "saliency_map": [
        lambda *a: saliency(*a, reduce="signed"),  # no absolute value
        lambda *a: saliency(*a, reduce="sum"),  # sum over channels instead of max
        lambda *a: saliency(*a, reduce="mean"),
        lambda *a: saliency(*a, score="prob"),  # gradient of the softmax probability
        lambda *a: saliency(*a, score="logprob"),  # gradient of the log-probability
    ],
    "class_visualization_step": [
        lambda *a, **k: step(*a, **k, normalise="none"),  # no normalisation
        lambda *a, **k: step(*a, **k, normalise="max"),  # normalised by the largest gradient
        lambda *a, **k: step(*a, **k, l2_sign=1.0),  # rewards large pixels instead of penalising them
        lambda *a, **k: step(*a, **k, direction=-1.0),  # gradient descent
        lambda *a, **k: step(*a, **k, l2_factor=1.0),  # d/dx of l2 * x^2 without the 2
        lambda *a, **k: step(*a, **k, score="prob"),  # ascends the probability, not the logit
    ],
}


def test_every_exercise_has_wrong_answers_listed():
    assert exercise_names(LECTURE) == REFERENCE  # notebook order
    assert set(WRONG) == set(REFERENCE)


@pytest.mark.parametrize("name", REFERENCE)
def test_course_lib_and_a_student_loop_pass(name):
    result = check(name, getattr(visualize, name))
    assert result.passed and result.points == result.max_points, result.message
    student = {"occlusion_map": occlusion, "saliency_map": saliency, "class_visualization_step": step}[name]
    assert check(name, student).passed, check(name, student).message


@pytest.mark.parametrize("name", REFERENCE)
def test_hidden_cases_pass_too(name):
    result = check(name, getattr(visualize, name), seed=987)
    assert result.passed, result.message


@pytest.mark.parametrize("name,index", [(n, i) for n, fns in WRONG.items() for i in range(len(fns))])
def test_wrong_answers_fail_with_a_named_case(name, index, assert_rejected):
    assert_rejected(name, WRONG[name][index])


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize(
    "answer",
    [None, Liar(), torch.zeros(1), "map", lambda shape: torch.full(shape, float("nan")),
     lambda shape: torch.zeros(shape, dtype=torch.int64), lambda shape: (_ for _ in ()).throw(RuntimeError("boom"))],
    ids=["none", "liar", "wrong-shape", "str", "nan", "int", "raises"],
)
def test_odd_answers_are_explained_not_crashing(name, answer):
    def fn(model, image, *args, **kwargs):
        shape = {"occlusion_map": None, "saliency_map": image.shape[1:], "class_visualization_step": image.shape}[name]
        if callable(answer):
            return answer(shape if shape is not None else visualize.occlusion_map(model, image, *args, **kwargs).shape)
        return answer

    result = check(name, fn)
    assert not result.passed and result.message
    assert "expected" in result.message or "raised" in result.message



def test_hidden_seed_keeps_the_worked_examples_first(monkeypatch):
    exercise = get_exercise("occlusion_map")
    public = exercise.cases(*case_generator())
    monkeypatch.setenv("COURSE_GRADING_SEED", "4242")
    secret = exercise.cases(*case_generator())
    assert [c.label.split(";")[1:] for c in public[:4]] == [c.label.split(";")[1:] for c in secret[:4]]
    assert [c.label for c in public[4:]] != [c.label for c in secret[4:]]


def test_region_model_sees_only_its_region():
    """The oracles assume the region model's target logit ignores every pixel outside its region."""
    for name in REFERENCE:
        for case in get_exercise(name).cases(*case_generator()):
            spec, image = case.args[:2]
            if spec["kind"] != "region":
                continue
            model = _model(spec, image.dtype)
            h, w = spec["weight"].shape[-2:]
            outside = torch.ones_like(image, dtype=torch.bool)
            outside[:, spec["top"] : spec["top"] + h, spec["left"] : spec["left"] + w] = False
            changed = torch.where(outside, image + 5.0, image)
            with torch.no_grad():
                torch.testing.assert_close(model(changed[None]), model(image[None]), rtol=0, atol=0)
