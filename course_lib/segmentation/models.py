"""Dense-prediction networks small enough to train on a CPU."""
from __future__ import annotations

import torch
from torch import nn

from ..validate import positive_int

__all__ = ["UNet"]


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A U-Net-style encoder-decoder: ``depth`` stages that halve the resolution and double the width
    (starting at ``width``), then as many that upsample (a 2x2 transposed convolution) and concatenate
    the encoder's map of the same size (the skip connection) before two 3x3 convolutions.

    ``[N, in_channels, H, W]`` -> ``[N, out_channels, H, W]`` per-pixel scores (logits), for any ``H``
    and ``W`` divisible by ``2**depth``.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 2, width: int = 16, depth: int = 3):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width), ("depth", depth)):
            positive_int(name, value)
        self.depth = depth
        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(in_channels, widths[0])] +
                                  [_double_conv(widths[level], widths[level + 1]) for level in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2) for level in reversed(range(depth))])
        self.merge = nn.ModuleList([_double_conv(2 * widths[level], widths[level]) for level in reversed(range(depth))])
        self.score = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2**self.depth
        if x.dim() != 4 or x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"x must be [N, C, H, W] with H and W divisible by {multiple}, got shape {tuple(x.shape)}")
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.score(x)
