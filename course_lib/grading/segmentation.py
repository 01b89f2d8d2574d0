"""Exercises of lecture 07 (semantic segmentation): the arithmetic of fully convolutional networks.

Oracles, none of them the course's own functions:

- ``fc_to_conv``: the linear layer itself (``F.linear``) applied to every window of the input in a
  Python loop; the student's convolution must give the same score map.
- ``conv_transpose_output_size``: the output shape of ``nn.ConvTranspose2d`` on the meta device.
- ``bilinear_kernel``: ``F.interpolate(mode="bilinear", align_corners=False)``; the student's kernel,
  used in ``F.conv_transpose2d`` with ``stride=factor``, must upsample a smooth image identically away
  from the border.
- ``mean_iou``: a loop over classes with boolean masks, hand-worked values for the lecture's examples.

A case cannot carry an ``nn.Linear`` (cases are plain data that travel into the student's kernel), so
``fc_to_conv`` cases carry the layer's weight and bias and :func:`_fc_run` builds the layer there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .core import Case, Exercise, Mistake, compare_tensor, compare_value, rand_dtype, rand_int, register, section

LECTURE = "07_segmentation"


FC_SECTION = section("07", "A fully connected layer is a convolution")
TRANSPOSED_SECTION = section("07", "Transposed convolution: size, bilinear kernel, checkerboard")
MIOU_SECTION = section("07", "Mean IoU: the confusion matrix, and why not pixel accuracy")
# The exercises rebuild course_lib.segmentation, so none of it may be called.
FORBIDDEN = ("course_lib.segmentation",)


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


# --- fc_to_conv ---------------------------------------------------------------------------------

def _linear(weight: torch.Tensor, bias) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _fc_case(gen, out_features, in_channels, kernel, x_size, batch=1, dtype=torch.float64, bias=True, label=""):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    weight = torch.randn(out_features, in_channels * kh * kw, generator=gen, dtype=dtype)
    b = torch.randn(out_features, generator=gen, dtype=dtype) if bias else None
    x = torch.randn(batch, in_channels, *x_size, generator=gen, dtype=dtype)
    return Case((weight, b, in_channels, kernel, x), label=label or
                f"Linear({in_channels * kh * kw}, {out_features}{'' if bias else ', bias=False'}), in_channels={in_channels}, "
                f"kernel_size={kernel!r}; input {list(x.shape)} {str(dtype)[6:]}")


def fc_example():
    """The lecture's worked example: ``Linear(8, 1)`` with weights 1..8 and bias 0.5 on ``[2, 2, 2]`` windows,
    and a ``[1, 2, 3, 3]`` input holding 0..17."""
    weight = torch.arange(1.0, 9.0).view(1, 8)
    return weight, torch.tensor([0.5]), torch.arange(18.0).view(1, 2, 3, 3)


def _fc_cases(gen, hidden):
    weight, bias, x = fc_example()
    cases = [
        Case((weight, bias, 2, 2, x), label="lecture example: Linear(8, 1), weights 1..8, bias 0.5, as a 2x2 conv "
                                             "with 2 input channels; input 0..17 as [1, 2, 3, 3] (4 windows)"),
        _fc_case(gen, 64, 32, 4, (6, 7), dtype=torch.float32,
                 label="the lecture's patch classifier: Linear(512, 64) reading a [32, 4, 4] map; input [1, 32, 6, 7]"),
        _fc_case(gen, 3, 2, (2, 3), (4, 5), batch=2, label="a 2x3 window (kernel_size=(2, 3)); input [2, 2, 4, 5]"),
        _fc_case(gen, 4, 5, 1, (3, 3), label="kernel_size=1: a linear layer on each pixel's channel vector is a 1x1 conv"),
        _fc_case(gen, 2, 3, 3, (3, 3), batch=3, bias=False, label="no bias; input exactly one window ([3, 3, 3, 3] -> [3, 2, 1, 1])"),
    ]
    for _ in range(5):
        channels, out = rand_int(gen, 1, 4), rand_int(gen, 1, 5)
        kernel = rand_int(gen, 1, 4) if rand_int(gen, 0, 2) else (rand_int(gen, 1, 4), rand_int(gen, 1, 4))
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        size = (kh + rand_int(gen, 0, 4), kw + rand_int(gen, 0, 4))
        cases.append(_fc_case(gen, out, channels, kernel, size, batch=rand_int(gen, 1, 2), dtype=rand_dtype(gen),
                              bias=bool(rand_int(gen, 0, 3))))
    return cases


def _fc_run(fn, case):
    weight, bias, in_channels, kernel_size, x = case.args
    conv = fn(_linear(weight, bias), in_channels, kernel_size)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"fc_to_conv must return a torch.nn.Conv2d, got {type(conv).__name__}")
    with torch.no_grad():
        return conv(x.to(conv.weight.dtype))


def _fc_oracle(case):
    weight, bias, _, kernel, x = case.args
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    rows, cols = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = x.new_zeros(x.shape[0], weight.shape[0], rows, cols)
    for i in range(rows):
        for j in range(cols):
            out[:, :, i, j] = F.linear(x[:, :, i : i + kh, j : j + kw].reshape(x.shape[0], -1), weight, bias)
    return out


def _fc_arguments(case):
    weight, bias, in_channels, kernel_size, _ = case.args
    return {"linear": _linear(weight, bias), "in_channels": in_channels, "kernel_size": kernel_size}


def _fc_mistake(order="channels first", bias=True, stride_is_kernel=False, same_padding=False):
    def fc_to_conv(linear, in_channels, kernel_size):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        out = linear.out_features
        conv = nn.Conv2d(in_channels, out, (kh, kw), stride=(kh, kw) if stride_is_kernel else 1,
                         padding=(kh // 2, kw // 2) if same_padding else 0,
                         bias=bias and linear.bias is not None, dtype=linear.weight.dtype)
        if order == "channels first":
            weight = linear.weight.reshape(out, in_channels, kh, kw)
        else:  # read each row as [kh, kw, C] (channels last), then moved into place
            weight = linear.weight.reshape(out, kh, kw, in_channels).permute(0, 3, 1, 2)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.copy_(linear.bias)
        return conv

    return fc_to_conv


register(Exercise(
    "fc_to_conv", LECTURE, 3, _fc_cases, _fc_oracle, run=_fc_run,
    params=("linear", "in_channels", "kernel_size"),
    forms={"linear": ("model",), "in_channels": ("int",), "kernel_size": ("int", "(int, int)")},
    arguments=_fc_arguments,
    forbidden=FORBIDDEN,
    mistakes=(
        Mistake("channels last", _fc_mistake(order="channels last"),
                "Your filters hold the right numbers in the wrong places: a row of the linear weight is a flattened "
                f"[in_channels, kh, kw] map (channel first, as torch.flatten reads [C, H, W]), so reshape it to "
                f"[out, in_channels, kh, kw] directly ({FC_SECTION})."),
        Mistake("no bias", _fc_mistake(bias=False),
                f"Your scores are off by a constant per output channel: the convolution needs the linear layer's bias too ({FC_SECTION})."),
        Mistake("stride = kernel", _fc_mistake(stride_is_kernel=True),
                "You only score windows that do not overlap (stride = kernel_size): the classifier must be applied at "
                f"every window position, so the convolution has stride 1 ({FC_SECTION})."),
        Mistake("same padding", _fc_mistake(same_padding=True),
                "Your score map is larger than the number of windows: padding adds windows that reach outside the input, "
                f"which the classifier never saw; use no padding ({FC_SECTION})."),
    ),
))


# --- conv_transpose_output_size -----------------------------------------------------------------

def _transposed_cases(gen, hidden):
    cases = [
        Case((8, 4), {"stride": 2, "padding": 1}, label="lecture example: FCN's 2x upsampler (kernel 4, stride 2, padding 1) on 8 -> 16"),
        Case((4, 3), {"stride": 2}, label="lecture example: kernel 3, stride 2 on 4 (the checkerboard layer) -> 9"),
        Case((8, 2), {"stride": 2}, label="U-Net's 2x2 transposed convolution, stride 2, on 8 -> 16"),
        Case((4, 32), {"stride": 16, "padding": 8}, label="FCN-32s style final step: kernel 32, stride 16, padding 8 on 4 -> 64"),
        Case((5, 3), {"stride": 2, "padding": 1, "output_padding": 1},
             label="output_padding=1: kernel 3, stride 2, padding 1 on 5 -> 10 (undoes a stride-2 conv of 10 -> 5)"),
        Case((6, 3), {"dilation": 2}, label="dilation 2: a 3-tap kernel spanning 5 pixels, stride 1, on 6 -> 10"),
        Case((7, 1), label="kernel 1, stride 1: the size is unchanged"),
    ]
    while len(cases) < 16:
        size, kernel, stride, dilation = rand_int(gen, 1, 20), rand_int(gen, 1, 7), rand_int(gen, 1, 4), rand_int(gen, 1, 3)
        full = (size - 1) * stride + dilation * (kernel - 1) + 1
        kwargs = {"stride": stride} if stride != 1 else {}
        padding = rand_int(gen, 0, min(3, (full - 1) // 2))
        if padding:
            kwargs["padding"] = padding
        output_padding = rand_int(gen, 0, max(stride, dilation) - 1)
        if output_padding:
            kwargs["output_padding"] = output_padding
        if dilation != 1:
            kwargs["dilation"] = dilation
        cases.append(Case((size, kernel), kwargs))
    return cases


def _transposed_oracle(case):
    size, kernel = case.args
    options = {"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1, **case.kwargs}
    with torch.device("meta"):  # shapes only, nothing computed
        layer = nn.ConvTranspose2d(1, 1, (kernel, 1), stride=(options["stride"], 1), padding=(options["padding"], 0),
                                   output_padding=(options["output_padding"], 0), dilation=(options["dilation"], 1))
        return int(layer(torch.empty(1, 1, size, 1)).shape[2])


def _transposed_formula(kernel_term=True, padding_sign=-1, dilation_term=True, output_padding_term=True, steps="size - 1",
                        forward=False):
    def conv_transpose_output_size(size, kernel, stride=1, padding=0, output_padding=0, dilation=1):
        d = dilation if dilation_term else 1
        if forward:  # a convolution's output size, not its transpose's
            return (size + 2 * padding - d * (kernel - 1) - 1) // stride + 1
        span = d * (kernel - 1) if kernel_term else 0
        count = size - 1 if steps == "size - 1" else size
        return count * stride + padding_sign * 2 * padding + span + (output_padding if output_padding_term else 0) + 1

    return conv_transpose_output_size


register(Exercise(
    "conv_transpose_output_size", LECTURE, 2, _transposed_cases, _transposed_oracle, compare_value,
    params=("size", "kernel", "stride", "padding", "output_padding", "dilation"),
    forms={name: ("int",) for name in ("size", "kernel", "stride", "padding", "output_padding", "dilation")},
    forbidden=FORBIDDEN,
    mistakes=(
        Mistake("no kernel term", _transposed_formula(kernel_term=False),
                "Your sizes miss the kernel's reach: (size - 1) * stride only places the stamps' first pixels; the last stamp "
                f"still covers dilation * (kernel - 1) more ({TRANSPOSED_SECTION})."),
        Mistake("plus padding", _transposed_formula(padding_sign=1),
                "You add 2 * padding: in a transposed convolution padding is cut off the output, so subtract it "
                f"({TRANSPOSED_SECTION})."),
        Mistake("no dilation", _transposed_formula(dilation_term=False),
                f"Your sizes are wrong only when dilation > 1: a dilated kernel spans dilation * (kernel - 1) + 1 pixels ({TRANSPOSED_SECTION})."),
        Mistake("no output_padding", _transposed_formula(output_padding_term=False),
                f"Your sizes are short by output_padding: it adds that many pixels at the far end ({TRANSPOSED_SECTION})."),
        Mistake("size * stride", _transposed_formula(steps="size"),
                "You place size * stride: between the first and the last of size stamps there are only size - 1 steps "
                f"of stride ({TRANSPOSED_SECTION})."),
        Mistake("convolution formula", _transposed_formula(forward=True),
                f"That is a convolution's output size; a transposed convolution runs it backwards ({TRANSPOSED_SECTION})."),
    ),
))


# --- bilinear_kernel ----------------------------------------------------------------------------

def _smooth_image(gen, channels, height, width):
    """``[1, channels, height, width]`` float32: a few random low-frequency waves per channel."""
    y = torch.arange(height, dtype=torch.float64)[:, None]
    x = torch.arange(width, dtype=torch.float64)[None, :]
    image = torch.zeros(channels, height, width, dtype=torch.float64)
    for c in range(channels):
        for _ in range(3):
            fy, fx, phase = (torch.rand(3, generator=gen, dtype=torch.float64) * torch.tensor([0.6, 0.6, 6.3], dtype=torch.float64)).tolist()
            image[c] += torch.sin(fy * y + fx * x + phase)
    return (image / 3).float()[None]


def _bilinear_cases(gen, hidden):
    cases = [
        Case((1, 2, _smooth_image(gen, 1, 6, 6)), label="lecture example: channels=1, factor=2 (a 4x4 kernel of [1, 3, 3, 1] / 4 "
                                                         "outer products); a smooth [1, 1, 6, 6] image"),
        Case((3, 2, _smooth_image(gen, 3, 5, 7)), label="channels=3, factor=2: each channel upsampled on its own"),
        Case((5, 4, _smooth_image(gen, 5, 5, 5)), label="channels=5, factor=4 (FCN-8s style last step: an 8x8 kernel)"),
        Case((2, 3, _smooth_image(gen, 2, 5, 6)), label="channels=2, factor=3 (odd factor: a 5x5 kernel, centre on a tap)"),
        Case((2, 1, _smooth_image(gen, 2, 4, 4)), label="factor=1: a 1x1 kernel, nothing changes"),
    ]
    for _ in range(5):
        channels, factor = rand_int(gen, 1, 4), rand_int(gen, 1, 5)
        image = _smooth_image(gen, channels, rand_int(gen, 4, 8), rand_int(gen, 4, 8))
        cases.append(Case((channels, factor, image), label=f"channels={channels}, factor={factor}; image {list(image.shape)}"))
    return cases


def _kernel_size(factor: int) -> int:
    return 2 * factor - factor % 2


def _bilinear_run(fn, case):
    channels, factor, image = case.args
    weight = fn(channels, factor)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"bilinear_kernel must return a tensor, got {type(weight).__name__}")
    size = _kernel_size(factor)
    shape = [int(n) for n in weight.shape]
    if shape != [channels, channels, size, size]:
        return shape, torch.empty(0)
    upsampled = F.conv_transpose2d(image.to(weight.dtype), weight, stride=factor, padding=(size - factor) // 2)
    return shape, upsampled[..., factor:-factor, factor:-factor]


def _bilinear_oracle(case):
    channels, factor, image = case.args
    size = _kernel_size(factor)
    reference = F.interpolate(image.double(), scale_factor=factor, mode="bilinear", align_corners=False)
    return [channels, channels, size, size], reference[..., factor:-factor, factor:-factor].float()


def _bilinear_mistake(centre="middle", all_pairs=False, normalised=False, size_rule="2f - f % 2"):
    def bilinear_kernel(channels, factor):
        size = 2 * factor if size_rule == "2f" else 2 * factor - factor % 2
        middle = size // 2 if centre == "integer" else (size - 1) / 2
        taps = 1 - (torch.arange(size, dtype=torch.float32) - middle).abs() / factor
        kernel = taps[:, None] * taps[None, :]
        if normalised:
            kernel = kernel / kernel.sum()
        weight = torch.zeros(channels, channels, size, size)
        if all_pairs:
            weight[:] = kernel
        else:
            weight[range(channels), range(channels)] = kernel
        return weight

    return bilinear_kernel


register(Exercise(
    "bilinear_kernel", LECTURE, 2, _bilinear_cases, _bilinear_oracle,
    _compare_parts("kernel shape", "upsampled image away from the border"), run=_bilinear_run,
    params=("channels", "factor"), forms={"channels": ("int",), "factor": ("int",)},
    arguments=lambda case: {"channels": case.args[0], "factor": case.args[1]},
    forbidden=FORBIDDEN,
    mistakes=(
        Mistake("off-centre", _bilinear_mistake(centre="integer"),
                "Your upsampled images are shifted by half an input pixel for even factors: the triangle's centre is "
                f"(k - 1) / 2, which falls between two taps when k is even ({TRANSPOSED_SECTION})."),
        Mistake("all channel pairs", _bilinear_mistake(all_pairs=True),
                "Your output channels mix the input channels: put the kernel only at weight[c, c] (channel c feeds "
                f"channel c) and leave the other entries 0 ({TRANSPOSED_SECTION})."),
        Mistake("normalised", _bilinear_mistake(normalised=True),
                "Your upsampled images are too dark by factor**2: the stamps of neighbouring inputs overlap and add up, "
                f"so the triangle keeps its peak at 1 instead of summing to 1 ({TRANSPOSED_SECTION})."),
        Mistake("size 2 * factor", _bilinear_mistake(size_rule="2f"),
                f"Your kernel is one tap too large for odd factors: its size is 2 * factor - factor % 2 ({TRANSPOSED_SECTION})."),
    ),
))


# --- mean_iou -----------------------------------------------------------------------------------

def _iou_oracle(case):
    pred, target, num_classes = case.args
    ignore = case.kwargs.get("ignore_index")
    keep = target != ignore if ignore is not None else torch.ones_like(target, dtype=torch.bool)
    pred, target = pred[keep], target[keep]
    ious = []
    for c in range(num_classes):
        union = int(((pred == c) | (target == c)).sum())
        if union:
            ious.append(int(((pred == c) & (target == c)).sum()) / union)
    return sum(ious) / len(ious)


def background_example():
    """The lecture's background-heavy label map: an 8x8 image with one 2x2 object (class 1), predicted all
    background: pixel accuracy 60/64, mIoU (60/64 + 0) / 2."""
    target = torch.zeros(8, 8, dtype=torch.int64)
    target[3:5, 2:4] = 1
    return torch.zeros_like(target), target


def _labels(gen, shape, num_classes, dtype, noise=0.3):
    """A random blocky label map and a prediction that gets most of it right."""
    coarse = torch.randint(0, num_classes, (*shape[:-2], (shape[-2] + 1) // 2, (shape[-1] + 1) // 2), generator=gen)
    target = coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., : shape[-2], : shape[-1]]
    wrong = torch.rand(target.shape, generator=gen) < noise
    pred = torch.where(wrong, torch.randint(0, num_classes, target.shape, generator=gen), target)
    return pred.to(dtype), target.to(dtype)


def _iou_cases(gen, hidden):
    t = torch.tensor
    pred, target = background_example()
    ignored = t([[0, 0, 1, 255], [0, 1, 1, 255], [2, 2, 1, 255]])
    ignored_pred = t([[0, 0, 1, 2], [0, 0, 1, 2], [2, 1, 1, 0]])
    # Two images: the first is mostly class 1, the second has a little class 2 that is missed.
    first = t([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]])
    second = t([[0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]])
    cases = [
        Case((t([[0, 1], [1, 1]]), t([[0, 0], [1, 1]]), 3),
             label="lecture example: target [[0, 0], [1, 1]], prediction [[0, 1], [1, 1]], 3 classes, class 2 nowhere (7/12)",
             expected=7 / 12),
        Case((pred, target, 2), label="lecture example: 8x8, one 2x2 object of class 1, predicted all background "
                                      "(pixel accuracy 0.94, mIoU 0.47)", expected=(60 / 64) / 2),
        Case((ignored_pred, ignored, 3), {"ignore_index": 255},
             label="the last column is ignore_index=255 (predicted 2, 2, 0 there: those pixels do not count)",
             expected=(3 / 4 + 3 / 5 + 1 / 2) / 3),
        Case((torch.stack([first, first.flip(1)]), torch.stack([first, second]), 3),
             label="two images [2, 3, 4]: IoUs are accumulated over both before dividing, not averaged per image"),
        Case((t([[0, 0, 2], [0, 0, 2]]), t([[0, 0, 0], [0, 0, 1]]), 4),
             label="class 2 only predicted (IoU 0, counts), class 1 only in the target (IoU 0), class 3 nowhere (left out)",
             expected=(4 / 5) / 3),
        Case((t([[1, 1], [1, 1]], dtype=torch.int32), t([[1, 1], [1, 1]], dtype=torch.int32), 4), {"ignore_index": None},
             label="a perfect prediction with one class present out of 4 (mIoU 1, int32 labels)", expected=1.0),
    ]
    while len(cases) < 14:
        num_classes = rand_int(gen, 2, 6)
        dtype = torch.int64 if rand_int(gen, 0, 2) else torch.int32
        shape = ((rand_int(gen, 1, 3),) if rand_int(gen, 0, 2) else ()) + (rand_int(gen, 2, 10), rand_int(gen, 2, 10))
        pred, target = _labels(gen, shape, num_classes + 1, dtype)  # label num_classes becomes ignored or absent
        kwargs = {}
        if rand_int(gen, 0, 1):
            ignore = [255, -1][rand_int(gen, 0, 1)]
            target = torch.where(target == num_classes, torch.full_like(target, ignore), target)
            kwargs["ignore_index"] = ignore
        else:
            target = torch.where(target == num_classes, torch.zeros_like(target), target)
        pred = torch.where(pred == num_classes, torch.zeros_like(pred), pred)
        if bool((target == kwargs.get("ignore_index", -2)).all()):
            continue  # no pixel left to count
        cases.append(Case((pred, target, num_classes), kwargs))
    return cases


def _iou_counts(pred, target, num_classes, ignore_index, mask_ignored=True):
    keep = target != ignore_index if ignore_index is not None and mask_ignored else torch.ones_like(target, dtype=torch.bool)
    p, t = pred[keep], target[keep]
    inter = torch.stack([((p == c) & (t == c)).sum() for c in range(num_classes)]).double()
    union = torch.stack([((p == c) | (t == c)).sum() for c in range(num_classes)]).double()
    return inter, union, t


def _iou_mistake(absent=None, ignored=False, per_image=False, target_classes=False):
    def mean_iou(pred, target, num_classes, ignore_index=None):
        if per_image and pred.dim() == 3:
            return torch.stack([mean_iou(p, t, num_classes, ignore_index) for p, t in zip(pred, target)]).mean()
        inter, union, kept = _iou_counts(pred, target, num_classes, ignore_index, mask_ignored=not ignored)
        iou = inter / union
        if absent is not None:  # 0/0 replaced by a number and averaged in
            return torch.nan_to_num(iou, nan=absent).mean()
        if target_classes:
            present = torch.tensor([bool((kept == c).any()) for c in range(num_classes)])
            return iou[present].mean()
        return iou[union > 0].mean()

    return mean_iou


register(Exercise(
    "mean_iou", LECTURE, 3, _iou_cases, _iou_oracle, lambda expected, got: compare_value(float(expected), got, rel=1e-5),
    params=("pred", "target", "num_classes", "ignore_index"),
    forms={"pred": ("tensor int64", "tensor int32"), "target": ("tensor int64", "tensor int32"), "num_classes": ("int",),
           "ignore_index": ("int", "None")},
    forbidden=FORBIDDEN,
    mistakes=(
        Mistake("absent as 0", _iou_mistake(absent=0.0),
                "Your mIoU is too low when a class appears in neither the target nor the prediction: such a class has no IoU "
                f"(0/0) and is left out of the average, not counted as 0 ({MIOU_SECTION})."),
        Mistake("absent as 1", _iou_mistake(absent=1.0),
                "Your mIoU is too high when a class appears in neither the target nor the prediction: such a class has no IoU "
                f"(0/0) and is left out of the average, not counted as 1 ({MIOU_SECTION})."),
        Mistake("ignored pixels counted", _iou_mistake(ignored=True),
                "You count the pixels whose target is ignore_index: drop them (and their predictions) before counting "
                f"({MIOU_SECTION})."),
        Mistake("per image", _iou_mistake(per_image=True),
                "You average one mIoU per image: sum every class's intersections and unions over all images first, then "
                f"divide, so a class's few pixels in one image do not weigh as much as a whole image ({MIOU_SECTION})."),
        Mistake("target classes only", _iou_mistake(target_classes=True),
                "You average only over the classes in the target: a class that is only predicted has IoU 0 and counts "
                f"too (its union is not empty) ({MIOU_SECTION})."),
    ),
))
