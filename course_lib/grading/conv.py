"""Exercises of lecture 01 (convolution arithmetic), checked against torch's own convolution.

Each exercise also carries its classic wrong versions (:class:`~.core.Mistake`), so a failing check
can say which one a student made. They are written without the calls the exercises forbid, because
they run under the same watch as a student's code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .core import Case, Exercise, Mistake, compare_value, register, rand_dtype, rand_int

LECTURE = "01_conv_arithmetic"
SIZE_SECTION = "(lecture 01, section 'How big is the output?')"
TWO_WAYS_SECTION = "(lecture 01, section 'Two ways to compute a convolution')"
PARAMS_SECTION = "(lecture 01, section 'Parameters are cheap, activations are not')"
FIELD_SECTION = "(lecture 01, section 'Receptive fields')"
GRAD_SECTION = "(lecture 01, section 'Shared weights: the gradient is a sum over locations')"
CONV_FORBIDDEN = ("torch.nn.functional.conv2d", "course_lib.conv")


# --- conv_output_size -------------------------------------------------------------------------

def _output_size_cases(gen, hidden):
    cases = [
        Case((7, 3), {"stride": 1}, label="7x7 input, 3x3 filter, stride 1 (lecture)"),
        Case((7, 3), {"stride": 2}, label="7x7 input, 3x3 filter, stride 2 (lecture)"),
        Case((7, 3), {"stride": 1, "padding": 1}, label="7x7 input, 3x3 filter, zero padding 1 (lecture)"),
        Case((7, 3), {"stride": 3}, label="7x7 input, 3x3 filter, stride 3: does not divide evenly (lecture)"),
        Case((224, 11), {"stride": 4, "padding": 2}, label="AlexNet conv1: 224, kernel 11, stride 4, padding 2"),
        Case((9, 3), {"stride": 1, "padding": 0, "dilation": 2}, label="9 inputs, 3 taps spaced 2 apart (dilation 2)"),
    ]
    while len(cases) < 16:
        size, kernel, stride = rand_int(gen, 1, 40), rand_int(gen, 1, 7), rand_int(gen, 1, 5)
        padding, dilation = rand_int(gen, 0, 3), rand_int(gen, 1, 3)
        if dilation * (kernel - 1) + 1 <= size + 2 * padding:
            cases.append(Case((size, kernel), {"stride": stride, "padding": padding, "dilation": dilation}))
    return cases


def _output_size_oracle(case):
    # Empirical: let torch's convolution tell the size (one row, a column of taps).
    size, kernel = case.args
    kw = case.kwargs
    out = F.conv2d(
        torch.zeros(1, 1, size, 1), torch.zeros(1, 1, kernel, 1),
        stride=(kw.get("stride", 1), 1), padding=(kw.get("padding", 0), 0), dilation=(kw.get("dilation", 1), 1),
    )
    return out.shape[2]


def _size_mistake(formula):
    def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
        return formula(size, kernel, stride, padding, dilation * (kernel - 1) + 1)

    return conv_output_size


register(Exercise(
    "conv_output_size", LECTURE, 2, _output_size_cases, _output_size_oracle, compare_value,
    params=("size", "kernel", "stride", "padding", "dilation"),
    forms={"size": ("int",), "kernel": ("int",), "stride": ("int",), "padding": ("int",), "dilation": ("int",)},
    mistakes=(
        Mistake("no + 1", _size_mistake(lambda n, k, s, p, span: (n + 2 * p - span) // s),
                f"Your sizes are one less than expected: this is what you get without the + 1, which counts the window's first position {SIZE_SECTION}."),
        Mistake("ceil", _size_mistake(lambda n, k, s, p, span: math.ceil((n + 2 * p - span) / s) + 1),
                f"Your sizes are one too many where the stride does not divide evenly: this is rounding up; a window that does not fit is dropped, so round down {SIZE_SECTION}."),
        Mistake("no dilation", _size_mistake(lambda n, k, s, p, span: (n + 2 * p - k) // s + 1),
                f"Your sizes are wrong only with dilation: a dilated window spans d(k-1)+1 inputs, not k {SIZE_SECTION}."),
        Mistake("padding on one side", _size_mistake(lambda n, k, s, p, span: (n + p - span) // s + 1),
                f"Your sizes are wrong only with padding: padding adds p zeros on both sides, so 2p inputs in all {SIZE_SECTION}."),
        Mistake("no stride", _size_mistake(lambda n, k, s, p, span: n + 2 * p - span + 1),
                f"Your sizes are right only at stride 1: the window moves s inputs at a time, so divide by the stride (and round down) {SIZE_SECTION}."),
        Mistake("true division", _size_mistake(lambda n, k, s, p, span: (n + 2 * p - span) / s + 1),
                f"You return a float: divide with // (floor division), since a window that does not fit is dropped {SIZE_SECTION}."),
    ),
))


# --- conv2d and conv2d_naive --------------------------------------------------------------------

def _conv_cases(max_size):
    def cases(gen, hidden):
        example = torch.arange(49.0).view(1, 1, 7, 7) / 10
        # A Sobel filter is not symmetric, so flipped or transposed kernels show up at once.
        sobel = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]).view(1, 1, 3, 3)

        def randn(*shape, dtype=torch.float64):
            return torch.randn(*shape, generator=gen, dtype=dtype)

        out = [
            Case((example, sobel), {"stride": 1}, label="7x7 input, 3x3 Sobel filter, stride 1 -> 5x5 (lecture)"),
            Case((example, sobel), {"stride": 2}, label="7x7 input, 3x3 Sobel filter, stride 2 -> 3x3 (lecture)"),
            Case((example, sobel), {"padding": 1}, label="7x7 input, 3x3 Sobel filter, padding 1 keeps 7x7 (lecture)"),
            Case((randn(2, 3, 6, 7), randn(4, 3, 2, 3)), {"bias": randn(4), "stride": (2, 1)},
                 label="[2, 3, 6, 7] input, 4 filters of 2x3, bias, stride (2, 1)"),
            Case((randn(1, 2, 8, 9), randn(3, 2, 3, 3)), {"bias": None, "padding": 2, "dilation": 2},
                 label="[1, 2, 8, 9] input, 3x3 filters, dilation 2, padding 2, bias=None"),
        ]
        while len(out) < 12:
            dtype = rand_dtype(gen)
            n, c, o = rand_int(gen, 1, 3), rand_int(gen, 1, 4), rand_int(gen, 1, 4)
            h, w = rand_int(gen, 3, max_size), rand_int(gen, 3, max_size)
            kh, kw = rand_int(gen, 1, 4), rand_int(gen, 1, 4)
            stride = (rand_int(gen, 1, 3), rand_int(gen, 1, 3)) if rand_int(gen, 0, 1) else rand_int(gen, 1, 5)
            padding, dilation = rand_int(gen, 0, 2), rand_int(gen, 1, 2)
            if dilation * (kh - 1) + 1 > h + 2 * padding or dilation * (kw - 1) + 1 > w + 2 * padding:
                continue
            x = randn(n, c, h, w, dtype=dtype)
            weight = randn(o, c, kh, kw, dtype=dtype)
            bias = randn(o, dtype=dtype) if rand_int(gen, 0, 2) else None
            out.append(Case((x, weight), {"bias": bias, "stride": stride, "padding": padding, "dilation": dilation}))
        return out

    return cases


def _conv_oracle(case):
    return F.conv2d(*case.args, **case.kwargs)


def _correlate(x, weight, bias, stride, padding, dilation):
    """A correct convolution (no forbidden call), which each conv mistake below bends in one way."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    kh, kw = weight.shape[2:]
    xp = F.pad(x, (padding,) * 4)
    windows = xp.unfold(2, dilation * (kh - 1) + 1, sh).unfold(3, dilation * (kw - 1) + 1, sw)[..., ::dilation, ::dilation]
    out = torch.einsum("nchwkl,ockl->nohw", windows, weight)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _conv_mistake(bend):
    def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
        return _correlate(*bend(x, weight, bias, stride, padding, dilation))

    return conv2d


CONV_MISTAKES = (
    Mistake("ignores stride", _conv_mistake(lambda x, w, b, s, p, d: (x, w, b, 1, p, d)),
            f"Your output has every position of stride 1: the window must move `stride` inputs at a time {SIZE_SECTION}."),
    Mistake("ignores padding", _conv_mistake(lambda x, w, b, s, p, d: (x, w, b, s, 0, d)),
            f"Your output is what you get without padding: add `padding` zeros on every side of the input first {SIZE_SECTION}."),
    Mistake("ignores dilation", _conv_mistake(lambda x, w, b, s, p, d: (x, w, b, s, p, 1)),
            f"Your output is right except with dilation: its taps are `dilation` inputs apart {SIZE_SECTION}."),
    Mistake("flipped kernel", _conv_mistake(lambda x, w, b, s, p, d: (x, w.flip(2, 3), b, s, p, d)),
            f"You flipped the kernel (the convolution of signal processing): a CNN layer multiplies each window with the filter as it is, a cross-correlation {TWO_WAYS_SECTION}."),
    Mistake("forgets bias", _conv_mistake(lambda x, w, b, s, p, d: (x, w, None, s, p, d)),
            f"Your output misses the bias: add bias[o] to every position of output channel o {TWO_WAYS_SECTION}."),
)

CONV_FORMS = {
    "x": ("tensor float32", "tensor float64"),
    "weight": ("tensor float32", "tensor float64"),
    "bias": ("tensor float32", "tensor float64", "None"),
    "stride": ("int", "(int, int)"),
    "padding": ("int",),
    "dilation": ("int",),
}
CONV_PARAMS = ("x", "weight", "bias", "stride", "padding", "dilation")

register(Exercise("conv2d_naive", LECTURE, 3, _conv_cases(9), _conv_oracle, params=CONV_PARAMS, forms=CONV_FORMS,
                  forbidden=CONV_FORBIDDEN, mistakes=CONV_MISTAKES))
register(Exercise("conv2d", LECTURE, 3, _conv_cases(16), _conv_oracle, params=CONV_PARAMS, forms=CONV_FORMS,
                  forbidden=CONV_FORBIDDEN, mistakes=CONV_MISTAKES))


# --- conv_params --------------------------------------------------------------------------------

def _params_cases(gen, hidden):
    cases = [
        Case((1, 100, 10), {"bias": False}, label="100 filters of 10x10 on a grey image, no bias (lecture: 10k)"),
        Case((3, 64, 3), label="3 -> 64 channels, 3x3 with bias"),
        Case((64, 64, 1), label="1x1 convolution, 64 -> 64"),
        Case((16, 8, (3, 5)), {"bias": False}, label="non-square 3x5 kernel"),
        Case((4, 6, (2, 7)), {"bias": True}, label="non-square 2x7 kernel, with bias"),
    ]
    for _ in range(8):
        kernel = rand_int(gen, 1, 7) if rand_int(gen, 0, 1) else (rand_int(gen, 1, 7), rand_int(gen, 1, 7))
        cases.append(Case((rand_int(gen, 1, 64), rand_int(gen, 1, 64), kernel), {"bias": bool(rand_int(gen, 0, 1))}))
    return cases


def _params_oracle(case):
    in_channels, out_channels, kernel = case.args
    layer = torch.nn.Conv2d(in_channels, out_channels, kernel, bias=case.kwargs.get("bias", True), device="meta")
    return sum(p.numel() for p in layer.parameters())


def _kernel_pair(kernel):
    return (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)


register(Exercise(
    "conv_params", LECTURE, 1, _params_cases, _params_oracle, compare_value,
    params=("in_channels", "out_channels", "kernel", "bias"),
    forms={"in_channels": ("int",), "out_channels": ("int",), "kernel": ("int", "(int, int)"), "bias": ("bool",)},
    mistakes=(
        Mistake("never counts biases", lambda in_channels, out_channels, kernel, bias=True: out_channels * in_channels * math.prod(_kernel_pair(kernel)),
                f"Your counts miss the biases: with bias=True each filter has one more learnable number {PARAMS_SECTION}."),
        Mistake("always counts biases", lambda in_channels, out_channels, kernel, bias=True: out_channels * (in_channels * math.prod(_kernel_pair(kernel)) + 1),
                f"Your counts include biases even with bias=False {PARAMS_SECTION}."),
        Mistake("forgets input channels", lambda in_channels, out_channels, kernel, bias=True: out_channels * (math.prod(_kernel_pair(kernel)) + bias),
                f"Your counts leave out the input channels: each filter has one kh x kw slice per input channel {PARAMS_SECTION}."),
        Mistake("kernel side not squared", lambda in_channels, out_channels, kernel, bias=True: out_channels * (in_channels * _kernel_pair(kernel)[0] + bias),
                f"Your counts use the kernel's side, not its area: a k x k filter has k * k weights per input channel {PARAMS_SECTION}."),
    ),
))


# --- receptive_field ----------------------------------------------------------------------------

def _field_cases(gen, hidden):
    cases = [
        Case(([(3, 1), (3, 1)],), label="two stacked 3x3 convs (lecture: 5)"),
        Case(([(3, 1), (3, 1), (3, 1)],), label="three stacked 3x3 convs (lecture: 7)"),
        Case(([(3, 2), (3, 1)],), label="3x3 stride 2, then 3x3"),
        Case(([(3, 1), (3, 2)],), label="3x3, then 3x3 stride 2 (the last stride widens nothing)"),
        Case(([(11, 4), (3, 2), (5, 1)],), label="AlexNet's start: 11/4, pool 3/2, 5/1"),
        Case(([(5, 1)],), label="a single 5x5 layer"),
    ]
    for _ in range(7):
        cases.append(Case(([(rand_int(gen, 1, 7), rand_int(gen, 1, 3)) for _ in range(rand_int(gen, 1, 5))],)))
    return cases


def _field_oracle(case):
    # Empirical: the input pixels that can change one output unit of a 1-D stack with positive weights.
    layers = case.args[0]
    length = 1 + sum(k for k, _ in layers) * max(1, torch.tensor([s for _, s in layers]).prod().item())
    x = torch.ones(1, 1, length, dtype=torch.float64, requires_grad=True)
    y = x
    for kernel, stride in layers:
        y = F.conv1d(y, torch.ones(1, 1, kernel, dtype=torch.float64), stride=stride)
    (grad,) = torch.autograd.grad(y[0, 0, 0], x)
    # The field is the span from the first to the last pixel that reaches the unit: a stride larger
    # than the kernel leaves gaps inside it, which still lie within the field.
    reached = torch.nonzero(grad[0, 0]).flatten()
    return int(reached.max() - reached.min() + 1)


def _field_with_jump(own_stride_first):
    def receptive_field(layers):
        field, jump = 1, 1
        for kernel, stride in layers:
            if own_stride_first:
                jump *= stride
            field += (kernel - 1) * jump
            if not own_stride_first:
                jump *= stride
        return field

    return receptive_field


register(Exercise(
    "receptive_field", LECTURE, 2, _field_cases, _field_oracle, compare_value,
    params=("layers",), forms={"layers": ("list of (int, int)",)},
    mistakes=(
        Mistake("ignores strides", lambda layers: 1 + sum(k - 1 for k, _ in layers),
                f"Your fields are right only at stride 1: after a stride-s layer every tap of the next layer is s inputs apart, so it adds (k - 1) times the product of the earlier strides {FIELD_SECTION}."),
        Mistake("own stride too early", _field_with_jump(True),
                f"You multiply a layer's own stride into its own growth: a layer's stride only spreads the taps of the layers after it {FIELD_SECTION}."),
        Mistake("product of kernels", lambda layers: math.prod(k for k, _ in layers),
                f"You multiply the kernel sizes: stacked layers add (k - 1) inputs each (times the earlier strides), they do not multiply {FIELD_SECTION}."),
        Mistake("sum of kernels", lambda layers: sum(k for k, _ in layers),
                f"You add the kernel sizes: each layer after the first adds k - 1 inputs, not k, because neighbouring windows overlap {FIELD_SECTION}."),
    ),
))


# --- conv2d_weight_grad -------------------------------------------------------------------------

def _weight_grad_cases(gen, hidden):
    def randn(*shape, dtype=torch.float64):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    x = torch.arange(16.0).view(1, 1, 4, 4)
    cases = [
        Case((x, torch.ones(1, 1, 2, 2), 3), label="4x4 input, 3x3 kernel, all-ones output gradient"),
        Case((randn(3, 2, 5, 5), randn(3, 2, 3, 3), 3), label="a batch of 3 images, 3x3 kernel, stride 1"),
        Case((randn(2, 1, 7, 6), randn(2, 3, 3, 2), 3), {"stride": 2}, label="[2, 1, 7, 6] input, 3x3 kernel, stride 2"),
        Case((randn(1, 2, 4, 5), randn(1, 2, 4, 5), 3), {"padding": 1}, label="[1, 2, 4, 5] input, 3x3 kernel, padding 1"),
    ]
    while len(cases) < 12:
        dtype = rand_dtype(gen)
        n, c, o = rand_int(gen, 1, 3), rand_int(gen, 1, 3), rand_int(gen, 1, 4)
        h, w, k = rand_int(gen, 4, 12), rand_int(gen, 4, 12), rand_int(gen, 1, 4)
        stride, padding = rand_int(gen, 1, 3), rand_int(gen, 0, 2)
        if k > min(h, w) + 2 * padding:
            continue
        ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
        cases.append(Case(
            (randn(n, c, h, w, dtype=dtype), randn(n, o, ho, wo, dtype=dtype), k),
            {"stride": stride, "padding": padding},
        ))
    return cases


def _weight_grad_oracle(case):
    x, grad_out, k = case.args
    weight = torch.zeros(grad_out.shape[1], x.shape[1], k, k, dtype=x.dtype, requires_grad=True)
    out = F.conv2d(x, weight, **case.kwargs)
    (grad,) = torch.autograd.grad(out, weight, grad_out)
    return grad


def _taps(x, grad_out, k, stride, padding):
    """Every window the weights met, ``[N, C, Ho, Wo, k, k]``, cut to ``grad_out``'s positions."""
    windows = F.pad(x, (padding,) * 4).unfold(2, k, stride).unfold(3, k, stride)
    return windows[:, :, : grad_out.shape[2], : grad_out.shape[3]]


def _grad_mistake(bend):
    def conv2d_weight_grad(x, grad_out, kernel_size, stride=1, padding=0):
        return bend(x, grad_out, kernel_size, stride, padding)

    return conv2d_weight_grad


register(Exercise(
    "conv2d_weight_grad", LECTURE, 3, _weight_grad_cases, _weight_grad_oracle,
    params=("x", "grad_out", "kernel_size", "stride", "padding"),
    forms={"x": ("tensor float32", "tensor float64"), "grad_out": ("tensor float32", "tensor float64"),
           "kernel_size": ("int",), "stride": ("int",), "padding": ("int",)},
    forbidden=("torch.nn.functional.conv2d", "torch.nn.grad.conv2d_weight", "course_lib.conv"),
    mistakes=(
        Mistake("mean over positions", _grad_mistake(lambda x, g, k, s, p: torch.einsum("nohw,nchwkl->ockl", g, _taps(x, g, k, s, p)) / g[0, 0].numel()),
                f"Your gradients are the right ones divided by the number of output positions: a shared weight's gradient is the sum over positions, not the mean {GRAD_SECTION}."),
        Mistake("first image only", _grad_mistake(lambda x, g, k, s, p: torch.einsum("nohw,nchwkl->ockl", g[:1], _taps(x[:1], g, k, s, p))),
                f"Your gradients are right for one image but not for a batch: the sum runs over every image as well as every position {GRAD_SECTION}."),
        Mistake("ignores stride", _grad_mistake(lambda x, g, k, s, p: torch.einsum("nohw,nchwkl->ockl", g, _taps(x, g, k, 1, p))),
                f"Your gradients are right only at stride 1: output position (i, j) met the input at (i * stride + a, j * stride + b) {GRAD_SECTION}."),
        Mistake("flipped taps", _grad_mistake(lambda x, g, k, s, p: torch.einsum("nohw,nchwkl->ockl", g, _taps(x, g, k, s, p)).flip(-2, -1)),
                f"Your gradient is flipped: weight tap (a, b) met input (i * stride + a, j * stride + b), with no flip (the flip belongs to the gradient w.r.t. the input) {GRAD_SECTION}."),
    ),
))
