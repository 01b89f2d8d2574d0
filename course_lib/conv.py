"""Lecture 01: convolution arithmetic.

A convolution layer slides one small set of weights over every location of its input. This module
computes the arithmetic of that sliding (output size, parameter count, receptive field), the layer
itself twice (a loop over output positions that mirrors the definition, and a vectorised version
that is one matrix product per kernel tap), a strided *window view* of every patch a kernel visits
(used by pooling), and the weight gradient, which is a sum over locations because weights are shared.
"""
from __future__ import annotations

import torch

from .validate import nonneg_int, pair, positive_int, same_device, tensor_rank

__all__ = [
    "conv_output_size",
    "conv_params",
    "receptive_field",
    "windows",
    "conv2d_naive",
    "conv2d",
    "conv2d_weight_grad",
]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Number of positions a window of ``kernel`` taps (spread ``dilation`` apart) takes along one axis
    of length ``size`` zero-padded by ``padding`` on each side, moving ``stride`` at a time.

    ``floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``; a 7-wide input with a
    3-wide filter gives 5 at stride 1 and 3 at stride 2.
    """
    positive_int("size", size)
    positive_int("kernel", kernel)
    positive_int("stride", stride)
    nonneg_int("padding", padding)
    positive_int("dilation", dilation)
    span = dilation * (kernel - 1) + 1
    if span > size + 2 * padding:
        raise ValueError(
            f"kernel={kernel} (span {span} with dilation={dilation}) is larger than the padded input "
            f"size {size} + 2*{padding} = {size + 2 * padding}"
        )
    return (size + 2 * padding - span) // stride + 1


def conv_params(in_channels: int, out_channels: int, kernel, bias: bool = True) -> int:
    """Learnable numbers in a conv layer: ``out * in * kh * kw`` weights (+ ``out`` biases).

    The count does not depend on the image size: the same weights are shared by every location.
    """
    positive_int("in_channels", in_channels)
    positive_int("out_channels", out_channels)
    kh, kw = pair("kernel", kernel)
    if not isinstance(bias, bool):
        raise ValueError(f"bias must be True or False, got {bias!r}")
    return out_channels * in_channels * kh * kw + (out_channels if bias else 0)


def receptive_field(layers) -> int:
    """Receptive field (input pixels along one axis) of one unit after a stack of layers.

    ``layers`` is a list of ``(kernel, stride)`` pairs in forward order. Each layer widens the field by
    ``(kernel - 1)`` times the product of the strides before it: three stacked 3x3 convs see 7 pixels.
    """
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise ValueError(f"layers must be a list of (kernel, stride) pairs, got {layers!r}")
    field, jump = 1, 1
    for index, layer in enumerate(layers):
        if not isinstance(layer, (tuple, list)) or len(layer) != 2:
            raise ValueError(f"layers[{index}] must be a (kernel, stride) pair, got {layer!r}")
        kernel = positive_int(f"layers[{index}] kernel", layer[0])
        stride = positive_int(f"layers[{index}] stride", layer[1])
        field += (kernel - 1) * jump
        jump *= stride
    return field


def _check_conv_args(x, weight, bias, stride, padding, dilation):
    tensor_rank("x", x, 4)
    tensor_rank("weight", weight, 4)
    same_device(x=x, weight=weight, bias=bias)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"weight has {weight.shape[1]} input channels but x has {x.shape[1]} "
            f"(weight {tuple(weight.shape)}, x {tuple(x.shape)})"
        )
    if bias is not None:
        tensor_rank("bias", bias, 1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have {weight.shape[0]} entries, got shape {tuple(bias.shape)}")
    stride = pair("stride", stride)
    padding = pair("padding", padding, minimum=0)
    dilation = pair("dilation", dilation)
    out = tuple(
        conv_output_size(x.shape[2 + d], weight.shape[2 + d], stride[d], padding[d], dilation[d]) for d in range(2)
    )
    return stride, padding, dilation, out


def windows(x: torch.Tensor, kernel, stride=1, padding=0, dilation=1, fill: float = 0.0) -> torch.Tensor:
    """A strided *view* of every window a kernel visits: ``[N, C, H, W]`` to ``[N, C, Ho, Wo, kh, kw]``.

    ``out[n, c, i, j]`` is the ``kh x kw`` patch (taps ``dilation`` apart) whose top-left corner sits at
    ``(i*stride, j*stride)`` of the input padded with ``fill``. No data is copied except the padding:
    this is the im2col trick that turns convolution into one matrix product.
    """
    tensor_rank("x", x, 4)
    kh, kw = pair("kernel", kernel)
    (sh, sw), (ph, pw), (dh, dw) = pair("stride", stride), pair("padding", padding, 0), pair("dilation", dilation)
    ho = conv_output_size(x.shape[2], kh, sh, ph, dh)
    wo = conv_output_size(x.shape[3], kw, sw, pw, dw)
    if ph or pw:
        x = torch.nn.functional.pad(x, (pw, pw, ph, ph), value=fill)
    x = x.contiguous()
    n, c, h, w = x.stride()
    return x.as_strided(
        (x.shape[0], x.shape[1], ho, wo, kh, kw),
        (n, c, h * sh, w * sw, h * dh, w * dw),
    )


def conv2d_naive(x, weight, bias=None, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Convolution (cross-correlation, as in every deep-learning library) written as the definition.

    ``x [N, C, H, W]``, ``weight [O, C, kh, kw]``, ``bias [O]`` or None -> ``[N, O, Ho, Wo]``.
    One loop over output positions: each output column is the dot product of every filter with the
    window under it. Slow on purpose; :func:`conv2d` computes the same numbers at once.
    """
    (sh, sw), (ph, pw), (dh, dw), (ho, wo) = _check_conv_args(x, weight, bias, stride, padding, dilation)
    kh, kw = weight.shape[2:]
    xp = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    out = x.new_zeros((x.shape[0], weight.shape[0], ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * sh : i * sh + dh * (kh - 1) + 1 : dh, j * sw : j * sw + dw * (kw - 1) + 1 : dw]
            # [N, C, kh, kw] x [O, C, kh, kw] -> [N, O]: every filter of the depth column at once
            out[:, :, i, j] = torch.einsum("nckl,ockl->no", patch, weight)
    if bias is not None:
        out += bias.view(1, -1, 1, 1)
    return out


_BLOCK_ROWS = 8192


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Vectorised convolution equal to ``torch.nn.functional.conv2d`` (groups=1).

    ``x [N, C, H, W]``, ``weight [O, C, kh, kw]``, ``bias [O]`` or None -> ``[N, O, Ho, Wo]``.

    Shared weights make a convolution a sum over the ``kh*kw`` kernel taps: tap ``(i, j)`` is one
    ``C -> O`` linear map applied to every location of the input shifted by ``(i, j)``. With the padded
    input stored channels-last and flattened to rows ``[N*Hp*Wp, C]``, a shift is just an offset into
    the rows, so each tap is one matrix product over *all* locations at once, with no copy of the
    input per tap (im2col would copy it ``kh*kw`` times). Positions that straddle a row end are
    computed too and cropped; a stride > 1 keeps every ``stride``-th position (computing all of
    them first, which costs ``stride**2`` more work: fine for teaching, not for production).
    """
    (sh, sw), (ph, pw), (dh, dw), (ho, wo) = _check_conv_args(x, weight, bias, stride, padding, dilation)
    n, c, h, w = x.shape
    out_channels, _, kh, kw = weight.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    rows = torch.nn.functional.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1).reshape(n * hp * wp, c)
    # Output row r reads input rows r + i*dh*wp + j*dw. Rows past `valid` (and the wrap-around
    # positions at each row end) are never kept, so they are never computed or read.
    valid = rows.shape[0] - (kh - 1) * dh * wp - (kw - 1) * dw
    taps = [(i * dh * wp + j * dw, weight[:, :, i, j].t().contiguous()) for i in range(kh) for j in range(kw)]
    out = rows.new_empty((n * hp * wp, out_channels))
    # Blocks of rows keep each block's partial sums in cache while all taps add into it.
    for start in range(0, valid, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, valid)
        block = out[start:stop]
        torch.mm(rows[start + taps[0][0] : stop + taps[0][0]], taps[0][1], out=block)
        for shift, tap in taps[1:]:
            block.addmm_(rows[start + shift : stop + shift], tap)
    out = out.view(n, hp, wp, out_channels)[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
    if bias is not None:
        out = out + bias
    return out.permute(0, 3, 1, 2)


def conv2d_weight_grad(x, grad_out, kernel_size, stride=1, padding=0) -> torch.Tensor:
    """Gradient of a loss w.r.t. a conv layer's weights, ``[O, C, kh, kw]``.

    ``x [N, C, H, W]`` is the layer input, ``grad_out [N, O, Ho, Wo]`` the loss gradient w.r.t. its
    output. Because one weight is used at every location, its gradient is the *sum over all locations
    (and images)* of output-gradient times the input value it met there.
    """
    tensor_rank("x", x, 4)
    tensor_rank("grad_out", grad_out, 4)
    same_device(x=x, grad_out=grad_out)
    kh, kw = pair("kernel_size", kernel_size)
    patches = windows(x, (kh, kw), stride, padding)
    if patches.shape[0] != grad_out.shape[0] or patches.shape[2:4] != grad_out.shape[2:]:
        raise ValueError(
            f"grad_out must have shape [N={x.shape[0]}, O, {patches.shape[2]}, {patches.shape[3]}] for this x, "
            f"kernel_size, stride and padding, got {tuple(grad_out.shape)}"
        )
    return torch.einsum("nohw,nchwkl->ockl", grad_out, patches)
