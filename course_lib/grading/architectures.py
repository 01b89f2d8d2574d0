"""Exercises of lecture 03 (architectures), checked against torchvision's building blocks and ``torch.topk``.

The model exercises (``vgg_features``, ``InceptionModule``, ``ResidualBlock``) are graded by building the
student's module from the case's plain-data arguments, counting its parameters and running it (in eval
mode) on the case's input. To compare outputs without caring in which order a student registered the
layers, every parameter and BatchNorm statistic is filled with numbers that depend only on its shape and
role (:func:`_fill_by_shape`), in the student's module and in the reference alike. So the outputs pin
down everything the texts state: layer order, padding, BatchNorm's ``eps``, Inception's branch order.

Each exercise carries its classic wrong versions (:class:`~.core.Mistake`), built from plain ``torch.nn``
layers because they run under the same watch as a student's code (which must not call
``course_lib.architectures`` or torchvision's model code).
"""
from __future__ import annotations

import zlib

import torch
from torch import nn

from .core import WRONG_DTYPE, Case, Exercise, Mistake, compare_tensor, compare_value, register, rand_dtype, rand_int

LECTURE = "03_architectures"
TOPK_SECTION = "(lecture 03, section 'Top-1 and top-5 error')"
VGG_SECTION = "(lecture 03, section 'VGG: nothing but 3x3 convolutions')"
INCEPTION_SECTION = "(lecture 03, section 'GoogLeNet: Inception modules')"
RESNET_SECTION = "(lecture 03, section 'ResNet: learn only the correction')"
LIBRARY = "course_lib.architectures"


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
    """Compare a tuple of results part by part; the message names the part that differs (and still
    starts with "wrong dtype" when only the dtype is off, so the check says that first)."""

    def compare(expected, got):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected {len(expected)} results ({', '.join(parts)}), got {type(got).__name__}"
        for part, exp, value in zip(parts, expected, got):
            reason = compare_tensor(exp, value) if isinstance(exp, torch.Tensor) else compare_value(exp, value)
            if reason is not None and reason.startswith(WRONG_DTYPE):
                return f"{reason} in the {part.split(' (')[0]}"
            if reason is not None:
                return f"{part}: {reason}"
        return None

    return compare


# --- vgg_features -------------------------------------------------------------------------------

# Configuration A of the VGG table at 1/8 of its width: the same layers, 144,560 parameters instead of 9.2M.
VGG_A_SLIM = [8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]


def _features(config, in_channels, batch_norm, *, kernel_of=None, padding=True, relu_first=False, pool=None,
              bias=True):
    """VGG features from torch layers; the keywords bend it into one classic mistake each."""
    layers, channels = [], in_channels
    for entry in config:
        if entry == "M":
            layers.append(pool() if pool is not None else nn.MaxPool2d(2, 2))
            continue
        kernel, out = entry if isinstance(entry, (tuple, list)) else (3, entry)
        kernel = kernel if kernel_of is None else kernel_of(kernel)
        layers.append(nn.Conv2d(channels, out, kernel, padding=kernel // 2 if padding else 0, bias=bias))
        norm = [nn.BatchNorm2d(out)] if batch_norm else []
        layers += [nn.ReLU(), *norm] if relu_first else [*norm, nn.ReLU()]
        channels = out
    return nn.Sequential(*layers)


def _reference_features(config, in_channels, batch_norm):
    """VGG features from torch layers, for configs torchvision's ``make_layers`` cannot express."""
    return _features(config, in_channels, batch_norm)


def _vgg_mistake(in_channels_from=None, **bend):
    def vgg_features(config_list, in_channels=3, batch_norm=False):
        return _features(config_list, in_channels if in_channels_from is None else in_channels_from, batch_norm, **bend)

    return vgg_features


def _vgg_cases(gen, hidden):
    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    cases = [
        Case(((VGG_A_SLIM,), randn(2, 3, 32, 32)),
             label=f"{VGG_A_SLIM} (VGG configuration A at 1/8 width); input [2, 3, 32, 32]"),
        Case((([16, "M", 32, (1, 32), "M"],), randn(2, 3, 12, 10, dtype=torch.float64)),
             {"batch_norm": True}, label="[16, 'M', 32, (1, 32), 'M'] (a 1x1 conv as in configuration C), batch_norm=True; input [2, 3, 12, 10]"),
        Case((([8, 8, "M", (5, 6)],), randn(3, 2, 9, 7, dtype=torch.float64)),
             {"in_channels": 2}, label="[8, 8, 'M', (5, 6)], in_channels=2; input [3, 2, 9, 7] (odd size: pooling floors)"),
        Case((([(1, 4), "M", 5, (1, 3)],), randn(2, 1, 6, 6, dtype=torch.float64)),
             {"in_channels": 1, "batch_norm": False}, label="[(1, 4), 'M', 5, (1, 3)], in_channels=1, batch_norm=False; input [2, 1, 6, 6]"),
    ]
    while len(cases) < 10:
        # Every random configuration mixes all three kinds of entry: an int, a (kernel, channels) pair, "M".
        config = [rand_int(gen, 1, 8), (2 * rand_int(gen, 0, 2) + 1, rand_int(gen, 1, 8)), "M"]
        for _ in range(rand_int(gen, 0, 3)):
            config.append([rand_int(gen, 1, 8), (2 * rand_int(gen, 0, 2) + 1, rand_int(gen, 1, 8)), "M"][rand_int(gen, 0, 2)])
        order = torch.randperm(len(config), generator=gen).tolist()
        config = [config[i] for i in order]
        if config.count("M") > 2:
            continue
        kwargs = {}
        in_channels = rand_int(gen, 1, 4)
        if in_channels != 3:
            kwargs["in_channels"] = in_channels
        if rand_int(gen, 0, 1):
            kwargs["batch_norm"] = bool(rand_int(gen, 0, 1))
        h, w = rand_int(gen, 4, 11), rand_int(gen, 4, 11)
        x = randn(rand_int(gen, 1, 3), in_channels, h, w, dtype=rand_dtype(gen))
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


register(Exercise(
    "vgg_features", LECTURE, 2, _vgg_cases, _vgg_oracle, _compare_parts("number of parameters", "output"), run=_vgg_run,
    params=("config_list", "in_channels", "batch_norm"),
    arguments=lambda case: {"config_list": case.args[0][0], **case.kwargs, "x": case.args[1]},
    forms={"config_list": ("list of int / str", "list of (int, int) / int / str"), "in_channels": ("int",),
           "batch_norm": ("bool",), "x": ("tensor float32", "tensor float64")},
    forbidden=("torchvision.models.vgg", LIBRARY),
    mistakes=(
        Mistake("ReLU before BatchNorm", _vgg_mistake(relu_first=True),
                f"Your outputs differ only with batch_norm=True: BatchNorm goes between the convolution and its ReLU {VGG_SECTION}."),
        Mistake("pair's kernel ignored", _vgg_mistake(kernel_of=lambda kernel: 3),
                f"Your layers ignore the kernel size of (k, c) entries: such an entry is a k x k convolution with padding k // 2 {VGG_SECTION}."),
        Mistake("no padding", _vgg_mistake(padding=False),
                f"Your convolutions shrink the maps: VGG pads every convolution by k // 2 so that only the poolings change the size {VGG_SECTION}."),
        Mistake("in_channels ignored", _vgg_mistake(in_channels_from=3),
                f"Your first convolution always expects 3 channels: it must take `in_channels` {VGG_SECTION}."),
        Mistake("average pooling", _vgg_mistake(pool=lambda: nn.AvgPool2d(2, 2)),
                f"You pool with averages: VGG's \"M\" is 2x2 max pooling with stride 2 {VGG_SECTION}."),
        Mistake("convolutions without bias", _vgg_mistake(bias=False),
                f"Your convolutions have no bias: VGG's convolutions have one, with or without BatchNorm {VGG_SECTION}."),
    ),
))


# --- inception_output_channels and InceptionModule ----------------------------------------------

INCEPTION_3A = (192, 64, 96, 128, 16, 32, 32)  # GoogLeNet's first module (Table 1 of the paper)
INCEPTION_PARAMS = ("in_channels", "ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj", "reduced")


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


def _inception_mistake(*, bias=False, eps=0.001, norm=True, order=(0, 1, 2, 3), fixed_kernel=None, project_naive_pool=False):
    """An Inception module from torch layers; the keywords bend it into one classic mistake each."""

    class InceptionModule(nn.Module):
        def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced=True, *,
                     large_kernel=5):
            super().__init__()
            k = fixed_kernel or large_kernel

            def unit(c_in, c_out, kernel):
                return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=bias),
                                     *([nn.BatchNorm2d(c_out, eps=eps)] if norm else []), nn.ReLU())

            pool = nn.MaxPool2d(3, 1, 1)
            if reduced:
                branches = [unit(in_channels, ch1x1, 1),
                            nn.Sequential(unit(in_channels, ch3x3red, 1), unit(ch3x3red, ch3x3, 3)),
                            nn.Sequential(unit(in_channels, ch5x5red, 1), unit(ch5x5red, ch5x5, k)),
                            nn.Sequential(pool, unit(in_channels, pool_proj, 1))]
            else:
                last = nn.Sequential(pool, unit(in_channels, pool_proj, 1)) if project_naive_pool else pool
                branches = [unit(in_channels, ch1x1, 1), unit(in_channels, ch3x3, 3), unit(in_channels, ch5x5, k), last]
            self.branches = nn.ModuleList(branches[i] for i in order)

        def forward(self, x):
            return torch.cat([branch(x) for branch in self.branches], dim=1)

    return InceptionModule


def _inception_cases(gen, hidden):
    """``Case.args = (constructor args, input)``; kwargs are the constructor's keywords."""
    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    cases = [
        Case((INCEPTION_3A, randn(2, 192, 8, 6)), {"reduced": True},
             label="192, 64, 96, 128, 16, 32, 32, reduced=True (GoogLeNet's inception 3a); input [2, 192, 8, 6]"),
        Case((INCEPTION_3A, randn(2, 192, 8, 6)), {"reduced": False},
             label="192, 64, 96, 128, 16, 32, 32, reduced=False (the naive module); input [2, 192, 8, 6]"),
        Case((INCEPTION_3A, randn(1, 192, 5, 7)), {"large_kernel": 3},
             label="192, 64, 96, 128, 16, 32, 32, large_kernel=3 (torchvision's inception 3a); input [1, 192, 5, 7]"),
        Case(((6, 2, 3, 4, 2, 5, 3), randn(2, 6, 6, 5, dtype=torch.float64)), {"reduced": False, "large_kernel": 7},
             label="6, 2, 3, 4, 2, 5, 3, reduced=False, large_kernel=7; input [2, 6, 6, 5] float64"),
    ]
    while len(cases) < 10:
        channels = tuple(rand_int(gen, 1, 12) for _ in range(7))
        kwargs = {}
        if rand_int(gen, 0, 2):
            kwargs["reduced"] = bool(rand_int(gen, 0, 1))
        if rand_int(gen, 0, 1):
            kwargs["large_kernel"] = 2 * rand_int(gen, 1, 3) + 1
        x = randn(rand_int(gen, 1, 3), channels[0], rand_int(gen, 1, 9), rand_int(gen, 1, 9), dtype=rand_dtype(gen))
        options = "".join(f", {k}={v}" for k, v in kwargs.items())
        cases.append(Case((channels, x), kwargs, label=f"{', '.join(map(str, channels))}{options}; input {list(x.shape)} {str(x.dtype)[6:]}"))
    return cases


def _inception_oracle(case):
    channels, x = case.args
    module = _reference_inception(channels, case.kwargs.get("reduced", True), case.kwargs.get("large_kernel", 5))
    return _count(module), _forward(_fill_by_shape(module), x)


def _inception_run(fn, case):
    module = _build(fn, case, "InceptionModule(...)")
    return _count(module), _forward(_fill_by_shape(module), case.args[1])


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


def _channels_mistake(count):
    def inception_output_channels(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced=True):
        return count(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduced)

    return inception_output_channels


register(Exercise(
    "inception_output_channels", LECTURE, 1, _channels_cases, _channels_oracle, compare_value,
    params=INCEPTION_PARAMS, forms={**{name: ("int",) for name in INCEPTION_PARAMS[:-1]}, "reduced": ("bool",)},
    forbidden=(LIBRARY,),
    mistakes=(
        Mistake("naive keeps pool_proj", _channels_mistake(lambda i, a, b, c, d, e, p, r: a + c + e + p),
                f"Your naive count uses pool_proj: the naive module has no projection after its pooling, which passes all in_channels maps on {INCEPTION_SECTION}."),
        Mistake("reductions counted", _channels_mistake(lambda i, a, b, c, d, e, p, r: a + b + c + d + e + (p if r else i)),
                f"You add the reductions' channels: ch3x3red and ch5x5red feed the 3x3 and 5x5 convolutions inside their branches, they are not outputs {INCEPTION_SECTION}."),
        Mistake("pool branch forgotten", _channels_mistake(lambda i, a, b, c, d, e, p, r: a + c + e),
                f"Your count leaves out the pooling branch: the module concatenates four branches {INCEPTION_SECTION}."),
        Mistake("reductions instead of outputs", _channels_mistake(lambda i, a, b, c, d, e, p, r: a + b + d + (p if r else i)),
                f"You count ch3x3red and ch5x5red where the branches end in ch3x3 and ch5x5 maps: the reductions only feed the 3x3 and 5x5 convolutions {INCEPTION_SECTION}."),
    ),
))

register(Exercise(
    "InceptionModule", LECTURE, 3, _inception_cases, _inception_oracle,
    _compare_parts("number of parameters", "output (your module and the reference given the same weights, eval mode)"),
    run=_inception_run, kind="class",
    params=(*INCEPTION_PARAMS, "large_kernel"),
    arguments=lambda case: {**dict(zip(INCEPTION_PARAMS, case.args[0])), **case.kwargs, "x": case.args[1]},
    forms={**{name: ("int",) for name in INCEPTION_PARAMS[:-1]}, "reduced": ("bool",), "large_kernel": ("int",),
           "x": ("tensor float32", "tensor float64")},
    forbidden=("torchvision.models.googlenet", LIBRARY),
    mistakes=(
        Mistake("conv bias", _inception_mistake(bias=True),
                f"Your convolutions have a bias: before a BatchNorm it is redundant (BatchNorm has its own shift), so GoogLeNet's have none {INCEPTION_SECTION}."),
        Mistake("default eps", _inception_mistake(eps=1e-5),
                f"Your BatchNorm uses the default eps=1e-5: GoogLeNet's (and this exercise's) is eps=0.001 {INCEPTION_SECTION}."),
        Mistake("no BatchNorm", _inception_mistake(norm=False),
                f"Your convolutions lack their BatchNorm: every conv is conv -> BatchNorm2d(eps=0.001) -> ReLU {INCEPTION_SECTION}."),
        Mistake("branch order", _inception_mistake(order=(0, 2, 1, 3)),
                f"Your output has the right parts in the wrong order: concatenate 1x1, 3x3, large-kernel, then pooling branch {INCEPTION_SECTION}."),
        Mistake("large_kernel ignored", _inception_mistake(fixed_kernel=5),
                f"Your large branch always uses a 5x5 kernel: it must use large_kernel (torchvision's GoogLeNet uses 3) {INCEPTION_SECTION}."),
        Mistake("naive pool projected", _inception_mistake(project_naive_pool=True),
                f"Your naive module projects its pooling branch: only the reduced module has that 1x1 convolution {INCEPTION_SECTION}."),
    ),
))


# --- ResidualBlock ------------------------------------------------------------------------------

def _residual_cases(gen, hidden):
    """``Case.args = ((in_channels, out_channels), input)``; kwargs hold ``stride`` when not 1."""
    def randn(*shape, dtype=torch.float64):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    cases = [
        Case(((64, 64), randn(2, 64, 8, 8)), {},
             label="64, 64 (ResNet-18's layer1: identity shortcut); input [2, 64, 8, 8]"),
        Case(((64, 128), randn(2, 64, 9, 7)), {"stride": 2},
             label="64, 128, stride=2 (ResNet-18's layer2.0: projection shortcut); input [2, 64, 9, 7]"),
        Case(((6, 10), randn(3, 6, 5, 6)), {},
             label="6, 10 (more channels, same size: projection); input [3, 6, 5, 6]"),
        Case(((8, 8), randn(2, 8, 7, 10)), {"stride": 3},
             label="8, 8, stride=3 (same channels, smaller map: projection); input [2, 8, 7, 10]"),
    ]
    while len(cases) < 10:
        c_in, c_out, stride = rand_int(gen, 1, 12), rand_int(gen, 1, 12), rand_int(gen, 1, 3)
        if len(cases) % 2:  # keep half the random cases on the identity shortcut
            c_out, stride = c_in, 1
        x = randn(rand_int(gen, 1, 3), c_in, rand_int(gen, 2, 10), rand_int(gen, 2, 10), dtype=rand_dtype(gen))
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


def _block_mistake(*, shortcut=True, relu_before_add=False, always_project=False, stride_on_second=False,
                   projection_norm=True, final_relu=True):
    """ResNet's basic block from torch layers; the keywords bend it into one classic mistake each."""

    class ResidualBlock(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            s1, s2 = (1, stride) if stride_on_second else (stride, 1)
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, s1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, s2, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.projection = None
            if always_project or stride != 1 or in_channels != out_channels:
                self.projection = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                                *([nn.BatchNorm2d(out_channels)] if projection_norm else []))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            if relu_before_add:
                out = torch.relu(out)
            if shortcut:
                out = out + (x if self.projection is None else self.projection(x))
            return torch.relu(out) if final_relu else out

    return ResidualBlock


register(Exercise(
    "ResidualBlock", LECTURE, 3, _residual_cases, _residual_oracle,
    _compare_parts("number of parameters", "output (every block given the same weights, eval mode)",
                   "output with every conv weight zeroed (must be relu(x) for an identity shortcut)"),
    run=_residual_run, kind="class",
    params=("in_channels", "out_channels", "stride"),
    arguments=lambda case: {"in_channels": case.args[0][0], "out_channels": case.args[0][1], **case.kwargs, "x": case.args[1]},
    forms={"in_channels": ("int",), "out_channels": ("int",), "stride": ("int",), "x": ("tensor float32", "tensor float64")},
    forbidden=("torchvision.models.resnet", LIBRARY),
    mistakes=(
        Mistake("no shortcut", _block_mistake(shortcut=False),
                f"Your block has no shortcut, so it is a plain block: add x (or its projection) to F(x) before the last ReLU {RESNET_SECTION}."),
        Mistake("ReLU before the addition", _block_mistake(relu_before_add=True),
                f"You apply a ReLU to F(x) before adding the shortcut: F ends with BatchNorm, and the one ReLU comes after the sum {RESNET_SECTION}."),
        Mistake("always projects", _block_mistake(always_project=True),
                f"Your shortcut is a projection even when the shapes agree: it is the identity when stride == 1 and the channel counts are equal {RESNET_SECTION}."),
        Mistake("stride on the second conv", _block_mistake(stride_on_second=True),
                f"Your block strides in its second convolution: the first 3x3 convolution carries the stride {RESNET_SECTION}."),
        Mistake("projection without BatchNorm", _block_mistake(projection_norm=False),
                f"Your projection shortcut lacks its BatchNorm: it is a strided 1x1 conv followed by BatchNorm2d {RESNET_SECTION}."),
        Mistake("no final ReLU", _block_mistake(final_relu=False),
                f"Your block returns F(x) + shortcut(x) without the final ReLU: H(x) = ReLU(F(x) + shortcut(x)) {RESNET_SECTION}."),
    ),
))


# --- topk_error ---------------------------------------------------------------------------------

#: The lecture's example: 4 images, 5 classes.
EXAMPLE_LOGITS = torch.tensor([
    [2.0, 0.5, 0.1, -1.0, 0.3],   # label 0 ranked 1st
    [0.2, 1.5, 2.5, 0.0, -0.5],   # label 1 ranked 2nd
    [1.2, 0.4, -0.3, 0.9, 2.2],   # label 2 ranked 5th
    [0.1, 0.7, 0.3, 1.1, 0.5],    # label 4 ranked 3rd
])
EXAMPLE_LABELS = torch.tensor([0, 1, 2, 4])
#: Ties at the label: a hit when fewer than k classes score strictly higher, whatever the tied ones do.
TIED_LOGITS = torch.tensor([
    [1.0, 2.0, 2.0, 0.0],   # label 2 tied with class 1 before it: a top-1 hit
    [2.0, 2.0, 1.0, 0.0],   # label 0 tied with class 1 after it: a top-1 hit
    [0.0, 3.0, 1.0, 1.0],   # label 2 tied, but class 1 scores higher: a top-1 miss
    [5.0, 1.0, 1.0, 1.0],   # label 0 alone on top: a hit
])
TIED_LABELS = torch.tensor([2, 0, 2, 0])


def _topk_cases(gen, hidden):
    cases = [Case((EXAMPLE_LOGITS, EXAMPLE_LABELS, k), label=f"the lecture's 4 images x 5 classes, k={k}") for k in (1, 3, 5)]
    cases += [
        Case((TIED_LOGITS, TIED_LABELS, 1), label="4 rows whose label ties with another class, k=1"),
        Case((TIED_LOGITS.double(), TIED_LABELS.int(), 2), label="the same tied rows, k=2, float64 logits, int32 labels"),
        Case((torch.zeros(3, 4), torch.tensor([0, 3, 1]), 2), label="every class tied in every row (all logits 0), k=2"),
        Case((torch.randn(6, 7, generator=gen, dtype=torch.float64), torch.randint(0, 7, (6,), generator=gen, dtype=torch.int32), 3),
             label="[6, 7] float64 logits, int32 labels, k=3"),
    ]
    while len(cases) < 14:
        rows, classes = rand_int(gen, 1, 40), rand_int(gen, 2, 20)
        k = [1, classes, rand_int(gen, 1, classes)][len(cases) % 3]
        labels = torch.randint(0, classes, (rows,), generator=gen, dtype=[torch.int64, torch.int32][rand_int(gen, 0, 1)])
        logits = torch.randn(rows, classes, generator=gen, dtype=rand_dtype(gen))
        if rand_int(gen, 0, 1):  # scores rounded to a few levels tie often
            logits = logits.round()
        cases.append(Case((logits, labels, k)))
    return cases


def _topk_oracle(case):
    # A label is a hit when its logit reaches the k-th highest one (ties resolved in its favour).
    logits, labels, k = case.args
    kth = logits.topk(k, dim=1).values[:, -1]
    hit = logits.gather(1, labels.long()[:, None])[:, 0] >= kth
    return (~hit).to(logits.dtype).mean()


def _higher(logits, labels):
    """How many classes score strictly higher than each row's label."""
    return (logits > logits.gather(1, labels.long()[:, None])).sum(1)


def _sort_rank(logits, labels):
    """The label's position in a stable descending sort: ties broken by class index, not in its favour."""
    order = torch.sort(logits, dim=1, descending=True, stable=True).indices
    return (order == labels.long()[:, None]).int().argmax(1)


def _topk_mistake(missed, reduce=torch.mean):
    def topk_error(logits, labels, k):
        return reduce(missed(logits, labels, k).to(logits.dtype))

    return topk_error


register(Exercise(
    "topk_error", LECTURE, 2, _topk_cases, _topk_oracle,
    params=("logits", "labels", "k"),
    forms={"logits": ("tensor float32", "tensor float64"), "labels": ("tensor int64", "tensor int32"), "k": ("int",)},
    forbidden=("torch.topk", "torch.Tensor.topk", LIBRARY),
    mistakes=(
        Mistake("accuracy", _topk_mistake(lambda lg, lb, k: _higher(lg, lb) < k),
                f"You return the top-k accuracy: the error is the fraction of rows whose label is not among the k highest {TOPK_SECTION}."),
        Mistake("ties count against the label", _topk_mistake(lambda lg, lb, k: (lg >= lg.gather(1, lb.long()[:, None])).sum(1) - 1 >= k),
                f"You count classes that tie with the label as if they scored higher (>=): only strictly higher scores push the label out {TOPK_SECTION}."),
        Mistake("sort position", _topk_mistake(lambda lg, lb, k: _sort_rank(lg, lb) >= k),
                f"You use the label's position in a sort, which breaks ties by class index: a label is a hit when fewer than k classes score strictly higher {TOPK_SECTION}."),
        Mistake("lowest logits", _topk_mistake(lambda lg, lb, k: (lg < lg.gather(1, lb.long()[:, None])).sum(1) >= k),
                f"You look among the k lowest logits: top-k means the k highest scores {TOPK_SECTION}."),
        Mistake("off by one", _topk_mistake(lambda lg, lb, k: _higher(lg, lb) > k),
                f"You count a label as a hit when exactly k classes score higher: then it is ranked k+1st, outside the top k {TOPK_SECTION}."),
        Mistake("count, not fraction", _topk_mistake(lambda lg, lb, k: _higher(lg, lb) >= k, reduce=torch.sum),
                f"You return how many rows miss: the error is that number divided by the number of rows {TOPK_SECTION}."),
    ),
))
