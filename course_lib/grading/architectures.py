"""Exercises of lecture 03 (architectures), checked against torchvision's building blocks and ``torch.topk``.

The model exercises (``vgg_features``, ``InceptionModule``, ``ResidualBlock``) are graded by building the
student's module from the case's plain-data arguments, counting its parameters and running it on the
case's input. To compare outputs without caring in which order a student registered the layers, every
parameter and BatchNorm statistic is filled with numbers that depend only on its shape and role
(:func:`_fill_by_shape`), in the student's module and in the reference alike.
"""
from __future__ import annotations

import zlib

import torch
from torch import nn

from .core import Case, Exercise, compare_tensor, compare_value, register, rand_dtype, rand_int

LECTURE = "03_architectures"


# --- shared by the model exercises --------------------------------------------------------------

def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _fill_by_shape(module: nn.Module) -> nn.Module:
    """Deterministic weights that depend only on each tensor's shape and role, not on its name or order."""
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            role = name.rsplit(".", 1)[-1]
            if role == "num_batches_tracked" or not tensor.is_floating_point():
                continue
            key = f"{role}/{tensor.dim()}/{tuple(tensor.shape)}".encode()
            gen = torch.Generator().manual_seed(zlib.crc32(key))
            noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
            if tensor.dim() > 1:  # conv/linear weights, He-scaled so deep stacks neither explode nor vanish
                values = noise * (2.0 / tensor[0].numel()) ** 0.5
            elif role == "weight":  # BatchNorm scale
                values = 1.0 + 0.2 * noise
            elif role == "running_var":
                values = 0.5 + torch.rand(tensor.shape, generator=gen, dtype=torch.float64)
            else:  # biases, BatchNorm shift and running mean
                values = 0.1 * noise
            tensor.copy_(values)
    return module


def _build(fn, case: Case, what: str) -> nn.Module:
    args, _ = case.args
    module = fn(*args, **case.kwargs)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{what} must give a torch.nn.Module, got {type(module).__name__}")
    return module


def _forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    module = module.to(x.dtype).eval()
    with torch.no_grad():
        out = module(x.clone())  # a clone: an in-place op in the student's code must not change the case
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the forward pass must return a tensor, got {type(out).__name__}")
    return out


def _compare_parts(*parts):
    """Compare a tuple of results part by part; the message names the part that differs."""

    def compare(expected, got):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected {len(expected)} results ({', '.join(parts)}), got {type(got).__name__}"
        for part, exp, value in zip(parts, expected, got):
            reason = compare_tensor(exp, value) if isinstance(exp, torch.Tensor) else compare_value(exp, value)
            if reason is not None:
                return f"{part}: {reason}"
        return None

    return compare


# --- vgg_features -------------------------------------------------------------------------------

# Configuration A of the VGG table at 1/8 of its width: the same layers, 144,560 parameters instead of 9.2M.
VGG_A_SLIM = [8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]


def _reference_features(config, in_channels, batch_norm):
    """VGG features from torch layers, for configs torchvision's ``make_layers`` cannot express."""
    layers, channels = [], in_channels
    for entry in config:
        if entry == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        kernel, out = entry if isinstance(entry, (tuple, list)) else (3, entry)
        layers.append(nn.Conv2d(channels, out, kernel, padding=kernel // 2))
        layers += [nn.BatchNorm2d(out)] if batch_norm else []
        layers.append(nn.ReLU())
        channels = out
    return nn.Sequential(*layers)


def _vgg_cases(gen, hidden):
    cases = [
        Case(((VGG_A_SLIM,), torch.randn(2, 3, 32, 32, generator=gen)),
             label=f"{VGG_A_SLIM} (VGG configuration A at 1/8 width); input [2, 3, 32, 32]"),
        Case((([16, "M", 32, (1, 32), "M"],), torch.randn(2, 3, 12, 10, generator=gen, dtype=torch.float64)),
             {"batch_norm": True}, label="[16, 'M', 32, (1, 32), 'M'] (a 1x1 conv as in configuration C), batch_norm=True; input [2, 3, 12, 10]"),
        Case((([8, 8, "M", (5, 6)],), torch.randn(3, 2, 9, 7, generator=gen, dtype=torch.float64)),
             {"in_channels": 2}, label="[8, 8, 'M', (5, 6)], in_channels=2; input [3, 2, 9, 7] (odd size: pooling floors)"),
    ]
    while len(cases) < 9:
        config = []
        for _ in range(rand_int(gen, 1, 6)):
            choice = rand_int(gen, 0, 3)
            if choice == 0 and config.count("M") < 2:
                config.append("M")
            elif choice == 1:
                config.append((2 * rand_int(gen, 0, 2) + 1, rand_int(gen, 1, 8)))
            else:
                config.append(rand_int(gen, 1, 8))
        kwargs = {}
        in_channels = rand_int(gen, 1, 4)
        if in_channels != 3:
            kwargs["in_channels"] = in_channels
        if rand_int(gen, 0, 1):
            kwargs["batch_norm"] = bool(rand_int(gen, 0, 1))
        h, w = rand_int(gen, 4, 11), rand_int(gen, 4, 11)
        x = torch.randn(rand_int(gen, 1, 3), in_channels, h, w, generator=gen, dtype=rand_dtype(gen))
        options = "".join(f", {k}={v}" for k, v in kwargs.items())
        cases.append(Case(((config,), x), kwargs, label=f"{config}{options}; input {list(x.shape)} {str(x.dtype)[6:]}"))
    return cases


def _vgg_run(fn, case):
    module = _build(fn, case, "vgg_features")
    return _count(module), _forward(_fill_by_shape(module), case.args[1])


def _vgg_oracle(case):
    from torchvision.models.vgg import make_layers

    (config,), x = case.args
    in_channels, batch_norm = case.kwargs.get("in_channels", 3), case.kwargs.get("batch_norm", False)
    if in_channels == 3 and all(isinstance(entry, (int, str)) for entry in config):
        reference = make_layers(config, batch_norm=batch_norm)  # torchvision's own VGG features
    else:
        reference = _reference_features(config, in_channels, batch_norm)
    return _count(reference), _forward(_fill_by_shape(reference), x)


register(Exercise("vgg_features", LECTURE, 2, _vgg_cases, _vgg_oracle,
                  _compare_parts("number of parameters", "output"), run=_vgg_run))


# --- inception_output_channels and InceptionModule ----------------------------------------------

INCEPTION_3A = (192, 64, 96, 128, 16, 32, 32)  # GoogLeNet's first module (Table 1 of the paper)


def _reference_inception(channels, reduced, large_kernel):
    """An Inception module from torchvision's pieces (conv without bias, BatchNorm, ReLU per conv)."""
    from torchvision.models.googlenet import BasicConv2d, Inception

    in_channels, ch1x1, _, ch3x3, ch5x5red, ch5x5, _ = channels
    if reduced:
        module = Inception(*channels)
        module.branch3[1] = BasicConv2d(ch5x5red, ch5x5, kernel_size=large_kernel, padding=large_kernel // 2)
        return module

    class Naive(nn.Module):
        def __init__(self):
            super().__init__()
            self.branches = nn.ModuleList([
                BasicConv2d(in_channels, ch1x1, kernel_size=1),
                BasicConv2d(in_channels, ch3x3, kernel_size=3, padding=1),
                BasicConv2d(in_channels, ch5x5, kernel_size=large_kernel, padding=large_kernel // 2),
                nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            ])

        def forward(self, x):
            return torch.cat([branch(x) for branch in self.branches], dim=1)

    return Naive()


def _inception_cases(gen, hidden):
    """``Case.args = (constructor args, input)``; kwargs are the constructor's keywords."""
    cases = [
        Case((INCEPTION_3A, torch.randn(2, 192, 8, 6, generator=gen)), {"reduced": True},
             label="192, 64, 96, 128, 16, 32, 32, reduced=True (GoogLeNet's inception 3a); input [2, 192, 8, 6]"),
        Case((INCEPTION_3A, torch.randn(2, 192, 8, 6, generator=gen)), {"reduced": False},
             label="192, 64, 96, 128, 16, 32, 32, reduced=False (the naive module); input [2, 192, 8, 6]"),
        Case((INCEPTION_3A, torch.randn(1, 192, 5, 7, generator=gen)), {"large_kernel": 3},
             label="192, 64, 96, 128, 16, 32, 32, large_kernel=3 (torchvision's inception 3a); input [1, 192, 5, 7]"),
    ]
    while len(cases) < 10:
        channels = tuple(rand_int(gen, 1, 12) for _ in range(7))
        kwargs = {}
        if rand_int(gen, 0, 2):
            kwargs["reduced"] = bool(rand_int(gen, 0, 1))
        if rand_int(gen, 0, 1):
            kwargs["large_kernel"] = 2 * rand_int(gen, 1, 3) + 1
        x = torch.randn(rand_int(gen, 1, 3), channels[0], rand_int(gen, 1, 9), rand_int(gen, 1, 9), generator=gen, dtype=rand_dtype(gen))
        options = "".join(f", {k}={v}" for k, v in kwargs.items())
        cases.append(Case((channels, x), kwargs, label=f"{', '.join(map(str, channels))}{options}; input {list(x.shape)}"))
    return cases


def _inception_oracle(case):
    channels, x = case.args
    module = _reference_inception(channels, case.kwargs.get("reduced", True), case.kwargs.get("large_kernel", 5))
    return _count(module), tuple(_forward(module, x).shape)


def _inception_run(fn, case):
    module = _build(fn, case, "InceptionModule(...)")
    return _count(module), tuple(_forward(module, case.args[1]).shape)


def _channels_cases(gen, hidden):
    cases = [
        Case(INCEPTION_3A, {"reduced": True}, label="192, 64, 96, 128, 16, 32, 32, reduced=True (inception 3a)"),
        Case(INCEPTION_3A, {"reduced": False}, label="192, 64, 96, 128, 16, 32, 32, reduced=False (naive 3a)"),
        Case((832, 384, 192, 384, 48, 128, 128), label="832, 384, 192, 384, 48, 128, 128 (inception 5b)"),
    ]
    while len(cases) < 10:
        kwargs = {"reduced": bool(rand_int(gen, 0, 1))} if rand_int(gen, 0, 2) else {}
        cases.append(Case(tuple(rand_int(gen, 1, 64) for _ in range(7)), kwargs))
    return cases


def _channels_oracle(case):
    # Empirical: the channel count of a reference module's output (shapes only, on the meta device).
    with torch.device("meta"):
        module = _reference_inception(case.args, case.kwargs.get("reduced", True), 5)
        return int(module(torch.empty(1, case.args[0], 4, 4)).shape[1])


register(Exercise("inception_output_channels", LECTURE, 1, _channels_cases, _channels_oracle, compare_value))
register(Exercise("InceptionModule", LECTURE, 3, _inception_cases, _inception_oracle,
                  _compare_parts("number of parameters", "output shape"), run=_inception_run, kind="class"))


# --- ResidualBlock ------------------------------------------------------------------------------

def _residual_cases(gen, hidden):
    """``Case.args = ((in_channels, out_channels), input)``; kwargs hold ``stride`` when not 1."""
    cases = [
        Case(((64, 64), torch.randn(2, 64, 8, 8, generator=gen, dtype=torch.float64)), {},
             label="64, 64 (ResNet-18's layer1: identity shortcut); input [2, 64, 8, 8]"),
        Case(((64, 128), torch.randn(2, 64, 9, 7, generator=gen, dtype=torch.float64)), {"stride": 2},
             label="64, 128, stride=2 (ResNet-18's layer2.0: projection shortcut); input [2, 64, 9, 7]"),
        Case(((6, 10), torch.randn(3, 6, 5, 6, generator=gen, dtype=torch.float64)), {},
             label="6, 10 (more channels, same size: projection); input [3, 6, 5, 6]"),
        Case(((8, 8), torch.randn(2, 8, 7, 10, generator=gen, dtype=torch.float64)), {"stride": 3},
             label="8, 8, stride=3 (same channels, smaller map: projection); input [2, 8, 7, 10]"),
    ]
    while len(cases) < 10:
        c_in, c_out, stride = rand_int(gen, 1, 12), rand_int(gen, 1, 12), rand_int(gen, 1, 3)
        if len(cases) % 2:  # keep half the random cases on the identity shortcut
            c_out, stride = c_in, 1
        x = torch.randn(rand_int(gen, 1, 3), c_in, rand_int(gen, 2, 10), rand_int(gen, 2, 10), generator=gen, dtype=rand_dtype(gen))
        kwargs = {"stride": stride} if stride != 1 else {}
        options = f", stride={stride}" if stride != 1 else ""
        cases.append(Case(((c_in, c_out), x), kwargs, label=f"{c_in}, {c_out}{options}; input {list(x.shape)} {str(x.dtype)[6:]}"))
    return cases


def _zero_convs(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
    return module


def _residual_run(fn, case):
    block = _build(fn, case, "ResidualBlock(...)")
    count = _count(block)
    out = _forward(_fill_by_shape(block), case.args[1])
    # A fresh block with F's convolutions zeroed: F(x) = 0, so what comes out is the shortcut's doing.
    zeroed = _forward(_zero_convs(_build(fn, case, "ResidualBlock(...)")), case.args[1])
    return count, out, zeroed


def _residual_oracle(case):
    from torchvision.models.resnet import BasicBlock

    (c_in, c_out), x = case.args
    stride = case.kwargs.get("stride", 1)
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
    block = BasicBlock(c_in, c_out, stride=stride, downsample=downsample)
    out = _forward(_fill_by_shape(block), x)
    # With zero convolutions the identity block must give relu(0 + x); a projection gives relu(BN(0)) = 0.
    zeroed = torch.relu(x) if downsample is None else torch.zeros_like(out)
    return _count(block), out, zeroed


register(Exercise("ResidualBlock", LECTURE, 3, _residual_cases, _residual_oracle,
                  _compare_parts("number of parameters", "output (every block given the same weights)",
                                 "output with every conv weight zeroed (must be relu(x) for an identity shortcut)"),
                  run=_residual_run, kind="class"))


# --- topk_error ---------------------------------------------------------------------------------

#: The lecture's example: 4 images, 5 classes.
EXAMPLE_LOGITS = torch.tensor([
    [2.0, 0.5, 0.1, -1.0, 0.3],   # label 0 ranked 1st
    [0.2, 1.5, 2.5, 0.0, -0.5],   # label 1 ranked 2nd
    [1.2, 0.4, -0.3, 0.9, 2.2],   # label 2 ranked 5th
    [0.1, 0.7, 0.3, 1.1, 0.5],    # label 4 ranked 3rd
])
EXAMPLE_LABELS = torch.tensor([0, 1, 2, 4])


def _topk_cases(gen, hidden):
    cases = [Case((EXAMPLE_LOGITS, EXAMPLE_LABELS, k), label=f"the lecture's 4 images x 5 classes, k={k}") for k in (1, 3, 5)]
    while len(cases) < 12:
        rows, classes = rand_int(gen, 1, 40), rand_int(gen, 2, 20)
        k = [1, classes, rand_int(gen, 1, classes)][len(cases) % 3]
        labels = torch.randint(0, classes, (rows,), generator=gen, dtype=[torch.int64, torch.int32][rand_int(gen, 0, 1)])
        cases.append(Case((torch.randn(rows, classes, generator=gen, dtype=rand_dtype(gen)), labels, k)))
    return cases


def _topk_oracle(case):
    logits, labels, k = case.args
    hit = (logits.topk(k, dim=1).indices == labels.long()[:, None]).any(dim=1)
    return (~hit).to(logits.dtype).mean()


register(Exercise("topk_error", LECTURE, 2, _topk_cases, _topk_oracle))
