"""Lecture 03: CNN architectures from LeNet to ResNet.

Each landmark network is built here from its one new idea, in the order the field found them:

* LeNet-5: convolution + pooling + fully connected layers, trained end to end on digits;
* AlexNet: the same recipe, much bigger, with ReLU and dropout;
* VGG: only 3x3 convolutions, stacked; configurations A-E come from one table (:data:`VGG_CONFIGS`);
* GoogLeNet: Inception modules that run 1x1, 3x3, 5x5 filters and pooling side by side, with 1x1
  "reductions" that keep the cost down, and auxiliary classifiers that feed gradient to middle layers;
* ResNet: residual blocks ``H(x) = F(x) + x`` that make very deep networks trainable.

Parameter names and layouts follow torchvision's models, so parameter counts match theirs exactly and
their ``state_dict`` loads into these models. Tools to inspect any model sit beside them:
:func:`count_parameters`, :func:`layer_table` (output shape, parameters and receptive field per layer),
:func:`empirical_receptive_field`, :func:`inception_cost` and :func:`topk_error`.
"""
from __future__ import annotations

import copy
import weakref
from collections import OrderedDict, namedtuple

import torch
from torch import nn

from .train import evaluating
from .validate import floating, pair, positive_int, same_device, tensor_rank

__all__ = [
    "ILSVRCEntry",
    "ILSVRC_TOP5",
    "count_parameters",
    "topk_error",
    "lenet5",
    "alexnet",
    "VGG_CONFIGS",
    "vgg_features",
    "vgg",
    "ConvBNReLU",
    "InceptionModule",
    "inception_output_channels",
    "inception_cost",
    "InceptionAux",
    "GoogLeNetOutputs",
    "GoogLeNet",
    "googlenet",
    "ResidualBlock",
    "BasicBlock",
    "Bottleneck",
    "RESNET_CONFIGS",
    "ResNet",
    "resnet",
    "small_resnet",
    "layer_table",
    "format_layer_table",
    "empirical_receptive_field",
]

ILSVRCEntry = namedtuple("ILSVRCEntry", "year entry top5_error layers place")
ILSVRCEntry.__doc__ = """One ILSVRC classification result: year, entry, top-5 test error in %, weight layers
(``None`` for the hand-designed "shallow" pipelines) and place in that year's challenge."""

#: ILSVRC classification results quoted by the course's first deck (its "ImageNet performance" slide):
#: each year's winner, and 2014's runner-up VGG, which came second behind GoogLeNet.
ILSVRC_TOP5 = [
    ILSVRCEntry(2010, "NEC-UIUC", 28.2, None, 1),
    ILSVRCEntry(2011, "XRCE", 25.8, None, 1),
    ILSVRCEntry(2012, "AlexNet", 16.4, 8, 1),
    ILSVRCEntry(2013, "Clarifai (ZF Net)", 11.7, 8, 1),
    ILSVRCEntry(2014, "VGG", 7.3, 19, 2),
    ILSVRCEntry(2014, "GoogLeNet", 6.7, 22, 1),
    ILSVRCEntry(2015, "ResNet", 3.57, 152, 1),
]


# ----------------------------------------------------------------------------------------------
# Counting and scoring
# ----------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of learnable scalars in ``model`` (a parameter shared by two layers counts once).

    ``trainable_only=True`` skips parameters with ``requires_grad=False`` (a frozen backbone).
    Buffers such as BatchNorm's running statistics are not parameters and are not counted.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(trainable_only, bool):
        raise ValueError(f"trainable_only must be True or False, got {trainable_only!r}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def topk_error(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of rows whose label is not among the ``k`` highest logits (top-k error).

    ``logits``: ``[N, C]`` floating scores, ``labels``: ``[N]`` integer classes in ``[0, C)``,
    ``1 <= k <= C``. Returns a 0-d tensor with ``logits``' dtype and device. A label counts as a hit
    when fewer than ``k`` classes score strictly higher than it, so ties are resolved in its favour.
    ILSVRC ranks entries by top-5 error: five guesses per image, one of them must be right.
    """
    tensor_rank("logits", logits, 2)
    floating("logits", logits)
    tensor_rank("labels", labels, 1)
    same_device(logits=logits, labels=labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    rows, classes = logits.shape
    if labels.shape[0] != rows:
        raise ValueError(f"labels must have one entry per row of logits ({rows}), got shape {tuple(labels.shape)}")
    if rows == 0:
        raise ValueError("logits must have at least one row, got shape (0, C)")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= classes:
        raise ValueError(f"k must be an int in [1, {classes}] (the number of classes), got {k!r}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes}), got values from {labels.min()} to {labels.max()}")
    label_score = logits.gather(1, labels.long()[:, None])
    higher = (logits > label_score).sum(dim=1)
    return (higher >= k).to(logits.dtype).mean()


def _init_weights(model: nn.Module) -> nn.Module:
    """He initialisation for convolutions (what VGG and ResNet need to train from scratch), BatchNorm
    starting as the identity; linear layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


# ----------------------------------------------------------------------------------------------
# LeNet-5 and AlexNet
# ----------------------------------------------------------------------------------------------


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """LeNet-5 (LeCun et al., 1998) for ``[N, in_channels, 32, 32]`` images, returning ``[N, num_classes]``.

    The classic layout: conv 5x5 -> 6 maps (28x28), pool /2 (14x14), conv 5x5 -> 16 maps (10x10),
    pool /2 (5x5), then fully connected 400 -> 120 -> 84 -> ``num_classes``; 61,706 parameters for 10
    classes. Like the original, the input must be 32x32: the 1998 network saw 28x28 MNIST digits padded
    to 32x32, and scikit-learn's 8x8 digits should be resized to 32x32 (``F.interpolate``).
    Modern choices replace two details: ReLU instead of the scaled tanh, max pooling instead of the
    trainable average "subsampling", and a fully connected conv2 (the original wired each of its 16 maps
    to a hand-picked subset of the 6 inputs).
    """
    positive_int("num_classes", num_classes)
    positive_int("in_channels", in_channels)
    layers = OrderedDict(
        conv1=nn.Conv2d(in_channels, 6, kernel_size=5),
        relu1=nn.ReLU(inplace=True),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 16, kernel_size=5),
        relu2=nn.ReLU(inplace=True),
        pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(16 * 5 * 5, 120),
        relu3=nn.ReLU(inplace=True),
        fc2=nn.Linear(120, 84),
        relu4=nn.ReLU(inplace=True),
        fc3=nn.Linear(84, num_classes),
    )
    return _init_weights(nn.Sequential(layers))


class _Classifier(nn.Module):
    """The AlexNet/VGG layout: ``features`` (convs), ``avgpool`` to a fixed grid, ``classifier`` (MLP)."""

    def __init__(self, features: nn.Module, grid: int, classifier: nn.Module):
        super().__init__()
        self.features = features
        # Pooling to a fixed grid lets inputs smaller or larger than 224x224 reach the same MLP.
        self.avgpool = nn.AdaptiveAvgPool2d((grid, grid))
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def alexnet(num_classes: int = 1000) -> nn.Module:
    """AlexNet (Krizhevsky et al., 2012) in torchvision's single-GPU form; ``[N, 3, H, W]`` with
    ``H, W >= 63`` to ``[N, num_classes]``. 61,100,840 parameters for 1000 classes.

    Five convolutions (11x11 stride 4, 5x5, then three 3x3; max pooling after the 1st, 2nd and 5th),
    then two hidden layers of 4096 units with dropout. Most of the parameters sit in the first fully
    connected layer (9216 x 4096 = 37.7M).
    """
    positive_int("num_classes", num_classes)
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )
    return _init_weights(_Classifier(features, grid=6, classifier=classifier))


# ----------------------------------------------------------------------------------------------
# VGG
# ----------------------------------------------------------------------------------------------

#: The VGG paper's configuration table, one column per network. An int ``c`` is a 3x3 convolution with
#: ``c`` output channels, a pair ``(k, c)`` a k x k convolution (configuration C's 1x1 layers), and
#: ``"M"`` a 2x2 max pooling with stride 2. Weight layers: A 11, B 13, C 16, D 16, E 19 (with 3 FC).
VGG_CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (1, 256), "M", 512, 512, (1, 512), "M", 512, 512, (1, 512), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def vgg_features(config_list, in_channels: int = 3, batch_norm: bool = False) -> nn.Sequential:
    """The convolutional part of a VGG network, ``[N, in_channels, H, W]`` to ``[N, C_last, H/2^p, W/2^p]``
    for ``p`` pooling entries.

    ``config_list`` uses :data:`VGG_CONFIGS`' format: ``c`` (int) is conv 3x3 -> ``c`` channels, ``(k, c)``
    is conv k x k -> ``c`` channels, ``"M"`` is max pooling 2x2 stride 2. Every conv keeps the spatial
    size (padding ``k // 2``) and is followed by ReLU (BatchNorm before the ReLU if ``batch_norm``),
    giving the same ``nn.Sequential`` indices as torchvision's ``vgg*().features``.
    """
    if isinstance(config_list, (str, bytes)) or not hasattr(config_list, "__iter__"):
        raise ValueError(f"config_list must be a list of ints, (kernel, channels) pairs and 'M', got {config_list!r}")
    positive_int("in_channels", in_channels)
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm must be True or False, got {batch_norm!r}")
    layers: list[nn.Module] = []
    channels = in_channels
    for index, entry in enumerate(config_list):
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        kernel, out = entry if isinstance(entry, (tuple, list)) and len(entry) == 2 else (3, entry)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (kernel, out)) or kernel % 2 == 0:
            raise ValueError(
                f"config_list[{index}] must be 'M', a positive int or an (odd kernel, channels) pair, got {entry!r}"
            )
        layers.append(nn.Conv2d(channels, out, kernel_size=kernel, padding=kernel // 2))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        channels = out
    return nn.Sequential(*layers)


def vgg(config: str, num_classes: int = 1000, batch_norm: bool = False) -> nn.Module:
    """VGG network (Simonyan & Zisserman, 2014) for configuration ``"A"``-``"E"`` of :data:`VGG_CONFIGS`;
    ``[N, 3, H, W]`` with ``H, W >= 32`` to ``[N, num_classes]``.

    Parameters for 1000 classes: A 132,863,336 (torchvision's vgg11), B 133,047,848 (vgg13),
    C 133,638,952 (not in torchvision: B plus three 1x1 convolutions), D 138,357,544 (vgg16),
    E 143,667,240 (vgg19). Three stacked 3x3 convolutions see a 7x7 window with 27 weights per channel
    pair instead of one 7x7 convolution's 49, and add two extra non-linearities.
    """
    if not isinstance(config, str) or config not in VGG_CONFIGS:
        raise ValueError(f"config must be one of {sorted(VGG_CONFIGS)}, got {config!r}")
    positive_int("num_classes", num_classes)
    features = vgg_features(VGG_CONFIGS[config], batch_norm=batch_norm)
    classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )
    return _init_weights(_Classifier(features, grid=7, classifier=classifier))


# ----------------------------------------------------------------------------------------------
# GoogLeNet
# ----------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Module):
    """Conv2d (no bias: BatchNorm has its own shift) -> BatchNorm2d(eps=1e-3) -> ReLU, shape as the conv.

    Named ``conv``/``bn`` like torchvision's ``BasicConv2d`` so GoogLeNet weights load unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _check_inception_args(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced, large_kernel):
    for name, value in [
        ("in_channels", in_channels), ("ch1x1", ch1x1), ("ch3x3red", ch3x3red), ("ch3x3", ch3x3),
        ("ch5x5red", ch5x5red), ("ch5x5", ch5x5), ("pool_proj", pool_proj), ("large_kernel", large_kernel),
    ]:
        positive_int(name, value)
    if large_kernel % 2 == 0:
        raise ValueError(f"large_kernel must be odd so the branch keeps the spatial size, got {large_kernel}")
    if not isinstance(reduced, bool):
        raise ValueError(f"reduced must be True or False, got {reduced!r}")


def inception_output_channels(in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                              ch5x5: int, pool_proj: int, reduced: bool = True) -> int:
    """Channels an :class:`InceptionModule` outputs: the four branches are concatenated.

    With 1x1 reductions: ``ch1x1 + ch3x3 + ch5x5 + pool_proj``. Naive: ``ch1x1 + ch3x3 + ch5x5 +
    in_channels``, because the pooling branch passes all input channels through, so naive modules grow
    the channel count at every stage (the problem the reductions solve).
    """
    _check_inception_args(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced, 5)
    return ch1x1 + ch3x3 + ch5x5 + (pool_proj if reduced else in_channels)


class InceptionModule(nn.Module):
    """Inception module (Szegedy et al., 2014): ``[N, in_channels, H, W]`` to ``[N, C_out, H, W]`` with
    ``C_out = inception_output_channels(...)``.

    Four branches run side by side on the same input and are concatenated along channels:

    * ``reduced=True`` (the GoogLeNet module): 1x1 -> ``ch1x1``; 1x1 -> ``ch3x3red`` then 3x3 -> ``ch3x3``;
      1x1 -> ``ch5x5red`` then ``large_kernel`` -> ``ch5x5``; 3x3 max pooling then 1x1 -> ``pool_proj``.
    * ``reduced=False`` (the naive module): 1x1 -> ``ch1x1``, 3x3 -> ``ch3x3`` and ``large_kernel`` ->
      ``ch5x5`` straight on the input, plus 3x3 max pooling of the input itself (``in_channels`` maps);
      ``ch3x3red``, ``ch5x5red`` and ``pool_proj`` are unused.

    Every convolution is a :class:`ConvBNReLU`. ``large_kernel`` is the paper's 5; torchvision's GoogLeNet
    uses 3 there (a known quirk kept for its pretrained weights), and :func:`googlenet` follows torchvision.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, reduced: bool = True, *, large_kernel: int = 5):
        super().__init__()
        _check_inception_args(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced, large_kernel)
        pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True)
        self.branch1 = ConvBNReLU(in_channels, ch1x1, kernel_size=1)
        if reduced:
            self.branch2 = nn.Sequential(
                ConvBNReLU(in_channels, ch3x3red, kernel_size=1), ConvBNReLU(ch3x3red, ch3x3, 3, padding=1)
            )
            self.branch3 = nn.Sequential(
                ConvBNReLU(in_channels, ch5x5red, kernel_size=1),
                ConvBNReLU(ch5x5red, ch5x5, large_kernel, padding=large_kernel // 2),
            )
            self.branch4 = nn.Sequential(pool, ConvBNReLU(in_channels, pool_proj, kernel_size=1))
        else:
            self.branch2 = ConvBNReLU(in_channels, ch3x3, 3, padding=1)
            self.branch3 = ConvBNReLU(in_channels, ch5x5, large_kernel, padding=large_kernel // 2)
            self.branch4 = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


def inception_cost(in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                   pool_proj: int, size, reduced: bool = True, *, large_kernel: int = 5) -> dict:
    """Parameters and multiply-adds of one :class:`InceptionModule` on an ``H x W`` input (``size`` an int
    or ``(H, W)``), computed from the layer shapes alone.

    Returns ``{"params": int, "mult_adds": int}``. ``params`` equals ``count_parameters`` of the module
    (conv weights plus BatchNorm's scale and shift per output channel). ``mult_adds`` counts the
    convolutions only: every conv keeps the ``H x W`` size, so a k x k conv from ``c_in`` to ``c_out``
    costs ``H * W * c_out * c_in * k * k``; pooling, BatchNorm and ReLU are not multiply-adds.
    """
    _check_inception_args(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced, large_kernel)
    height, width = pair("size", size)
    if reduced:
        convs = [
            (in_channels, ch1x1, 1), (in_channels, ch3x3red, 1), (ch3x3red, ch3x3, 3),
            (in_channels, ch5x5red, 1), (ch5x5red, ch5x5, large_kernel), (in_channels, pool_proj, 1),
        ]
    else:
        convs = [(in_channels, ch1x1, 1), (in_channels, ch3x3, 3), (in_channels, ch5x5, large_kernel)]
    weights = sum(c_in * c_out * k * k for c_in, c_out, k in convs)
    batch_norm = sum(2 * c_out for _, c_out, _ in convs)
    return {"params": weights + batch_norm, "mult_adds": height * width * weights}


class InceptionAux(nn.Module):
    """Auxiliary classifier on a middle feature map, ``[N, in_channels, H, W]`` to ``[N, num_classes]``:
    average pool to 4x4, 1x1 conv to 128 maps, FC 2048 -> 1024, dropout 0.7, FC -> ``num_classes``.

    During training its loss (weighted 0.3 in the paper) sends gradient straight into the middle of the
    network; at test time it is ignored.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = ConvBNReLU(in_channels, 128, kernel_size=1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.relu(self.fc1(self.flatten(self.conv(self.pool(x)))))))


#: What :class:`GoogLeNet` returns in training mode with auxiliary heads (torchvision's field order).
GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


class GoogLeNet(nn.Module):
    """GoogLeNet / Inception v1, laid out like torchvision's; see :func:`googlenet`."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False):
        super().__init__()
        positive_int("num_classes", num_classes)
        if not isinstance(aux_logits, bool):
            raise ValueError(f"aux_logits must be True or False, got {aux_logits!r}")
        self.aux_logits = aux_logits

        def inception(*channels):
            return InceptionModule(*channels, large_kernel=3)

        self.conv1 = ConvBNReLU(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBNReLU(64, 64, kernel_size=1)
        self.conv3 = ConvBNReLU(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj): Table 1 of the paper
        self.inception3a = inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor):
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux_logits and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux_logits and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(self.flatten(self.avgpool(x))))
        if aux1 is None:
            return logits
        return GoogLeNetOutputs(logits, aux2, aux1)


def googlenet(num_classes: int = 1000, aux_logits: bool = False) -> GoogLeNet:
    """GoogLeNet (Szegedy et al., 2014): ``[N, 3, H, W]`` (``H, W >= 15``) to ``[N, num_classes]``.

    A stem of plain convolutions, nine :class:`InceptionModule` s with 1x1 reductions, global average
    pooling instead of big fully connected layers, and with ``aux_logits=True`` two :class:`InceptionAux`
    heads (after 4a and 4d). Every conv is followed by BatchNorm, as in torchvision (the 2014 network
    predates BatchNorm). In training mode with aux heads the forward returns
    ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``; otherwise the ``[N, num_classes]`` logits.

    The layout is torchvision's, including its 3x3 (not 5x5) kernel in the "5x5" branch, so the parameter
    counts equal torchvision's: 6,624,904 without aux heads and 13,004,888 with them (1000 classes).
    """
    return _init_weights(GoogLeNet(num_classes=num_classes, aux_logits=aux_logits))


# ----------------------------------------------------------------------------------------------
# ResNet
# ----------------------------------------------------------------------------------------------


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """The shortcut: identity when shapes agree, else a strided 1x1 conv + BN to the block's output shape."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class ResidualBlock(nn.Module):
    """ResNet's basic block, ``[N, in_channels, H, W]`` to ``[N, out_channels, ceil(H/stride), ceil(W/stride)]``.

    ``H(x) = relu(F(x) + shortcut(x))`` with ``F`` = conv 3x3 (stride) -> BN -> ReLU -> conv 3x3 -> BN.
    The shortcut is the identity when the shapes agree and a projection (1x1 conv with the same stride,
    then BN; attribute ``downsample``) when ``stride > 1`` or the channel count changes.
    ``residual=False`` drops the shortcut to give the "plain" block of the same depth (and, without a
    projection, the same parameters), for the degradation experiment.
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, residual: bool = True):
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        positive_int("stride", stride)
        if not isinstance(residual, bool):
            raise ValueError(f"residual must be True or False, got {residual!r}")
        self.residual = residual
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = _projection(in_channels, out_channels, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


#: torchvision's name for :class:`ResidualBlock`.
BasicBlock = ResidualBlock


class Bottleneck(nn.Module):
    """ResNet's bottleneck block, ``[N, in_channels, H, W]`` to ``[N, 4 * width, ceil(H/stride), ceil(W/stride)]``.

    ``F`` = conv 1x1 to ``width`` -> conv 3x3 (stride) -> conv 1x1 to ``4 * width``, each followed by BN
    (and ReLU except the last): the 1x1 layers shrink and restore the channels so the 3x3 conv stays
    cheap, the same idea as Inception's reductions. Shortcut as in :class:`ResidualBlock`. The stride sits
    on the 3x3 conv, as in torchvision ("ResNet v1.5").
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("width", width)
        positive_int("stride", stride)
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


#: Table 1 of the ResNet paper: depth -> (block, blocks per stage); stages have widths 64, 128, 256, 512.
RESNET_CONFIGS = {
    18: (ResidualBlock, (2, 2, 2, 2)),
    34: (ResidualBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """ResNet laid out like torchvision's (same attribute names, so its ``state_dict`` loads); see :func:`resnet`."""

    def __init__(self, block, layers, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        if len(layers) != 4:
            raise ValueError(f"layers must give the number of blocks in each of the 4 stages, got {layers!r}")
        for count in layers:
            positive_int("layers", count)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            # Every stage but the first halves the resolution in its first block.
            stride = 1 if stage == 1 else 2
            stack = []
            for index in range(blocks):
                stack.append(block(channels, width, stride if index == 0 else 1))
                channels = width * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*stack))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet(depth: int, num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-``depth`` (He et al., 2015) for depth 18, 34 (basic blocks), 50, 101 or 152 (bottlenecks);
    ``[N, in_channels, H, W]`` to ``[N, num_classes]`` for any input size (the last map is about H/32 x W/32).

    A 7x7 stride-2 conv and max pooling, four stages of residual blocks (see :data:`RESNET_CONFIGS`),
    global average pooling and one FC layer. Parameters for 1000 classes equal torchvision's:
    18: 11,689,512; 34: 21,797,672; 50: 25,557,032; 101: 44,549,160; 152: 60,192,808.
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or depth not in RESNET_CONFIGS:
        raise ValueError(f"depth must be one of {sorted(RESNET_CONFIGS)}, got {depth!r}")
    block, layers = RESNET_CONFIGS[depth]
    return _init_weights(ResNet(block, layers, num_classes=num_classes, in_channels=in_channels))


def small_resnet(depth_blocks: int, width: int = 16, num_classes: int = 10, in_channels: int = 1,
                 residual: bool = True) -> nn.Sequential:
    """A small deep CNN for tiny images (e.g. 8x8 digits), with or without skip connections;
    ``[N, in_channels, H, W]`` to ``[N, num_classes]``.

    conv 3x3 -> ``width`` maps + BN + ReLU, then ``depth_blocks`` :class:`ResidualBlock` s at constant width
    and resolution (``2 * depth_blocks`` more conv layers), global average pooling and one FC layer.
    All shortcuts are identities, so ``residual=True`` and ``residual=False`` have exactly the same
    parameters and depth: the only difference is ``+ x``. Cheap enough to train on a CPU in seconds.
    """
    positive_int("depth_blocks", depth_blocks)
    positive_int("width", width)
    positive_int("num_classes", num_classes)
    positive_int("in_channels", in_channels)
    layers = OrderedDict(
        stem=ConvBNReLU(in_channels, width, kernel_size=3, padding=1),
        blocks=nn.Sequential(*(ResidualBlock(width, width, residual=residual) for _ in range(depth_blocks))),
        avgpool=nn.AdaptiveAvgPool2d((1, 1)),
        flatten=nn.Flatten(),
        fc=nn.Linear(width, num_classes),
    )
    return _init_weights(nn.Sequential(layers))


# ----------------------------------------------------------------------------------------------
# Inspecting a model: layer table and receptive fields
# ----------------------------------------------------------------------------------------------

_WINDOW_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _grow_field(module: nn.Module, field, jump):
    """Receptive field recurrence for one windowed layer, per axis: a k-tap window with dilation d widens
    the field by ``(k - 1) * d`` steps of the current jump (input pixels between neighbouring units)."""
    kernel = pair("kernel_size", module.kernel_size)
    stride = pair("stride", module.stride)
    dilation = pair("dilation", getattr(module, "dilation", 1))
    field = tuple(f + (k - 1) * d * j for f, k, d, j in zip(field, kernel, dilation, jump))
    return field, tuple(j * s for j, s in zip(jump, stride))


def _probe_input(model: nn.Module, input_size, name: str) -> torch.Tensor:
    if not isinstance(input_size, (tuple, list)) or len(input_size) != 3:
        raise ValueError(f"{name} must be (channels, height, width), got {input_size!r}")
    for value in input_size:
        positive_int(name, value)
    reference = next(iter(model.parameters()), None)
    if reference is None:
        reference = next(iter(model.buffers()), torch.empty(0))
    dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
    return torch.zeros(1, *input_size, device=reference.device, dtype=dtype)


def layer_table(model: nn.Module, input_size, max_depth: int | None = None) -> list[dict]:
    """Run one ``[1, *input_size]`` zero image through ``model`` (eval mode, no gradients) and describe
    each layer that ran, in forward order.

    ``input_size`` is ``(channels, height, width)``. Rows are the leaf modules, or with ``max_depth`` the
    modules ``max_depth`` levels deep (``layer1`` of a ResNet at 1) plus shallower leaves. Each row is
    ``{"name", "type", "output_shape" (without the batch dimension, None for non-tensor outputs),
    "parameters", "receptive_field"}``.

    ``receptive_field`` is ``(height, width)`` in input pixels of one output unit, by the recurrence
    ``field += (kernel - 1) * dilation * jump; jump *= stride`` over the ``Conv2d``/``MaxPool2d``/``AvgPool2d``
    layers the data went through; it is ``None`` for rows without such a layer. Each layer starts from the
    field of the tensor it consumes. A tensor made between layers (the sum in a residual block, the
    concatenation in an Inception module) gets the widest field computed so far, which is the main path's:
    a shortcut or a parallel branch never widens the field beyond it. The field is the theoretical one,
    not clipped to the image. Hooks are removed and training flags restored even if the forward fails.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if max_depth is not None:
        positive_int("max_depth", max_depth)
    x = _probe_input(model, input_size, "input_size")

    def depth(name):
        return name.count(".") + 1

    def is_row(name, module):
        leaf = next(module.children(), None) is None
        return leaf if max_depth is None else depth(name) == max_depth or (leaf and depth(name) < max_depth)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    rows_for = {m: name for name, m in model.named_modules() if name and is_row(name, m)}
    fields = {}  # id(tensor) -> (weak reference, field, jump)
    widest = [((1, 1), (1, 1))]

    def remember(tensor, field, jump):
        if isinstance(tensor, torch.Tensor):
            fields[id(tensor)] = (weakref.ref(tensor), field, jump)
            if field[0] * field[1] >= widest[0][0][0] * widest[0][0][1]:
                widest[0] = (field, jump)

    def field_of(tensor):
        entry = fields.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        if entry is None or entry[0]() is not tensor:  # made between layers (or its id was recycled)
            return widest[0]
        return entry[1], entry[2]

    rows = []

    def on_leaf(module, inputs, output):
        field, jump = field_of(inputs[0] if inputs else None)
        if isinstance(module, _WINDOW_LAYERS):
            field, jump = _grow_field(module, field, jump)
        remember(output, field, jump)

    def on_row(module, inputs, output):
        has_window = any(isinstance(m, _WINDOW_LAYERS) for m in module.modules())
        rows.append({
            "name": rows_for[module],
            "type": type(module).__name__,
            "output_shape": tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None,
            "parameters": count_parameters(module),
            "receptive_field": field_of(output)[0] if has_window else None,
        })

    # Leaf hooks go first so a leaf that is also a row has its field recorded before the row reads it.
    handles = [m.register_forward_hook(on_leaf) for m in leaves]
    handles += [m.register_forward_hook(on_row) for m in rows_for]
    try:
        remember(x, (1, 1), (1, 1))
        with evaluating(model), torch.no_grad():
            model(x)
    except RuntimeError as err:
        raise ValueError(f"input_size {tuple(input_size)} does not fit the model: {err}") from err
    finally:
        for handle in handles:
            handle.remove()
    return rows


def format_layer_table(rows: list[dict]) -> str:
    """Plain-text table of :func:`layer_table` rows (layer, type, output shape, parameters, receptive
    field), with the total of the parameters (a layer that ran twice counts once) on the last line."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"rows must be the list of dicts layer_table returns, got {type(rows).__name__}")

    def shape(s):
        return "" if s is None else "x".join(map(str, s))

    def field(f):
        return "" if f is None else (str(f[0]) if f[0] == f[1] else f"{f[0]}x{f[1]}")

    header = ("layer", "type", "output", "params", "field")
    body = [(r["name"], r["type"], shape(r["output_shape"]), f"{r['parameters']:,}", field(r["receptive_field"]))
            for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(line):
        left = [cell.ljust(w) for cell, w in zip(line[:3], widths)]
        right = [cell.rjust(w) for cell, w in zip(line[3:], widths[3:])]
        return "  ".join(left + right).rstrip()

    total = sum({r["name"]: r["parameters"] for r in rows}.values())
    rule = "-" * len(render(header))
    return "\n".join([render(header), rule, *map(render, body), rule, f"total parameters: {total:,}"])


def empirical_receptive_field(model: nn.Module, input_size, channel: int = 0) -> tuple[int, int]:
    """Measured receptive field of the centre unit of output map ``channel``: the ``(height, width)`` of
    the bounding box of input pixels where ``d output[0, channel, H//2, W//2] / d input`` is non-zero.

    ``model`` maps ``[1, *input_size]`` (``(channels, height, width)``) to a ``[1, C, H, W]`` feature map.
    A float64 copy in eval mode is probed (on MPS, which lacks float64, float32) with a seeded uniform
    [0, 1) image, so the caller's model is untouched. The box can be smaller than the theoretical field
    (:func:`layer_table`): a ReLU that is off, or max pooling (which routes gradient to one input per
    window), hides pixels; a stack of convolutions and average pooling shows the full field. Choose
    ``input_size`` large enough that the field is not clipped by the image border.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = _probe_input(model, input_size, "input_size")
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    probe = copy.deepcopy(model).to(dtype).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(x.shape, generator=generator, dtype=dtype).to(x.device).requires_grad_(True)
    try:
        out = probe(x)
    except RuntimeError as err:
        raise ValueError(f"input_size {tuple(input_size)} does not fit the model: {err}") from err
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        raise ValueError(f"model must return a [1, C, H, W] feature map, got {getattr(out, 'shape', type(out))}")
    if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < out.shape[1]:
        raise ValueError(f"channel must be an int in [0, {out.shape[1]}), got {channel!r}")
    out[0, channel, out.shape[2] // 2, out.shape[3] // 2].backward()
    touched = x.grad[0].ne(0).any(dim=0)
    rows = touched.any(dim=1).nonzero()
    cols = touched.any(dim=0).nonzero()
    if rows.numel() == 0:
        return (0, 0)
    return (int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1)
