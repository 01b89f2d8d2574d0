"""Exercises of lecture 01 (convolution arithmetic), checked against torch's own convolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import Case, Exercise, compare_value, register, rand_dtype, rand_int

LECTURE = "01_conv_arithmetic"


# --- conv_output_size -------------------------------------------------------------------------

def _output_size_cases(gen, hidden):
    cases = [
        Case((7, 3), {"stride": 1}, label="7x7 input, 3x3 filter, stride 1 (lecture)"),
        Case((7, 3), {"stride": 2}, label="7x7 input, 3x3 filter, stride 2 (lecture)"),
        Case((7, 3), {"stride": 1, "padding": 1}, label="7x7 input, 3x3 filter, zero padding 1 (lecture)"),
        Case((224, 11), {"stride": 4, "padding": 2}, label="AlexNet conv1: 224, kernel 11, stride 4, padding 2"),
    ]
    while len(cases) < 16:
        size, kernel, stride = rand_int(gen, 1, 40), rand_int(gen, 1, 7), rand_int(gen, 1, 5)
        padding, dilation = rand_int(gen, 0, 3), rand_int(gen, 1, 3)
        if dilation * (kernel - 1) + 1 <= size + 2 * padding:
            cases.append(Case((size, kernel), {"stride": stride, "padding": padding, "dilation": dilation}))
    return cases


def _output_size_oracle(case):
    # Empirical: let torch's convolution tell the size (one row, a column of taps).
    size, kernel = case.args
    kw = case.kwargs
    out = F.conv2d(
        torch.zeros(1, 1, size, 1), torch.zeros(1, 1, kernel, 1),
        stride=(kw.get("stride", 1), 1), padding=(kw.get("padding", 0), 0), dilation=(kw.get("dilation", 1), 1),
    )
    return out.shape[2]


register(Exercise("conv_output_size", LECTURE, 2, _output_size_cases, _output_size_oracle, compare_value))


# --- conv2d and conv2d_naive --------------------------------------------------------------------

def _conv_cases(max_size):
    def cases(gen, hidden):
        example = torch.arange(49.0).view(1, 1, 7, 7) / 10
        # A Sobel filter is not symmetric, so flipped or transposed kernels show up at once.
        sobel = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]).view(1, 1, 3, 3)
        out = [
            Case((example, sobel), {"stride": 1}, label="7x7 input, 3x3 Sobel filter, stride 1 -> 5x5 (lecture)"),
            Case((example, sobel), {"stride": 2}, label="7x7 input, 3x3 Sobel filter, stride 2 -> 3x3 (lecture)"),
            Case((example, sobel), {"padding": 1}, label="7x7 input, 3x3 Sobel filter, padding 1 keeps 7x7 (lecture)"),
        ]
        while len(out) < 12:
            dtype = rand_dtype(gen)
            n, c, o = rand_int(gen, 1, 3), rand_int(gen, 1, 4), rand_int(gen, 1, 4)
            h, w = rand_int(gen, 3, max_size), rand_int(gen, 3, max_size)
            kh, kw = rand_int(gen, 1, 4), rand_int(gen, 1, 4)
            stride = (rand_int(gen, 1, 3), rand_int(gen, 1, 3)) if rand_int(gen, 0, 1) else rand_int(gen, 1, 5)
            padding, dilation = rand_int(gen, 0, 2), rand_int(gen, 1, 2)
            sh, sw = (stride, stride) if isinstance(stride, int) else stride
            if dilation * (kh - 1) + 1 > h + 2 * padding or dilation * (kw - 1) + 1 > w + 2 * padding:
                continue
            x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
            weight = torch.randn(o, c, kh, kw, generator=gen, dtype=dtype)
            bias = torch.randn(o, generator=gen, dtype=dtype) if rand_int(gen, 0, 2) else None
            out.append(Case((x, weight), {"bias": bias, "stride": stride, "padding": padding, "dilation": dilation}))
        return out

    return cases


def _conv_oracle(case):
    return F.conv2d(*case.args, **case.kwargs)


register(Exercise("conv2d_naive", LECTURE, 3, _conv_cases(9), _conv_oracle))
register(Exercise("conv2d", LECTURE, 3, _conv_cases(16), _conv_oracle))


# --- conv_params --------------------------------------------------------------------------------

def _params_cases(gen, hidden):
    cases = [
        Case((1, 100, 10), {"bias": False}, label="100 filters of 10x10 on a grey image, no bias (lecture: 10k)"),
        Case((3, 64, 3), label="3 -> 64 channels, 3x3 with bias"),
        Case((64, 64, 1), label="1x1 convolution, 64 -> 64"),
        Case((16, 8, (3, 5)), {"bias": False}, label="non-square 3x5 kernel"),
    ]
    for _ in range(8):
        kernel = rand_int(gen, 1, 7) if rand_int(gen, 0, 1) else (rand_int(gen, 1, 7), rand_int(gen, 1, 7))
        cases.append(Case((rand_int(gen, 1, 64), rand_int(gen, 1, 64), kernel), {"bias": bool(rand_int(gen, 0, 1))}))
    return cases


def _params_oracle(case):
    in_channels, out_channels, kernel = case.args
    layer = torch.nn.Conv2d(in_channels, out_channels, kernel, bias=case.kwargs.get("bias", True), device="meta")
    return sum(p.numel() for p in layer.parameters())


register(Exercise("conv_params", LECTURE, 1, _params_cases, _params_oracle, compare_value))


# --- receptive_field ----------------------------------------------------------------------------

def _field_cases(gen, hidden):
    cases = [
        Case(([(3, 1), (3, 1)],), label="two stacked 3x3 convs (lecture: 5)"),
        Case(([(3, 1), (3, 1), (3, 1)],), label="three stacked 3x3 convs (lecture: 7)"),
        Case(([(3, 2), (3, 1)],), label="3x3 stride 2, then 3x3"),
        Case(([(11, 4), (3, 2), (5, 1)],), label="AlexNet's start: 11/4, pool 3/2, 5/1"),
        Case(([(5, 1)],), label="a single 5x5 layer"),
    ]
    for _ in range(7):
        cases.append(Case(([(rand_int(gen, 1, 7), rand_int(gen, 1, 3)) for _ in range(rand_int(gen, 1, 5))],)))
    return cases


def _field_oracle(case):
    # Empirical: the input pixels that can change one output unit of a 1-D stack with positive weights.
    layers = case.args[0]
    length = 1 + sum(k for k, _ in layers) * max(1, torch.tensor([s for _, s in layers]).prod().item())
    x = torch.ones(1, 1, length, dtype=torch.float64, requires_grad=True)
    y = x
    for kernel, stride in layers:
        y = F.conv1d(y, torch.ones(1, 1, kernel, dtype=torch.float64), stride=stride)
    (grad,) = torch.autograd.grad(y[0, 0, 0], x)
    # The field is the span from the first to the last pixel that reaches the unit: a stride larger
    # than the kernel leaves gaps inside it, which still lie within the field.
    reached = torch.nonzero(grad[0, 0]).flatten()
    return int(reached.max() - reached.min() + 1)


register(Exercise("receptive_field", LECTURE, 2, _field_cases, _field_oracle, compare_value))


# --- conv2d_weight_grad -------------------------------------------------------------------------

def _weight_grad_cases(gen, hidden):
    x = torch.arange(16.0).view(1, 1, 4, 4)
    cases = [Case((x, torch.ones(1, 1, 2, 2), 3), label="4x4 input, 3x3 kernel, all-ones output gradient")]
    while len(cases) < 10:
        dtype = rand_dtype(gen)
        n, c, o = rand_int(gen, 1, 3), rand_int(gen, 1, 3), rand_int(gen, 1, 4)
        h, w, k = rand_int(gen, 4, 12), rand_int(gen, 4, 12), rand_int(gen, 1, 4)
        stride, padding = rand_int(gen, 1, 3), rand_int(gen, 0, 2)
        if k > min(h, w) + 2 * padding:
            continue
        ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
        cases.append(Case(
            (torch.randn(n, c, h, w, generator=gen, dtype=dtype), torch.randn(n, o, ho, wo, generator=gen, dtype=dtype), k),
            {"stride": stride, "padding": padding},
        ))
    return cases


def _weight_grad_oracle(case):
    x, grad_out, k = case.args
    weight = torch.zeros(grad_out.shape[1], x.shape[1], k, k, dtype=x.dtype, requires_grad=True)
    out = F.conv2d(x, weight, **case.kwargs)
    (grad,) = torch.autograd.grad(out, weight, grad_out)
    return grad


register(Exercise("conv2d_weight_grad", LECTURE, 3, _weight_grad_cases, _weight_grad_oracle))
