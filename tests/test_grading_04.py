"""Graders of lecture 04: a student's correct answer passes, the known mistakes and other wrong answers
fail with a message that names the failing case, every rule the texts state (one batch without
gradients, the image left unchanged, nothing left on the model's .grad, no gradient history, no call
of course_lib.visualize) is checked and explained in words, odd answers are explained, and the
hand-built models behave as the oracles assume."""
import warnings

import pytest
import torch

from course_lib import visualize
from course_lib.grading import check, exercise_names
from course_lib.grading.core import WRONG_DTYPE, case_generator, get_exercise
from course_lib.grading.visualize import LECTURE, _model
from odd_answers import Liar

REFERENCE = ["occlusion_map", "saliency_map", "class_visualization_step"]


# --- what a student might write -------------------------------------------------------------------

def occlusion(model, image, target, patch_size, stride, fill=0.0, *, grad=False):
    """A loop that builds the batch, as a student would start, and one forward pass (``grad``: with gradients on)."""
    _, height, width = image.shape
    rows, cols = (height - patch_size) // stride + 1, (width - patch_size) // stride + 1
    fill = torch.as_tensor(fill, dtype=image.dtype).reshape(-1, 1, 1)
    batch = image.repeat(rows * cols, 1, 1, 1)
    for i in range(rows):
        for j in range(cols):
            batch[i * cols + j, :, i * stride : i * stride + patch_size, j * stride : j * stride + patch_size] = fill
    with torch.set_grad_enabled(grad):
        return model(batch).softmax(-1)[:, target].view(rows, cols).detach()


def saliency(model, image, target):
    x = image.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x[None])[0, target], x)
    return grad.abs().amax(0)


def step(model, image, target, lr, l2=0.0):
    x = image.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x[None])[0, target] - l2 * (x ** 2).sum(), x)
    return (image + lr * grad / (grad.abs().mean() + 1e-8)).detach()


STUDENT = {"occlusion_map": occlusion, "saliency_map": saliency, "class_visualization_step": step}


def test_every_exercise_is_listed_in_notebook_order():
    assert exercise_names(LECTURE) == REFERENCE


@pytest.mark.parametrize("name", REFERENCE)
def test_a_student_loop_passes_and_course_lib_agrees_with_the_oracles(name, unwatched):
    result = check(name, STUDENT[name])
    assert result.passed and result.points == result.max_points, result.message
    for seed in (None, 987):
        assert unwatched(name, getattr(visualize, name), seed).passed


@pytest.mark.parametrize("name", REFERENCE)
def test_calling_course_lib_visualize_is_refused(name):
    result = check(name, getattr(visualize, name))
    assert not result.passed and result.points == 0
    assert "calls course_lib.visualize, which this exercise asks you not to use" in result.message


@pytest.mark.parametrize("name", REFERENCE)
def test_hidden_cases_pass_too(name):
    result = check(name, STUDENT[name], seed=987)
    assert result.passed, result.message


# --- the rules the texts state, each explained in words -------------------------------------------

def test_occlusion_must_run_one_batch_without_gradients():
    def per_position(model, image, target, patch_size, stride, fill=0.0):
        _, height, width = image.shape
        rows, cols = (height - patch_size) // stride + 1, (width - patch_size) // stride + 1
        out = torch.empty(rows, cols, dtype=image.dtype)
        for i in range(rows):
            for j in range(cols):
                x = image.clone()
                x[:, i * stride : i * stride + patch_size, j * stride : j * stride + patch_size] = torch.as_tensor(fill).reshape(-1, 1, 1)
                with torch.no_grad():
                    out[i, j] = model(x[None]).softmax(-1)[0, target]
        return out

    graded = check("occlusion_map", lambda *args, **kwargs: occlusion(*args, **kwargs, grad=True))
    assert not graded.passed and "but the model ran with gradients on" in graded.message
    graded = check("occlusion_map", per_position)
    assert not graded.passed and "expected one forward pass on a batch" in graded.message and "the model ran 36 times" in graded.message


def test_occlusion_fill_may_be_one_value_per_channel():
    def scalar_fill_only(model, image, target, patch_size, stride, fill=0.0):
        return occlusion(model, image, target, patch_size, stride, float(fill) if not isinstance(fill, torch.Tensor) else fill[0])

    graded = check("occlusion_map", scalar_fill_only)
    assert not graded.passed and "per channel" in graded.message
    cases = get_exercise("occlusion_map").cases(*case_generator())
    assert any(isinstance(case.kwargs["fill"], torch.Tensor) and case.kwargs["fill"].shape == (3,) for case in cases[:5])


def test_saliency_must_leave_the_image_and_the_model_alone():
    def backward(model, image, target):
        x = image.clone().requires_grad_(True)
        model(x[None])[0, target].backward()
        return x.grad.abs().amax(0)

    def on_the_image(model, image, target):
        image.requires_grad_(True)
        (grad,) = torch.autograd.grad(model(image[None])[0, target], image)
        return grad.abs().amax(0)

    graded = check("saliency_map", backward)
    assert not graded.passed and "gradients were left there" in graded.message
    graded = check("saliency_map", on_the_image)
    assert not graded.passed and "expected `image` unchanged" in graded.message


def test_class_visualization_step_returns_a_detached_new_image():
    def history(model, image, target, lr, l2=0.0):
        x = image.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x[None])[0, target] - l2 * (x ** 2).sum(), x)
        return x + lr * grad / (grad.abs().mean() + 1e-8)

    def in_place(model, image, target, lr, l2=0.0):
        return image.copy_(step(model, image, target, lr, l2))

    graded = check("class_visualization_step", history)
    assert not graded.passed and "expected a result without gradient history" in graded.message
    graded = check("class_visualization_step", in_place)
    assert not graded.passed and "expected `image` unchanged" in graded.message


@pytest.mark.parametrize("name", REFERENCE)
def test_a_wrong_dtype_is_said_first(name):
    result = check(name, lambda *args, **kwargs: STUDENT[name](*args, **kwargs).float())
    assert not result.passed
    assert result.message.splitlines()[0].startswith("Right values, wrong dtype on all"), result.message
    assert f"{WRONG_DTYPE}: expected float64, got float32" in result.message


def test_a_warning_inside_the_students_function_does_not_escape_the_check():
    def noisy(model, image, target):
        warnings.warn("a stray warning from the student's code")
        return saliency(model, image, target)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that reached the caller would raise here
        assert check("saliency_map", noisy).passed


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize(
    "answer",
    [None, Liar(), torch.zeros(1), "map", lambda shape: torch.full(shape, float("nan")),
     lambda shape: torch.zeros(shape, dtype=torch.int64), lambda shape: (_ for _ in ()).throw(RuntimeError("boom"))],
    ids=["none", "liar", "wrong-shape", "str", "nan", "int", "raises"],
)
def test_odd_answers_are_explained_not_crashing(name, answer):
    def fn(model, image, target, *args, **kwargs):
        if callable(answer):
            return answer(STUDENT[name](model, image, target, *args, **kwargs).shape)
        return answer

    result = check(name, fn)
    assert not result.passed and result.message
    assert "expected" in result.message or "raised" in result.message


def test_hidden_seed_keeps_the_worked_examples_first(monkeypatch):
    exercise = get_exercise("occlusion_map")
    public = exercise.cases(*case_generator())
    monkeypatch.setenv("COURSE_GRADING_SEED", "4242")
    secret = exercise.cases(*case_generator())
    assert [c.label.split(";")[1:] for c in public[:5]] == [c.label.split(";")[1:] for c in secret[:5]]
    assert [c.label for c in public[5:]] != [c.label for c in secret[5:]]


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
