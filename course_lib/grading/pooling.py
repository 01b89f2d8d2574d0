"""Exercises of lecture 02 (pooling), checked against torch's pooling and autograd."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import Case, Exercise, register, rand_dtype, rand_int

LECTURE = "02_pooling"

SLIDE_SLICE = torch.tensor([[1.0, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]).view(1, 1, 4, 4)


def _pool_cases(with_padding):
    def cases(gen, hidden):
        out = [Case((SLIDE_SLICE, 2), {"stride": 2}, label="the lecture's 4x4 slice, 2x2 windows, stride 2")]
        while len(out) < 12:
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
            x = torch.randn(n, c, h, w, generator=gen, dtype=dtype) - 0.5
            out.append(Case((x, kernel), kwargs))
        return out

    return cases


register(Exercise("max_pool2d", LECTURE, 2, _pool_cases(True), lambda case: F.max_pool2d(*case.args, **case.kwargs)))
register(Exercise("avg_pool2d", LECTURE, 2, _pool_cases(True), lambda case: F.avg_pool2d(*case.args, **case.kwargs)))


def _backward_cases(gen, hidden):
    pooled = F.max_pool2d(SLIDE_SLICE, 2)
    out = [Case((torch.ones_like(pooled), SLIDE_SLICE, 2), label="the lecture's 4x4 slice, output gradient all ones")]
    # Overlapping windows: a local maximum wins several windows and must collect every gradient.
    x = torch.randn(2, 2, 7, 7, generator=gen, dtype=torch.float64)
    out.append(Case((torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64), x, 3), {"stride": 1},
                    label="overlapping 3x3 windows at stride 1 on a [2, 2, 7, 7] input"))
    for case in _pool_cases(False)(gen, hidden)[2:]:
        x, kernel = case.args
        grad_out = torch.randn_like(F.max_pool2d(x, kernel, **case.kwargs))
        out.append(Case((grad_out, x, kernel), dict(case.kwargs)))
    return out


def _backward_oracle(case):
    grad_out, x, kernel = case.args
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.max_pool2d(x, kernel, **case.kwargs), x, grad_out)
    return grad


register(Exercise("max_pool2d_backward", LECTURE, 3, _backward_cases, _backward_oracle))
