"""Graders of lectures 01-02: a straightforward student answer passes; every known mistake and other
plausible wrong answers fail with a message that names the failing case; ties, forbidden calls and
dtypes are enforced as the exercise texts say; odd answers are explained rather than crashing."""
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.grading import check, exercise_names
from course_lib.grading.conv import _correlate
from course_lib.grading.core import Case, case_generator, get_exercise
from odd_answers import Liar

ROOT = Path(__file__).resolve().parent.parent
LECTURES = ("01_conv_arithmetic", "02_pooling")
NAMES = [name for lecture in LECTURES for name in exercise_names(lecture)]
SEEDS = (None, 1, 2, 3)


# --- straightforward student answers, written from the exercise texts ------------------------------

def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_naive(x, weight, bias=None, stride=1, padding=0, dilation=1):
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    o, _, kh, kw = weight.shape
    xp = torch.zeros(x.shape[0], x.shape[1], x.shape[2] + 2 * padding, x.shape[3] + 2 * padding, dtype=x.dtype)
    xp[:, :, padding: padding + x.shape[2], padding: padding + x.shape[3]] = x
    ho = conv_output_size(x.shape[2], kh, sh, padding, dilation)
    wo = conv_output_size(x.shape[3], kw, sw, padding, dilation)
    out = torch.zeros(x.shape[0], o, ho, wo, dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            window = xp[:, :, i * sh: i * sh + dilation * (kh - 1) + 1: dilation, j * sw: j * sw + dilation * (kw - 1) + 1: dilation]
            out[:, :, i, j] = (window[:, None] * weight[None]).sum((2, 3, 4))
    return out if bias is None else out + bias[None, :, None, None]


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """The grader's own correct unfold-and-einsum convolution (the base its conv mistakes bend), as a student answer."""
    return _correlate(x, weight, bias, stride, padding, dilation)


def conv_params(in_channels, out_channels, kernel, bias=True):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return out_channels * (in_channels * kh * kw + int(bias))


def receptive_field(layers):
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def conv2d_weight_grad(x, grad_out, kernel_size, stride=1, padding=0):
    k = kernel_size
    xp = F.pad(x, (padding,) * 4)
    ho, wo = grad_out.shape[2:]
    grad = torch.zeros(grad_out.shape[1], x.shape[1], k, k, dtype=x.dtype)
    for a in range(k):  # loops over the taps only
        for b in range(k):
            seen = xp[:, :, a: a + stride * (ho - 1) + 1: stride, b: b + stride * (wo - 1) + 1: stride]
            grad[:, :, a, b] = torch.einsum("nohw,nchw->oc", grad_out, seen)
    return grad


def max_pool2d(x, kernel, stride=None, padding=0):
    stride = stride or kernel
    xp = F.pad(x, (padding,) * 4, value=-math.inf)
    return xp.unfold(2, kernel, stride).unfold(3, kernel, stride).amax((-2, -1))


def avg_pool2d(x, kernel, stride=None, padding=0):
    stride = stride or kernel
    return F.pad(x, (padding,) * 4).unfold(2, kernel, stride).unfold(3, kernel, stride).mean((-2, -1))


def max_pool2d_backward(grad_out, x, kernel, stride=None):
    stride = stride or kernel
    grad = torch.zeros_like(x, dtype=grad_out.dtype)
    for i in range(grad_out.shape[2]):
        for j in range(grad_out.shape[3]):
            window = x[:, :, i * stride: i * stride + kernel, j * stride: j * stride + kernel].flatten(2)
            first = window.argmax(-1)  # the first maximum in row-major order
            for n in range(x.shape[0]):
                for c in range(x.shape[1]):
                    a, b = divmod(int(first[n, c]), kernel)
                    grad[n, c, i * stride + a, j * stride + b] += grad_out[n, c, i, j]
    return grad


STUDENT = {fn.__name__: fn for fn in (conv_output_size, conv2d_naive, conv2d, conv_params, receptive_field,
                                      conv2d_weight_grad, max_pool2d, avg_pool2d, max_pool2d_backward)}


def test_every_exercise_has_a_student_answer():
    assert set(STUDENT) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", SEEDS)
def test_a_student_answer_passes_public_and_hidden_cases(name, seed):
    result = check(name, STUDENT[name], seed=seed)
    assert result.passed and result.points == result.max_points, result.message


# --- wrong answers ------------------------------------------------------------------------------------

def _transposed_kernel(x, weight, bias=None, stride=1, padding=0, dilation=1):
    return conv2d(x, weight.transpose(2, 3), bias, stride, padding, dilation) if weight.shape[2] == weight.shape[3] else \
        conv2d(x, weight, bias, stride, padding, dilation)


OTHER_WRONG = {  # plausible wrong answers that are not (or not only) one known mistake
    "conv_output_size": [lambda size, kernel, stride=1, padding=0, dilation=1: (size - kernel) // stride + 1],
    "conv2d": [_transposed_kernel, lambda x, w, bias=None, stride=1, padding=0, dilation=1: conv2d(x, w, bias, stride, padding, dilation).float()],
    "conv2d_naive": [lambda x, w, bias=None, stride=1, padding=0, dilation=1: conv2d_naive(x, w, bias, stride if isinstance(stride, int) else stride[0], padding, dilation)],
    "max_pool2d": [lambda x, kernel, stride=None, padding=0: avg_pool2d(x, kernel, stride, padding)],
    "max_pool2d_backward": [lambda g, x, kernel, stride=None: max_pool2d_backward(g, x, kernel, stride).flip(-1)],
}


@pytest.mark.parametrize("name,index", [(n, i) for n, fns in OTHER_WRONG.items() for i in range(len(fns))])
def test_other_wrong_answers_fail_with_a_named_case(name, index, assert_rejected):
    assert_rejected(name, OTHER_WRONG[name][index])


def test_a_diagnosis_reads_as_one_sentence_under_the_failure():
    result = check("conv_output_size", lambda size, kernel, stride=1, padding=0, dilation=1: conv_output_size(size, kernel, stride, padding, dilation) - 1)
    first, *rest = result.message.splitlines()
    assert first.endswith("cases failed. First failure, for conv_output_size(7x7 input, 3x3 filter, stride 1 (lecture)):")
    assert rest[-1] == next(m.message for m in get_exercise("conv_output_size").mistakes if m.key == "no + 1")
    assert "without the + 1" in rest[-1] and "section 'How big is the output?'" in rest[-1]


# --- what the texts state is what the checks enforce (each failed before) --------------------------

def test_conv2d_naive_is_graded_on_the_stride_pairs_its_text_announces():
    exercise = get_exercise("conv2d_naive")
    assert exercise.forms["stride"] == ("int", "(int, int)")
    pairs = [c for c in exercise.cases(*case_generator()) if isinstance(c.kwargs.get("stride"), tuple)]
    assert pairs, "no public case passes an (sh, sw) stride"
    text = "\n".join(c.source for c in nbformat.read(ROOT / "exercises" / "01_conv_arithmetic.ipynb", 4).cells)
    assert "`stride` is an int or an `(sh, sw)` pair" in text


@pytest.mark.parametrize("wrong, words", [
    (lambda g, x, kernel, stride=None: _autograd_amax(g, x, kernel, stride), "splits ties"),
    (lambda g, x, kernel, stride=None: max_pool2d_backward(g.flip(-1, -2), x.flip(-1, -2), kernel, stride).flip(-1, -2), "last maximum"),
])
def test_ties_in_max_pool_backward_go_to_the_first_maximum(wrong, words):
    result = check("max_pool2d_backward", wrong)
    assert not result.passed and "hold their maximum two or more times" in result.message
    if words == "splits ties":  # autograd through amax shares a tied gradient: exactly the known mistake
        assert result.diagnosis == words


def _autograd_amax(g, x, kernel, stride):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(max_pool2d(x, kernel, stride), x, g)
    return grad


def test_max_pool_gradient_of_a_tied_window_lands_on_its_first_maximum():
    exercise = get_exercise("max_pool2d_backward")
    tied = next(c for c in exercise.cases(*case_generator()) if "hold their maximum" in c.label)
    grad = exercise.expected(tied)[0, 0]
    assert grad[0, 0] == 1.0 and grad[0, 1] == 0.0  # 3 at (0, 0) and (0, 1): the first wins
    assert grad[0, 3] == -2.0 and grad[1, 2] == 0.0  # 5 at (0, 3) and (1, 2): row-major order


@pytest.mark.parametrize("name, cheat", [
    ("conv2d_naive", lambda x, w, bias=None, stride=1, padding=0, dilation=1: F.conv2d(x, w, bias, stride, padding, dilation)),
    ("conv2d", lambda x, w, bias=None, stride=1, padding=0, dilation=1: torch.conv2d(x, w, bias, stride, padding, dilation)),
    ("conv2d", lambda x, w, bias=None, stride=1, padding=0, dilation=1: _layer(x, w, bias, stride, padding, dilation)),
    ("conv2d", lambda *args, **kwargs: __import__("course_lib.conv").conv.conv2d(*args, **kwargs)),
    ("conv2d_weight_grad", lambda x, g, k, stride=1, padding=0: torch.nn.grad.conv2d_weight(x, (g.shape[1], x.shape[1], k, k), g, stride, padding)),
    ("conv2d_weight_grad", lambda x, g, k, stride=1, padding=0: _autograd_conv(x, g, k, stride, padding)),
    ("max_pool2d", lambda x, kernel, stride=None, padding=0: F.max_pool2d(x, kernel, stride, padding)),
    ("max_pool2d", lambda x, kernel, stride=None, padding=0: torch.nn.MaxPool2d(kernel, stride, padding)(x)),
    ("max_pool2d", lambda x, kernel, stride=None, padding=0: torch.max_pool2d(x, kernel, stride or kernel, padding)),
    ("avg_pool2d", lambda x, kernel, stride=None, padding=0: F.avg_pool2d(x, kernel, stride, padding)),
    ("avg_pool2d", lambda x, kernel, stride=None, padding=0: __import__("course_lib.pooling").pooling.avg_pool2d(x, kernel, stride, padding)),
    ("max_pool2d_backward", lambda g, x, kernel, stride=None: _autograd_pool(g, x, kernel, stride)),
    ("max_pool2d_backward", lambda g, x, kernel, stride=None: __import__("course_lib.pooling").pooling.max_pool2d_backward(g, x, kernel, stride)),
])
def test_forbidden_calls_fail_every_case_and_say_why(name, cheat):
    result = check(name, cheat)
    assert not result.passed and result.points == 0, result.message
    assert "which this exercise asks you not to use" in result.message


def _layer(x, w, bias, stride, padding, dilation):
    layer = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride, padding, dilation, bias=bias is not None, dtype=x.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer(x).detach()


def _autograd_conv(x, g, k, stride, padding):
    weight = torch.zeros(g.shape[1], x.shape[1], k, k, dtype=x.dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(F.conv2d(x, weight, stride=stride, padding=padding), weight, g)
    return grad


def _autograd_pool(g, x, kernel, stride):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.max_pool2d(x, kernel, stride), x, g)
    return grad


def test_exercises_without_forbidden_calls_may_use_the_library():
    from course_lib import conv

    for name in ("conv_output_size", "conv_params", "receptive_field"):
        assert not get_exercise(name).forbidden
        assert check(name, getattr(conv, name)).passed


@pytest.mark.parametrize("answer", [lambda *a, **k: np.int64(conv_output_size(*a, **k)),
                                    lambda *a, **k: torch.tensor(conv_output_size(*a, **k)),
                                    lambda *a, **k: torch.tensor(conv_output_size(*a, **k), dtype=torch.int32)])
def test_integer_like_sizes_are_all_accepted(answer):
    assert check("conv_output_size", answer).passed


def test_a_float_size_is_rejected_with_advice():
    result = check("conv_output_size", lambda *a, **k: float(conv_output_size(*a, **k)))
    assert not result.passed and "return a Python int or a 0-d integer tensor" in result.message


def test_a_right_convolution_in_the_wrong_dtype_is_told_so_first():
    result = check("conv2d", lambda *a, **k: conv2d(*a, **k).float())
    first = result.message.splitlines()[0]
    assert first.startswith("Right values, wrong dtype on all") and "float64" in first, result.message
    result = check("max_pool2d_backward", lambda g, x, kernel, stride=None: max_pool2d_backward(g, x, kernel, stride).float())
    assert result.message.startswith("Right values, wrong dtype"), result.message


# --- plumbing ----------------------------------------------------------------------------------------

def test_hidden_seed_draws_other_cases(monkeypatch):
    ex = get_exercise("conv2d")
    public = ex.cases(*case_generator())
    monkeypatch.setenv("COURSE_GRADING_SEED", "31337")
    gen, hidden = case_generator()
    assert hidden
    secret = ex.cases(gen, hidden)
    assert [c.label for c in public[:5]] == [c.label for c in secret[:5]]  # the lecture's and the named cases stay
    assert [c.label for c in public[5:]] != [c.label for c in secret[5:]]


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
    [lambda x, w, **k: Liar(), lambda x, w, **k: torch.full((1,), float("nan")), lambda x, w, **k: conv2d(x, w).int(),
     lambda x, w, bias=None, stride=1, padding=0, dilation=1: conv2d(x, w, bias, stride, padding, dilation).fill_(float("nan")),
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
    assert get_exercise("receptive_field").oracle(Case((layers,))) == 94 == receptive_field(layers)
    for seed in (1, 2, 3, 4, 20240601):
        assert check("receptive_field", receptive_field, seed=seed).passed

