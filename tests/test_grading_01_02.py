"""Graders of lectures 01-02: a correct answer passes, plausible wrong answers fail with a message
that names the failing case, and odd answers are explained rather than crashing the checker."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.grading import check, exercise_names
from course_lib.grading.core import case_generator, get_exercise
from odd_answers import Liar


def correct_output_size(size, kernel, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _unfold_conv(x, weight, bias=None, stride=1, padding=0, dilation=1, flip=False, ignore_stride=False):
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    if ignore_stride:
        sh = sw = 1
    kh, kw = weight.shape[2:]
    if flip:
        weight = weight.flip(2, 3)
    xp = F.pad(x, (padding,) * 4)
    win = xp.unfold(2, dilation * (kh - 1) + 1, sh).unfold(3, dilation * (kw - 1) + 1, sw)[..., ::dilation, ::dilation]
    out = torch.einsum("nchwkl,ockl->nohw", win, weight)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _field(layers, mode="right"):
    field, jump = 1, 1
    for k, s in layers:
        if mode == "after":
            jump *= s
        field += (k - 1) * jump
        if mode == "right":
            jump *= s
    return field


WRONG = {
    "conv_output_size": [
        lambda size, kernel, stride=1, padding=0, dilation=1: (size + 2 * padding - kernel) // stride,  # missing +1
        lambda size, kernel, stride=1, padding=0, dilation=1: math.ceil((size + 2 * padding - kernel) / stride) + 1,  # ceil
        lambda size, kernel, stride=1, padding=0, dilation=1: size - kernel + 1,  # ignores stride and padding
        lambda size, kernel, stride=1, padding=0, dilation=1: (size + padding - kernel) // stride + 1,  # one-sided padding
        lambda size, kernel, stride=1, padding=0, dilation=1: (size + 2 * padding - kernel) / stride + 1,  # float
    ],
    "conv2d": [
        lambda x, w, bias=None, stride=1, padding=0, dilation=1: _unfold_conv(x, w, bias, stride, padding, dilation, ignore_stride=True),
        lambda x, w, bias=None, stride=1, padding=0, dilation=1: _unfold_conv(x, w, bias, stride, 0, dilation),  # ignores padding
        lambda x, w, bias=None, stride=1, padding=0, dilation=1: _unfold_conv(x, w, bias, stride, padding, dilation, flip=True),  # true convolution
        lambda x, w, bias=None, stride=1, padding=0, dilation=1: _unfold_conv(x, w.transpose(2, 3).contiguous() if w.shape[2] == w.shape[3] else w, bias, stride, padding, dilation),  # swapped kernel axes
        lambda x, w, bias=None, stride=1, padding=0, dilation=1: _unfold_conv(x, w, None, stride, padding, dilation),  # forgets bias
    ],
    "conv_params": [
        lambda cin, cout, kernel, bias=True: cout * cin * (kernel if isinstance(kernel, int) else kernel[0]) ** 2,  # forgets bias
        lambda cin, cout, kernel, bias=True: cout * (kernel if isinstance(kernel, int) else kernel[0] * kernel[1]) ** 2 + cout * bias,  # forgets cin, squares
        lambda cin, cout, kernel, bias=True: cout * cin * (kernel if isinstance(kernel, int) else kernel[0] * kernel[1]) + cout * bias,  # kernel not squared
    ],
    "receptive_field": [
        lambda layers: sum(k for k, _ in layers) - len(layers) + 1,  # ignores strides
        lambda layers: _field(layers, "after"),  # multiplies the stride in too early
        lambda layers: math.prod(k for k, _ in layers),  # multiplies kernels
    ],
    "conv2d_weight_grad": [
        lambda x, g, k, stride=1, padding=0: torch.einsum("nohw,nchwkl->ockl", g, F.pad(x, (padding,) * 4).unfold(2, k, stride).unfold(3, k, stride)) / g[0, 0].numel(),  # mean
        lambda x, g, k, stride=1, padding=0: torch.einsum("nohw,nchwkl->ockl", g[:1], F.pad(x[:1], (padding,) * 4).unfold(2, k, stride).unfold(3, k, stride)),  # first image only
        lambda x, g, k, stride=1, padding=0: torch.einsum("nohw,nchwkl->ockl", g, F.pad(x, (padding,) * 4).unfold(2, k, 1).unfold(3, k, 1)[:, :, : g.shape[2], : g.shape[3]]),  # ignores stride
    ],
    "max_pool2d": [
        lambda x, kernel, stride=None, padding=0: F.pad(x, (padding,) * 4).unfold(2, kernel, stride or kernel).unfold(3, kernel, stride or kernel).amax((-2, -1)),  # zero padding
        lambda x, kernel, stride=None, padding=0: F.max_pool2d(x, kernel, 1, padding),  # default stride 1
        lambda x, kernel, stride=None, padding=0: F.avg_pool2d(x, kernel, stride, padding),  # average instead of max
    ],
    "avg_pool2d": [
        lambda x, kernel, stride=None, padding=0: F.avg_pool2d(x, kernel, stride, padding, count_include_pad=False),
        lambda x, kernel, stride=None, padding=0: F.avg_pool2d(x, kernel, kernel, padding),  # ignores stride
        lambda x, kernel, stride=None, padding=0: F.avg_pool2d(x, kernel, stride, padding, ceil_mode=True),  # ceil
    ],
    "max_pool2d_backward": [
        lambda g, x, kernel, stride=None: _avg_grad(g, x, kernel, stride),  # spreads the gradient evenly
        lambda g, x, kernel, stride=None: _last_winner_grad(g, x, kernel, stride),
        lambda g, x, kernel, stride=None: _assign_grad(g, x, kernel, stride),
    ],
}
WRONG["conv2d_naive"] = WRONG["conv2d"]


def _avg_grad(g, x, kernel, stride):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.avg_pool2d(x, kernel, stride), x, g)
    return grad


def _last_winner_grad(g, x, kernel, stride):
    # Ties and the "first maximum" rule: take the last maximum instead (flip, pool, flip back).
    flipped = x.flip(-1, -2).clone().requires_grad_(True)
    out = F.max_pool2d(flipped, kernel, stride)
    if out.shape != g.shape:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(out, flipped, g.flip(-1, -2))
    return grad.flip(-1, -2)


def _assign_grad(g, x, kernel, stride):
    # Writes instead of accumulating: overlapping windows lose all but one contribution.
    stride = stride or kernel
    _, idx = F.max_pool2d(x, kernel, stride, return_indices=True)
    grad = torch.zeros_like(x).flatten(2)
    grad.scatter_(2, idx.flatten(2), g.flatten(2))
    return grad.view_as(x)


def test_every_exercise_has_wrong_answers_listed():
    assert set(exercise_names("01_conv_arithmetic") + exercise_names("02_pooling")) == set(WRONG)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_reference_solution_passes(name):
    from course_lib import conv, pooling

    fn = getattr(conv, name, None) or getattr(pooling, name)
    result = check(name, fn)
    assert result.passed and result.points == result.max_points, result.message


@pytest.mark.parametrize("name,index", [(n, i) for n, fns in WRONG.items() for i in range(len(fns))])
def test_wrong_answers_fail_with_a_named_case(name, index, assert_rejected):
    assert_rejected(name, WRONG[name][index])


def test_student_written_solution_passes_on_hidden_cases():
    result = check("conv_output_size", correct_output_size, seed=987)
    assert result.passed, result.message


def test_hidden_seed_draws_other_cases(monkeypatch):
    ex = get_exercise("conv2d")
    public = ex.cases(*case_generator())
    monkeypatch.setenv("COURSE_GRADING_SEED", "31337")
    gen, hidden = case_generator()
    assert hidden
    secret = ex.cases(gen, hidden)
    assert [c.label for c in public[:3]] == [c.label for c in secret[:3]]  # the lecture's examples stay
    assert [c.label for c in public[3:]] != [c.label for c in secret[3:]]


@pytest.mark.parametrize("name", exercise_names())  # every lecture's exercises, not only 01-02
def test_stub_reports_not_implemented(name):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    result = check(name, stub)
    assert not result.passed and result.points == 0 and result.status == "not implemented"
    assert "not implemented" in result.message
    assert "not implemented" in result._repr_html_()


@pytest.mark.parametrize(
    "answer",
    [None, "five", Liar(), float("nan"), torch.tensor(5.0), [5], lambda *a: 5],
)
def test_odd_answers_are_explained_not_crashing(answer):
    result = check("conv_output_size", lambda *a, **k: answer)
    assert not result.passed
    assert "expected" in result.message


@pytest.mark.parametrize(
    "answer",
    [lambda x, w, **k: Liar(), lambda x, w, **k: torch.full((1,), float("nan")), lambda x, w, **k: F.conv2d(x, w).int(),
     lambda x, w, bias=None, stride=1, padding=0, dilation=1: F.conv2d(x, w, bias, stride, padding, dilation).fill_(float("nan")),
     lambda x, w, **k: (_ for _ in ()).throw(RuntimeError("boom"))],
)
def test_odd_tensor_answers_are_explained(answer):
    result = check("conv2d", answer)
    assert not result.passed and result.message


def test_non_callable_and_unknown_name():
    assert not check("conv2d", 42).passed
    with pytest.raises(ValueError, match="name"):
        check("no_such_exercise", lambda: 0)


def test_text_and_html_display():
    result = check("conv_params", lambda cin, cout, k, bias=True: 0)
    assert str(result).startswith("[FAIL] conv_params")
    assert "conv_params" in result._repr_html_() and "failed" in result._repr_html_()


def test_receptive_field_with_gaps_counts_the_span():
    # stride 2 after a 1-wide kernel leaves gaps; the field is still the whole span
    layers = [(7, 3), (2, 2), (1, 2), (4, 1), (5, 2)]
    exercise = get_exercise("receptive_field")
    from course_lib.grading.core import Case

    assert exercise.oracle(Case((layers,))) == 94
    from course_lib.conv import receptive_field

    for seed in (1, 2, 3, 4, 20240601):
        assert check("receptive_field", receptive_field, seed=seed).passed


def test_nbgrader_autograde_raises_on_failure(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="conv_params"):
        check("conv_params", lambda cin, cout, k, bias=True: 0)
    from course_lib.conv import conv_params

    assert check("conv_params", conv_params).passed
