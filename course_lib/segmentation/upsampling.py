"""Back to full resolution: the transposed convolution, its output size, and the bilinear kernel.

A network's score map is smaller than its input by the network's total stride. A *transposed*
convolution with stride ``s`` runs a strided convolution backwards: every input value stamps a copy of
the kernel, scaled by that value, onto the output, and neighbouring stamps ``s`` pixels apart add up.
Its output is ``(size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``
long, the inverse of a convolution's size formula. Initialised with the *bilinear kernel*
(:func:`bilinear_kernel`, the FCN paper's choice) it is exactly bilinear interpolation, and training
can then improve on it. A kernel whose size is not a multiple of the stride makes the stamps overlap
unevenly, some output pixels receiving more stamps than others: the checkerboard pattern.
"""
from __future__ import annotations

import torch
from torch import nn

from ..validate import nonneg_int, positive_int

__all__ = ["conv_transpose_output_size", "bilinear_kernel", "bilinear_upsampler"]


def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, output_padding: int = 0,
                               dilation: int = 1) -> int:
    """Output length of ``nn.ConvTranspose2d`` along one axis of length ``size``.

    Each of the ``size`` inputs stamps a kernel spanning ``dilation * (kernel - 1) + 1`` pixels, ``stride``
    apart: ``(size - 1) * stride + dilation * (kernel - 1) + 1`` pixels, of which ``padding`` are cut
    from each end and ``output_padding`` added at the far end (it picks one of the ``stride`` input sizes
    a strided convolution maps to the same output size, so it must be below ``stride`` or ``dilation``).
    A 2x upsampler of FCN (kernel 4, stride 2, padding 1) doubles: 8 -> 16. An output of no pixels is an
    error (torch refuses most of those too).
    """
    positive_int("size", size)
    positive_int("kernel", kernel)
    positive_int("stride", stride)
    nonneg_int("padding", padding)
    nonneg_int("output_padding", output_padding)
    positive_int("dilation", dilation)
    if output_padding >= max(stride, dilation):
        raise ValueError(f"output_padding must be smaller than stride or dilation, got output_padding={output_padding} "
                         f"with stride={stride}, dilation={dilation}")
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out < 1:
        raise ValueError(f"padding={padding} cuts the whole output away (size={size}, kernel={kernel}, "
                         f"stride={stride}, dilation={dilation}: {out} pixels)")
    return out


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """The weight ``[channels, channels, k, k]`` float32, ``k = 2 * factor - factor % 2``, of a transposed
    convolution that upsamples each channel by ``factor`` bilinearly (FCN's initialisation).

    The kernel is the outer product of a triangle ``1 - |i - centre| / factor`` with itself, centred at
    ``(k - 1) / 2``; channel ``c`` maps only to channel ``c`` (the other entries are 0). Used with
    ``stride=factor, padding=(k - factor) // 2`` (:func:`bilinear_upsampler`) it gives an output exactly
    ``factor`` times larger, equal to ``F.interpolate(mode="bilinear", align_corners=False)`` away from
    the border (within ``factor`` pixels of it the transposed convolution sees zeros where interpolate
    repeats the edge).
    """
    positive_int("channels", channels)
    positive_int("factor", factor)
    size = 2 * factor - factor % 2
    centre = (size - 1) / 2
    taps = 1 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor
    weight = torch.zeros(channels, channels, size, size, dtype=torch.float64)
    weight[range(channels), range(channels)] = taps[:, None] * taps[None, :]
    return weight.float()


def bilinear_upsampler(channels: int, factor: int, trainable: bool = True) -> nn.ConvTranspose2d:
    """An ``nn.ConvTranspose2d`` (no bias) that multiplies the size by ``factor``, initialised with
    :func:`bilinear_kernel`; ``trainable=False`` freezes it (FCN kept its last upsampling fixed)."""
    if not isinstance(trainable, bool):
        raise ValueError(f"trainable must be True or False, got {trainable!r}")
    weight = bilinear_kernel(channels, factor)
    size = weight.shape[-1]
    layer = nn.ConvTranspose2d(channels, channels, size, stride=factor, padding=(size - factor) // 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    layer.weight.requires_grad_(trainable)
    return layer
