"""Graders of lecture 05: course_lib and a student's straightforward versions pass; the classic mistakes
(freezing by module type, a head that keeps the old weights or has the wrong input size, a new head
without gradients, frozen BatchNorm layers left in training mode, a probe step with the wrong gradient)
fail with a message that names the failing case; odd answers are explained, not crashing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import transfer
from course_lib.grading import check, exercise_names
from course_lib.grading.core import Case, case_generator, get_exercise
from course_lib.grading.transfer import LECTURE
from odd_answers import Liar

NAMES = ["freeze", "replace_head", "fine_tuning_mode", "linear_probe_step"]


# --- what a student might write --------------------------------------------------------------------

def student_freeze(model, trainable=()):
    for name, parameter in model.named_parameters():
        parameter.requires_grad = any(name.startswith(prefix) for prefix in trainable)
    return model


def student_replace_head(model, num_classes):
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    old = model.get_submodule(last)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    parent, _, child = last.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def student_fine_tuning_mode(model):
    model.train()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
    return model


def student_probe_step(weight, bias, features, labels, lr):
    probabilities = torch.softmax(features @ weight.T + bias, dim=1)
    delta = (probabilities - F.one_hot(labels, num_classes=weight.shape[0]).to(weight.dtype)) / len(labels)
    return weight - lr * (delta.T @ features), bias - lr * delta.sum(dim=0)


STUDENT = {"freeze": student_freeze, "replace_head": student_replace_head,
           "fine_tuning_mode": student_fine_tuning_mode, "linear_probe_step": student_probe_step}
LIBRARY = {"freeze": transfer.freeze, "replace_head": transfer.replace_head, "fine_tuning_mode": transfer.fine_tuning_mode}


def test_every_exercise_is_listed_in_notebook_order():
    assert exercise_names(LECTURE) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_student_versions_pass(name):
    result = check(name, STUDENT[name])
    assert result.passed, result.message


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_course_lib_agrees_with_the_oracles_and_may_not_be_called(name, unwatched):
    for seed in (None, 77):
        result = unwatched(name, LIBRARY[name], seed)
        assert result.passed, result.message
    result = check(name, LIBRARY[name])
    assert not result.passed and result.points == 0 and "calls course_lib.transfer" in result.message


@pytest.mark.parametrize("name", NAMES)
def test_hidden_cases_pass_too(name):
    result = check(name, STUDENT[name], seed=99)
    assert result.passed, result.message


# --- the wrong versions the issue lists, and the other classic ones --------------------------------

def _by_type(model, trainable=()):
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad = isinstance(module, nn.Linear)
    return model


def _keeps_old_head(model, num_classes):
    head = model.get_submodule([n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1])
    head.out_features = num_classes
    head.weight = nn.Parameter(head.weight[:num_classes].detach().clone())
    if head.bias is not None:
        head.bias = nn.Parameter(head.bias[:num_classes].detach().clone())
    return model


def _wrong_input_size(model, num_classes):
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    old = model.get_submodule(name)
    parent, _, child = name.rpartition(".")
    new = nn.Linear(old.out_features, num_classes, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    setattr(model.get_submodule(parent), child, new)
    return model


def _no_requires_grad(model, num_classes):
    student_replace_head(model, num_classes)
    head = model.get_submodule([n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1])
    head.requires_grad_(any(p.requires_grad for n, p in model.named_parameters() if p is not head.weight and p is not head.bias))
    return model


def _bn_statistics_trained(model):
    return model.train()


WRONG = [
    ("freeze", _by_type, "by module type"),
    ("freeze", lambda model, trainable=(): [p.requires_grad_(not any(n.startswith(t) for t in trainable))
                                            for n, p in model.named_parameters()] and model, "inverted"),
    ("replace_head", _keeps_old_head, None),
    ("replace_head", _wrong_input_size, "wrong input size"),
    ("replace_head", _no_requires_grad, None),
    ("fine_tuning_mode", _bn_statistics_trained, "just model.train()"),
    ("linear_probe_step", lambda w, b, f, y, lr: student_probe_step(w, b, f, y, -lr), "gradient ascent"),
]


@pytest.mark.parametrize("name,fn,key", WRONG, ids=[f"{n}-{getattr(f, '__name__', 'lambda')}" for n, f, _ in WRONG])
def test_wrong_versions_are_rejected_and_named(name, fn, key, assert_rejected):
    result = assert_rejected(name, fn)
    if key is not None:
        assert result.diagnosis == key, result.message


def test_a_head_keeping_old_weights_is_told_it_is_not_fresh():
    result = check("replace_head", _keeps_old_head)
    assert not result.passed and "expected a freshly initialised layer" in result.message + "".join(str(r) for _, _, r in result.cases)


def test_a_new_head_without_gradients_is_caught_on_frozen_models():
    result = check("replace_head", _no_requires_grad)
    failing = [label for label, ok, _ in result.cases if not ok]
    assert failing and all("frozen" in label for label in failing), failing
    assert "requires_grad=False, expected True" in result.message


def test_frozen_batchnorm_in_training_mode_is_explained():
    result = check("fine_tuning_mode", _bn_statistics_trained)
    assert "expected eval mode" in result.message and "overwrites its running statistics" in result.message


def test_the_probe_step_may_not_use_autograd():
    def with_autograd(weight, bias, features, labels, lr):
        w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        F.cross_entropy(features @ w.T + b, labels).backward()
        return (w - lr * w.grad).detach(), (b - lr * b.grad).detach()

    result = check("linear_probe_step", with_autograd)
    assert not result.passed and "torch.autograd.backward" in result.message and "asks you not to use" in result.message


def test_worked_examples_hold_exactly():
    first = get_exercise("linear_probe_step").cases(*case_generator())[0]
    weight, bias, _ = get_exercise("linear_probe_step").oracle(first)
    assert torch.equal(weight, torch.tensor([[0.5, 1.0], [-0.5, -1.0]], dtype=torch.float64))
    assert torch.equal(bias, torch.tensor([0.5, -0.5], dtype=torch.float64))
    freeze_cases = get_exercise("freeze").cases(*case_generator())
    expected = get_exercise("freeze").oracle(freeze_cases[1])  # MobileNetV2, ("classifier",)
    assert expected["trainable count"] == 1280 * 1000 + 1000 and expected["trainable names"] == ["classifier.1.bias", "classifier.1.weight"]


# --- odd answers ----------------------------------------------------------------------------------

ODD = [(name, answer) for name in NAMES for answer in (None, Liar())] + [
    ("freeze", "model"), ("linear_probe_step", float("nan")), ("linear_probe_step", (float("nan"), None))]


@pytest.mark.parametrize("name,answer", ODD)
def test_odd_answers_are_explained_not_crashing(name, answer):
    result = check(name, lambda *args, **kwargs: answer)
    assert not result.passed and result.message
    assert "expected" in result.message or "raised" in result.message or "return" in result.message


@pytest.mark.parametrize("name", NAMES)
def test_exceptions_are_reported(name):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    result = check(name, broken)
    assert not result.passed and "raised RuntimeError: boom" in result.message


def test_probe_step_answers_of_the_wrong_shape_or_dtype():
    result = check("linear_probe_step", lambda w, b, f, y, lr: tuple(t.float() for t in student_probe_step(w, b, f, y, lr)))
    assert not result.passed and "wrong dtype" in result.message
    result = check("linear_probe_step", lambda w, b, f, y, lr: student_probe_step(w, b, f, y, lr)[0])
    assert not result.passed and "pair" in result.message
    result = check("linear_probe_step", lambda w, b, f, y, lr: (student_probe_step(w, b, f, y, lr)[0].flatten(), b))
    assert not result.passed and "shape" in result.message


def test_a_model_returned_but_not_changed_in_place_is_explained():
    import copy

    result = check("freeze", lambda model, trainable=(): student_freeze(copy.deepcopy(model), trainable))
    assert not result.passed and "expected the model you were given back" in result.message


def test_cases_are_plain_data_and_hidden_seeds_keep_the_worked_examples():
    from course_lib.grading import serialize

    for name in NAMES:
        exercise = get_exercise(name)
        public = exercise.cases(*case_generator())
        secret = exercise.cases(*case_generator(7))
        for case in public + secret:
            assert isinstance(case, Case)
            assert serialize.loads(serialize.dumps([case.args, case.kwargs])) is not None
        worked = sum(1 for a, b in zip(public, secret) if a.label == b.label)
        assert 2 <= worked < len(public), name
