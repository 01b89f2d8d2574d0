"""A classifier slid over an image is a fully convolutional network in disguise.

Dense prediction by brute force classifies a window around every position, one network pass per
window (:func:`sliding_window_scores_naive`, or all windows batched: :func:`sliding_window_scores`).
Neighbouring windows overlap almost entirely, so most of that work is repeated. A fully connected layer
that reads a ``[C, k, k]`` feature map is a ``k x k`` convolution with ``C`` input channels whose
kernel covers its whole input (:func:`fc_to_conv`): the same weights, reshaped. Converting every such
layer lets the network run on a larger image in one pass, each feature computed once, and it then
outputs the classifier's score at every window position, ``stride`` pixels apart, where ``stride`` is
the product of the strides in the network: a score map (heatmap).
"""
from __future__ import annotations

import torch
from torch import nn

from ..conv import conv_output_size, windows
from ..train import evaluating
from ..validate import pair, positive_int, tensor_rank

__all__ = ["fc_to_conv", "sliding_window_scores_naive", "sliding_window_scores", "multiply_adds"]


def fc_to_conv(linear: nn.Linear, in_channels: int, kernel_size) -> nn.Conv2d:
    """The ``nn.Conv2d`` that computes what ``linear`` computes on a flattened ``[in_channels, kh, kw]`` window.

    ``linear`` has ``in_features = in_channels * kh * kw`` (``kernel_size`` an int or ``(kh, kw)``); row
    ``o`` of its weight, viewed as ``[in_channels, kh, kw]`` (the order ``torch.flatten`` reads a
    ``[C, H, W]`` map in), becomes filter ``o``; the bias is kept. On a ``[N, in_channels, kh, kw]`` input
    the convolution's ``[N, out, 1, 1]`` output equals ``linear(x.flatten(1))``; on a larger input it
    gives that score for every ``kh x kw`` window (stride 1). Same device and dtype as ``linear``;
    the weights are copied.
    """
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
    positive_int("in_channels", in_channels)
    kh, kw = pair("kernel_size", kernel_size)
    if linear.in_features != in_channels * kh * kw:
        raise ValueError(f"linear has in_features={linear.in_features}, but in_channels * kh * kw = "
                         f"{in_channels} * {kh} * {kw} = {in_channels * kh * kw} (kernel_size={kernel_size!r})")
    weight = linear.weight
    conv = nn.Conv2d(in_channels, linear.out_features, (kh, kw), bias=linear.bias is not None,
                     device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(linear.out_features, in_channels, kh, kw))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def _check_sliding(classifier, image, window, stride):
    if not isinstance(classifier, nn.Module):
        raise ValueError(f"classifier must be a torch.nn.Module, got {type(classifier).__name__}")
    tensor_rank("image", image, 3)
    kh, kw = pair("window", window)
    sh, sw = pair("stride", stride)
    rows = conv_output_size(image.shape[1], kh, sh)
    cols = conv_output_size(image.shape[2], kw, sw)
    return (kh, kw), (sh, sw), rows, cols


@torch.no_grad()
def sliding_window_scores_naive(classifier: nn.Module, image: torch.Tensor, window, stride=1) -> torch.Tensor:
    """Scores ``[classes, rows, cols]``: ``classifier`` run once per ``window`` crop of ``image`` ``[C, H, W]``.

    Position ``(i, j)`` is the crop whose top-left corner is ``(i * stride, j * stride)``; ``classifier``
    maps ``[1, C, kh, kw]`` to ``[1, classes]``. One network pass per window, in a Python loop: dense
    prediction by brute force, on purpose.
    """
    (kh, kw), (sh, sw), rows, cols = _check_sliding(classifier, image, window, stride)
    out = None
    for i in range(rows):
        for j in range(cols):
            scores = classifier(image[None, :, i * sh : i * sh + kh, j * sw : j * sw + kw])[0]
            if out is None:
                out = scores.new_empty(scores.shape[0], rows, cols)
            out[:, i, j] = scores
    return out


@torch.no_grad()
def sliding_window_scores(classifier: nn.Module, image: torch.Tensor, window, stride=1, batch_size: int = 1024) -> torch.Tensor:
    """:func:`sliding_window_scores_naive` with the crops batched: the same ``[classes, rows, cols]``,
    ``batch_size`` windows per pass (a strided view of the image, :func:`course_lib.conv.windows`,
    copied one batch at a time). Fewer calls, the same arithmetic: every window is still classified
    from scratch."""
    (kh, kw), (sh, sw), rows, cols = _check_sliding(classifier, image, window, stride)
    positive_int("batch_size", batch_size)
    crops = windows(image[None], (kh, kw), (sh, sw))[0]  # [C, rows, cols, kh, kw], a view
    crops = crops.permute(1, 2, 0, 3, 4).reshape(rows * cols, image.shape[0], kh, kw)
    scores = torch.cat([classifier(crops[start : start + batch_size]) for start in range(0, rows * cols, batch_size)])
    return scores.t().reshape(-1, rows, cols)


def multiply_adds(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the ``Conv2d``, ``ConvTranspose2d`` and ``Linear`` layers of ``model`` on one image of
    the batch ``x`` (counted from the shapes each layer saw in one forward pass, no gradients).

    A convolution costs ``out_channels * H_out * W_out * in_channels / groups * kh * kw``, a transposed one
    ``in_channels * H_in * W_in * out_channels / groups * kh * kw`` (each input stamps the kernel), a
    linear layer ``in_features * out_features``. Pooling, normalisation and activations are not counted.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tensor_rank("x", x, 4)
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, nn.ConvTranspose2d):
            per_input = module.out_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += inputs[0][0].numel() * per_input
        elif isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += output[0].numel() * per_output
        else:
            total[0] += output[0].numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with evaluating(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]
