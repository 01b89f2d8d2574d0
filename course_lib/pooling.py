"""Lecture 02: pooling.

Pooling summarises each small neighbourhood of every channel separately (max or mean), which shrinks
the maps and makes the response tolerant to small shifts. The functions reuse the window view from
:mod:`course_lib.conv`; the max-pool backward pass shows how the gradient is *routed* to the winner
of each window only.
"""
from __future__ import annotations

import torch

from .conv import windows
from .validate import pair, same_device, tensor_rank

__all__ = ["max_pool2d", "avg_pool2d", "max_pool2d_backward"]


def _pool_args(x, kernel, stride, padding):
    tensor_rank("x", x, (3, 4))
    kernel = pair("kernel", kernel)
    stride = kernel if stride is None else pair("stride", stride)
    padding = pair("padding", padding, minimum=0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"padding must be at most half the kernel, got padding={padding} for kernel={kernel}")
    return kernel, stride, padding


def _batched(fn):
    """Let a pooling function accept ``[C, H, W]`` as well as ``[N, C, H, W]``."""

    def wrapper(x, *args, **kwargs):
        if isinstance(x, torch.Tensor) and x.dim() == 3:
            return fn(x.unsqueeze(0), *args, **kwargs).squeeze(0)
        return fn(x, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapper


@_batched
def max_pool2d(x: torch.Tensor, kernel, stride=None, padding=0) -> torch.Tensor:
    """Max pooling equal to ``torch.nn.functional.max_pool2d`` (floor mode).

    ``x [N, C, H, W]`` (or ``[C, H, W]``) -> ``[N, C, Ho, Wo]``; ``stride`` defaults to ``kernel``.
    Padding counts as minus infinity, so it never wins. Each channel is pooled on its own.
    """
    kernel, stride, padding = _pool_args(x, kernel, stride, padding)
    return windows(x, kernel, stride, padding, fill=float("-inf")).amax(dim=(-2, -1))


@_batched
def avg_pool2d(x: torch.Tensor, kernel, stride=None, padding=0) -> torch.Tensor:
    """Average pooling equal to ``torch.nn.functional.avg_pool2d`` (floor mode, padding counted).

    ``x [N, C, H, W]`` (or ``[C, H, W]``) -> ``[N, C, Ho, Wo]``; ``stride`` defaults to ``kernel``.
    """
    kernel, stride, padding = _pool_args(x, kernel, stride, padding)
    return windows(x, kernel, stride, padding).mean(dim=(-2, -1))


@_batched
def max_pool2d_backward(grad_out: torch.Tensor, x: torch.Tensor, kernel, stride=None) -> torch.Tensor:
    """Gradient of max pooling w.r.t. its input, equal to autograd's.

    ``grad_out [N, C, Ho, Wo]``, ``x [N, C, H, W]`` -> ``[N, C, H, W]``. Each output's gradient goes to
    the one input that won its window (the first maximum, as torch picks it); inputs that never win get
    zero, and an input that wins several overlapping windows collects the sum.
    """
    tensor_rank("grad_out", grad_out, 4)
    same_device(grad_out=grad_out, x=x)
    kernel, stride, _ = _pool_args(x, kernel, stride, 0)
    win = windows(x, kernel, stride)
    n, c, ho, wo, kh, kw = win.shape
    if tuple(grad_out.shape) != (n, c, ho, wo):
        raise ValueError(f"grad_out must have shape {(n, c, ho, wo)} for this x, kernel and stride, got {tuple(grad_out.shape)}")
    arg = win.reshape(n, c, ho, wo, kh * kw).argmax(dim=-1)
    # Flat input index of each window's winner: window corner plus the offset inside the window.
    rows = torch.arange(ho, device=x.device).view(-1, 1) * stride[0] + torch.div(arg, kw, rounding_mode="floor")
    cols = torch.arange(wo, device=x.device).view(1, -1) * stride[1] + arg % kw
    flat = (rows * x.shape[3] + cols).view(n, c, -1)
    grad_in = torch.zeros(n, c, x.shape[2] * x.shape[3], dtype=grad_out.dtype, device=grad_out.device)
    grad_in.scatter_add_(2, flat, grad_out.reshape(n, c, -1))
    return grad_in.view_as(x)
