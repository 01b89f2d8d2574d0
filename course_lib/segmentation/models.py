"""Dense-prediction networks small enough to train on a CPU.

* :class:`PatchClassifier`: one ``window x window`` patch in, one class out, through a fully connected
  head; :meth:`PatchClassifier.fully_convolutional` turns it into a network that scores every window
  of a larger image in one pass.
* :class:`FCN`: a MobileNetV2 encoder (ImageNet weights or from scratch) with a 1x1 *score* layer, its
  coarse score map upsampled back to the input size by transposed convolutions initialised bilinear;
  ``skips=0`` upsamples the coarsest scores in one step (FCN-32s style), ``skips=2`` first adds the
  scores of two earlier, finer stages (FCN-8s style).
* :class:`UNet`: a symmetric encoder-decoder from scratch whose decoder concatenates the encoder's map of
  the same size at every level (the U-Net's skip connections).
"""
from __future__ import annotations

import copy

import torch
import torchvision
from torch import nn

from ..validate import positive_int
from .fcn import fc_to_conv
from .upsampling import bilinear_upsampler

__all__ = ["PatchClassifier", "FCN", "UNet"]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3) -> list[nn.Module]:
    """A convolution (3x3 padded to keep the size, or ``kernel`` x ``kernel`` unpadded), batch norm, ReLU."""
    padding = 1 if kernel == 3 else 0
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class PatchClassifier(nn.Module):
    """Classifies one ``[in_channels, window, window]`` patch: ``[N, in_channels, window, window]`` -> logits
    ``[N, num_classes]``.

    Features: two stages of an unpadded 4x4 convolution (batch norm, ReLU) and 2x2 max pooling, total
    stride 4, giving a ``[2*width, f, f]`` map with ``window = 4*f + 9`` (``f = 4`` for the 25-pixel faces of
    ``lfw_subset``), so that every pixel of the window reaches the head and nothing is cropped. Head:
    flatten, ``Linear(2*width*f*f, hidden)``, ReLU, ``Linear(hidden, num_classes)``. No padding anywhere,
    so a window's features do not depend on what lies outside it: that is what makes
    :meth:`fully_convolutional` exact.
    """

    stride = 4

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16, hidden: int = 64, window: int = 25):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("width", width),
                            ("hidden", hidden), ("window", window)):
            positive_int(name, value)
        if window < 13 or window % 4 != 1:
            raise ValueError(f"window must be 4*f + 9 for some f >= 1 (13, 17, 21, 25, ...) so that two 4x4 conv and 2x2 "
                             f"pool stages use every pixel, got {window}")
        self.window, self.feature_size, self.width = window, (window - 9) // 4, width
        self.features = nn.Sequential(*_conv_bn_relu(in_channels, width, 4), nn.MaxPool2d(2),
                                      *_conv_bn_relu(width, 2 * width, 4), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * self.feature_size**2, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.window, self.window):
            raise ValueError(f"x must be [N, C, {self.window}, {self.window}] (the fully connected head fixes the input "
                             f"size; fully_convolutional() takes any size), got shape {tuple(x.shape)}")
        return self.head(self.features(x))

    def fully_convolutional(self) -> nn.Sequential:
        """A copy of this classifier with both fully connected layers turned into convolutions
        (:func:`fc_to_conv`): ``[N, C, H, W]`` -> scores ``[N, num_classes, (H - window) // 4 + 1, (W - window) // 4 + 1]``,
        position ``(i, j)`` holding the classifier's logits for the window at ``(4i, 4j)``. Same training mode."""
        first, last = self.head[1], self.head[3]
        network = nn.Sequential(
            copy.deepcopy(self.features),
            fc_to_conv(first, 2 * self.width, self.feature_size),  # reads the whole f x f map: one window
            nn.ReLU(inplace=True),
            fc_to_conv(last, first.out_features, 1),  # a linear layer on a vector is a 1x1 convolution
        )
        return network.train(self.training)


class _MobileNetEncoder(nn.Module):
    """:class:`FCN`'s encoder: torchvision's MobileNetV2 ``features[:14]`` (ImageNet weights from
    :func:`course_lib.transfer.pretrained`, or torchvision's random initialisation) in three stages that
    end at strides 4, 8 and 16 (24, 32 and 96 channels). Normalises RGB images in [0, 1] with ImageNet's
    statistics and returns the three maps."""

    CHANNELS = (24, 32, 96)

    def __init__(self, pretrained: bool):
        super().__init__()
        if not isinstance(pretrained, bool):
            raise ValueError(f"pretrained must be True or False, got {pretrained!r}")
        from .. import transfer

        backbone = transfer.pretrained("mobilenet_v2", quiet=True) if pretrained else torchvision.models.mobilenet_v2()
        self.stages = nn.ModuleList([backbone.features[start:end] for start, end in ((0, 4), (4, 7), (7, 14))])
        self.register_buffer("mean", torch.tensor(transfer.IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(transfer.IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % 16 or x.shape[-1] % 16:
            raise ValueError(f"x must be [N, 3, H, W] with H and W divisible by 16, got shape {tuple(x.shape)}")
        x = (x - self.mean) / self.std
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


class FCN(nn.Module):
    """A fully convolutional segmenter: ``[N, 3, H, W]`` RGB in [0, 1] -> logits ``[N, num_classes, H, W]``
    for ``H`` and ``W`` divisible by 16.

    Encoder: torchvision's MobileNetV2 ``features[:14]`` (ImageNet weights when ``pretrained``, else random),
    whose stages end at strides 4 (24 channels), 8 (32) and 16 (96); inputs are normalised with ImageNet's
    statistics inside the model. A 1x1 convolution scores the stride-16 map. With ``skips=0`` those scores
    are upsampled 16x in one step (FCN-32s style); with ``skips=1`` they are upsampled 2x and added to the
    scores of the stride-8 map, then upsampled 8x (FCN-16s style); ``skips=2`` adds the stride-4 scores as
    well and upsamples the sum 4x (FCN-8s style). Every upsampling is a transposed convolution initialised
    bilinear (:func:`bilinear_upsampler`); the skip score layers start at zero, so training starts from the
    coarse prediction, as in the paper.
    """

    def __init__(self, num_classes: int, skips: int = 2, pretrained: bool = True):
        super().__init__()
        positive_int("num_classes", num_classes)
        if skips not in (0, 1, 2):
            raise ValueError(f"skips must be 0, 1 or 2, got {skips!r}")
        self.skips, self.pretrained = skips, pretrained
        self.encoder = _MobileNetEncoder(pretrained)
        channels = _MobileNetEncoder.CHANNELS[::-1][: skips + 1]  # 96 first, then 32, then 24
        self.score = nn.ModuleList([nn.Conv2d(c, num_classes, 1) for c in channels])
        for layer in self.score[1:]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.up = nn.ModuleList([bilinear_upsampler(num_classes, 2) for _ in range(skips)])
        self.final = bilinear_upsampler(num_classes, 16 // 2**skips)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.encoder(x)
        scores = self.score[0](maps[-1])
        for up, score, skip in zip(self.up, self.score[1:], maps[-2::-1]):
            scores = up(scores) + score(skip)
        return self.final(scores)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn_relu(in_channels, out_channels), *_conv_bn_relu(out_channels, out_channels))


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
