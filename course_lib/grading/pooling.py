"""Exercises of lecture 02 (pooling), checked against torch's pooling and autograd.

Inputs are ``[N, C, H, W]``. The cases include windows whose maximum is tied (to pin down "the first
maximum in row-major order"), all-negative inputs with padding (where zeros would win a max), and
strides that differ from the kernel. The classic wrong versions (:class:`~.core.Mistake`) are written
with ``Tensor.unfold``, since they run under the same watch as a student's code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import Case, Exercise, Mistake, register, rand_dtype, rand_int

LECTURE = "02_pooling"
EXAMPLE_SECTION = "(lecture 02, section 'The worked example')"
GRADIENT_SECTION = "(lecture 02, section 'The gradient routes through the winner')"
SIZE_SECTION = "(lecture 01, section 'How big is the output?')"
MAX_FORBIDDEN = ("torch.nn.functional.max_pool2d", "torch.nn.functional.max_pool2d_with_indices", "torch.max_pool2d",
                 "course_lib.pooling")

SLIDE_SLICE = torch.tensor([[1.0, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]).view(1, 1, 4, 4)
# Every 2x2 window of this slice holds its maximum twice (or four times): only the first one wins.
TIED_SLICE = torch.tensor([[3.0, 3, 1, 5], [1, 2, 5, 0], [4, 1, 2, 2], [0, 4, 2, 2]]).view(1, 1, 4, 4)


def _pool_cases(with_padding):
    def cases(gen, hidden):
        def randn(*shape, dtype=torch.float64):
            return torch.randn(*shape, generator=gen, dtype=dtype)

        out = [
            Case((SLIDE_SLICE, 2), {"stride": 2}, label="the lecture's 4x4 slice, 2x2 windows, stride 2"),
            Case((SLIDE_SLICE, 2), {"stride": None}, label="the lecture's 4x4 slice, 2x2 windows, stride=None (= kernel)"),
            Case((randn(2, 3, 7, 8), 2), {"stride": 3}, label="[2, 3, 7, 8] input, 2x2 windows, stride 3 (gaps between windows)"),
            Case((randn(1, 2, 6, 6) + 0.3, 3), {"stride": 1}, label="[1, 2, 6, 6] input, 3x3 windows overlapping at stride 1"),
        ]
        if with_padding:
            out += [
                Case((-1 - randn(2, 2, 5, 6).abs(), 3), {"stride": 2, "padding": 1},
                     label="[2, 2, 5, 6] all-negative input, 3x3 windows, stride 2, padding 1"),
                Case((randn(1, 3, 6, 5), 2), {"padding": 1}, label="[1, 3, 6, 5] input, 2x2 windows, default stride, padding 1"),
            ]
        while len(out) < 14:
            dtype = rand_dtype(gen)
            n, c, h, w = rand_int(gen, 1, 3), rand_int(gen, 1, 4), rand_int(gen, 2, 13), rand_int(gen, 2, 13)
            kernel = rand_int(gen, 1, 4)
            if kernel > min(h, w):
                continue
            kwargs = {}
            choice = rand_int(gen, 0, 2)
            if choice:  # sometimes the default stride (= kernel), sometimes overlapping or gapped windows
                kwargs["stride"] = rand_int(gen, 1, 4)
            if with_padding and rand_int(gen, 0, 1):
                kwargs["padding"] = rand_int(gen, 0, kernel // 2)
            # Negative values make "padding with zeros" visible in max pooling.
            x = randn(n, c, h, w, dtype=dtype) - 0.5
            out.append(Case((x, kernel), kwargs))
        return out

    return cases


def _windows(x, kernel, stride, padding=0, value=0.0):
    """``[N, C, Ho, Wo, k * k]``: every window of ``x`` padded with ``value``, taps in row-major order."""
    stride = kernel if stride is None else stride
    xp = F.pad(x, (padding,) * 4, value=value) if padding else x
    windows = xp.unfold(2, kernel, stride).unfold(3, kernel, stride)
    return windows.reshape(*windows.shape[:4], kernel * kernel)


def _pool_mistake(reduce, bend):
    def pool(x, kernel, stride=None, padding=0):
        stride, padding, value = bend(kernel, stride, padding)
        return reduce(_windows(x, kernel, stride, padding, value), kernel)

    return pool


def _max(windows, kernel):
    return windows.amax(-1)


def _mean(windows, kernel):
    return windows.mean(-1)


def _excludes_padding(x, kernel, stride=None, padding=0):
    windows = _windows(x, kernel, stride, padding)
    mask = _windows(torch.ones_like(x), kernel, stride, padding)
    return windows.sum(-1) / mask.sum(-1)


INF = float("-inf")
POOL_FORMS = {"x": ("tensor float32", "tensor float64"), "kernel": ("int",), "stride": ("int", "None"), "padding": ("int",)}

register(Exercise(
    "max_pool2d", LECTURE, 2, _pool_cases(True), lambda case: F.max_pool2d(*case.args, **case.kwargs),
    params=("x", "kernel", "stride", "padding"), forms=POOL_FORMS, forbidden=MAX_FORBIDDEN,
    mistakes=(
        Mistake("zero padding", _pool_mistake(_max, lambda k, s, p: (s, p, 0.0)),
                f"Your maxima differ only where a window covers padding: zeros padded in win over negative inputs, so pad with -inf, which never wins {EXAMPLE_SECTION}."),
        Mistake("ignores padding", _pool_mistake(_max, lambda k, s, p: (s, 0, INF)),
                f"Your output is what you get without padding: pad `padding` cells on every side first, so the output grows as for a convolution {SIZE_SECTION}."),
        Mistake("default stride 1", _pool_mistake(_max, lambda k, s, p: (1 if s is None else s, p, INF)),
                f"Your output is wrong only when stride is None: then the stride equals the kernel, so windows do not overlap {EXAMPLE_SECTION}."),
        Mistake("ignores stride", _pool_mistake(_max, lambda k, s, p: (k, p, INF)),
                f"Your output is right only when the stride equals the kernel: the window moves `stride` cells at a time {SIZE_SECTION}."),
    ),
))

register(Exercise(
    "avg_pool2d", LECTURE, 2, _pool_cases(True), lambda case: F.avg_pool2d(*case.args, **case.kwargs),
    params=("x", "kernel", "stride", "padding"), forms=POOL_FORMS,
    forbidden=("torch.nn.functional.avg_pool2d", "course_lib.pooling"),
    mistakes=(
        Mistake("excludes padding", _excludes_padding,
                f"Your means differ only where a window covers padding: you divide by the real cells only, but the padded zeros count too (divide by kernel * kernel) {EXAMPLE_SECTION}."),
        Mistake("ignores padding", _pool_mistake(_mean, lambda k, s, p: (s, 0, 0.0)),
                f"Your output is what you get without padding: pad `padding` zeros on every side first {SIZE_SECTION}."),
        Mistake("default stride 1", _pool_mistake(_mean, lambda k, s, p: (1 if s is None else s, p, 0.0)),
                f"Your output is wrong only when stride is None: then the stride equals the kernel, so windows do not overlap {EXAMPLE_SECTION}."),
        Mistake("ignores stride", _pool_mistake(_mean, lambda k, s, p: (k, p, 0.0)),
                f"Your output is right only when the stride equals the kernel: the window moves `stride` cells at a time {SIZE_SECTION}."),
    ),
))


# --- max_pool2d_backward ------------------------------------------------------------------------

def _backward_cases(gen, hidden):
    def randn(*shape, dtype=torch.float64):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    def grad_for(x, kernel, stride=None):
        return randn(*F.max_pool2d(x, kernel, stride).shape, dtype=x.dtype)

    # Small integers tie often: each window must send its gradient to its first maximum only.
    ties = torch.randint(0, 3, (2, 2, 6, 7), generator=gen).double()
    out = [
        Case((torch.ones(1, 1, 2, 2), SLIDE_SLICE, 2), label="the lecture's 4x4 slice, output gradient all ones"),
        Case((torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]]), TIED_SLICE, 2),
             label="a 4x4 slice whose 2x2 windows each hold their maximum two or more times"),
        Case((torch.ones(1, 1, 3, 3), torch.ones(1, 1, 4, 4), 2), {"stride": 1},
             label="an all-ones 4x4 slice (every tap ties), 2x2 windows at stride 1"),
        Case((grad_for(ties, 3, 1), ties, 3), {"stride": 1},
             label="[2, 2, 6, 7] input of small integers (many ties), 3x3 windows overlapping at stride 1"),
        Case((grad_for(ties, 2), ties, 2), {"stride": None}, label="[2, 2, 6, 7] input of small integers, 2x2 windows, stride=None"),
    ]
    # Overlapping windows: a local maximum wins several windows and must collect every gradient.
    x = randn(2, 2, 7, 7)
    out.append(Case((grad_for(x, 3, 1), x, 3), {"stride": 1}, label="overlapping 3x3 windows at stride 1 on a [2, 2, 7, 7] input"))
    for case in _pool_cases(False)(gen, hidden)[4:]:
        x, kernel = case.args
        out.append(Case((grad_for(x, kernel, case.kwargs.get("stride")), x, kernel), dict(case.kwargs)))
    return out


def _backward_oracle(case):
    grad_out, x, kernel = case.args
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.max_pool2d(x, kernel, **case.kwargs), x, grad_out)
    return grad


def _route(grad_out, x, kernel, stride, share):
    """Send each output's gradient to the taps of its window in the proportions ``share(window)``
    gives (``[..., k * k]``), adding up where windows overlap."""
    stride = kernel if stride is None else stride
    n, c, h, w = x.shape
    windows = _windows(x, kernel, stride)
    ho, wo = windows.shape[2:4]
    taps = torch.arange(kernel * kernel)
    rows = (torch.arange(ho) * stride).view(-1, 1, 1) + (taps // kernel).view(1, 1, -1)
    cols = (torch.arange(wo) * stride).view(1, -1, 1) + (taps % kernel).view(1, 1, -1)
    index = (rows * w + cols).expand(n, c, ho, wo, kernel * kernel).reshape(n, c, -1)
    parts = share(windows).to(grad_out.dtype) * grad_out[..., None]
    grad = torch.zeros(n, c, h * w, dtype=grad_out.dtype)
    return grad.scatter_add_(2, index, parts.reshape(n, c, -1)).view_as(x)


def _one_hot(index, size):
    return (torch.arange(size) == index[..., None]).double()


def _is_max(windows):
    return (windows == windows.amax(-1, keepdim=True)).double()


def _last_max(windows):
    size = windows.shape[-1]
    return _one_hot(size - 1 - windows.flip(-1).argmax(-1), size)


def _backward_mistake(share):
    def max_pool2d_backward(grad_out, x, kernel, stride=None):
        return _route(grad_out, x, kernel, stride, share)

    return max_pool2d_backward


def _overwrites(grad_out, x, kernel, stride=None):
    """Writes each window's gradient instead of adding it: where windows overlap, the last one wins."""
    stride = kernel if stride is None else stride
    first = _one_hot(_windows(x, kernel, stride).argmax(-1), kernel * kernel)
    grad = torch.zeros_like(x, dtype=grad_out.dtype)
    for i in range(grad_out.shape[2]):
        for j in range(grad_out.shape[3]):
            tap = first[:, :, i, j].argmax(-1)
            for n in range(x.shape[0]):
                for c in range(x.shape[1]):
                    a, b = divmod(int(tap[n, c]), kernel)
                    grad[n, c, i * stride + a, j * stride + b] = grad_out[n, c, i, j]
    return grad


register(Exercise(
    "max_pool2d_backward", LECTURE, 3, _backward_cases, _backward_oracle,
    params=("grad_out", "x", "kernel", "stride"),
    forms={"grad_out": ("tensor float32", "tensor float64"), "x": ("tensor float32", "tensor float64"),
           "kernel": ("int",), "stride": ("int", "None")},
    forbidden=MAX_FORBIDDEN,
    mistakes=(
        Mistake("splits ties", _backward_mistake(lambda win: _is_max(win) / _is_max(win).sum(-1, keepdim=True)),
                f"Where a window's maximum is tied you share its gradient among the tied inputs (what autograd through amax does): it goes whole to the first maximum in row-major order {GRADIENT_SECTION}."),
        Mistake("every tied maximum", _backward_mistake(_is_max),
                f"Where a window's maximum is tied you give the whole gradient to every tied input: only the first maximum in row-major order gets it {GRADIENT_SECTION}."),
        Mistake("last maximum", _backward_mistake(_last_max),
                f"Where a window's maximum is tied you route its gradient to the last maximum: it goes to the first one in row-major order, as argmax picks it {GRADIENT_SECTION}."),
        Mistake("overwrites overlaps", _overwrites,
                f"An input that wins several overlapping windows keeps only one window's gradient: add them up (scatter_add_, not scatter_ or assignment) {GRADIENT_SECTION}."),
        Mistake("average-pool gradient", _backward_mistake(lambda win: torch.full_like(win, 1.0 / win.shape[-1], dtype=torch.float64)),
                f"You spread each gradient evenly over its window, which is average pooling's gradient: max pooling sends it all to the window's winner {GRADIENT_SECTION}."),
    ),
))
