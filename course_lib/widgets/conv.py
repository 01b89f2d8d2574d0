"""Explorers of lectures 01-02: where convolution windows land, and what pooling keeps."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from ..conv import conv_output_size
from ..plot import layout
from ..pooling import avg_pool2d, max_pool2d
from ..validate import pair
from ._interact import interact

__all__ = ["draw_windows", "draw_pooling", "conv_explorer", "pooling_explorer"]

_COLOURS = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple"]


def draw_windows(size: int = 7, kernel: int = 3, stride: int = 1, padding: int = 0, dilation: int = 1, ax=None):
    """Draw a ``size x size`` input (grey border = zero padding) and the first windows of a kernel.

    The first few positions along the top row are outlined in colour, their taps filled, and the
    title gives the output size. Returns the axes.
    """
    out = conv_output_size(size, kernel, stride, padding, dilation)
    full = size + 2 * padding
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    for r in range(full):
        for c in range(full):
            is_pad = not (padding <= r < padding + size and padding <= c < padding + size)
            ax.add_patch(Rectangle((c, r), 1, 1, facecolor="0.85" if is_pad else "white", edgecolor="0.6", lw=0.8))
    span = dilation * (kernel - 1) + 1
    for k, j in enumerate(range(min(out, len(_COLOURS)))):
        colour = _COLOURS[k]
        x0 = j * stride
        ax.add_patch(Rectangle((x0 + 0.06 * k, 0.06 * k), span - 0.12 * k, span - 0.12 * k, fill=False, edgecolor=colour, lw=2.2))
        for a in range(kernel):
            for b in range(kernel):
                ax.add_patch(Rectangle((x0 + b * dilation + 0.3, a * dilation + 0.3), 0.4, 0.4, color=colour, alpha=0.5))
    ax.set_xlim(0, full)
    ax.set_ylim(full, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("input column (grey: zero padding)")
    ax.set_ylabel("input row")
    shown = min(out, len(_COLOURS))
    ax.set_title(
        f"kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation}\n"
        f"input {size}x{size} -> output {out}x{out}\n(first {shown} window{'s' if shown != 1 else ''} of the top row shown)",
        fontsize=9,
    )
    return ax


def draw_pooling(x: torch.Tensor, kernel=2, stride=None, mode: str = "max", axes=None):
    """Draw one ``[H, W]`` slice with its pooling windows and the pooled output, values written in.

    For max pooling the winner of each window is outlined: the only input its gradient reaches.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D [H, W] tensor, got {getattr(x, 'shape', type(x))}")
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    kh, kw = pair("kernel", kernel)
    sh, sw = (kh, kw) if stride is None else pair("stride", stride)
    pool = max_pool2d if mode == "max" else avg_pool2d
    x = x.detach().float().cpu()
    out = pool(x[None, None], (kh, kw), (sh, sw))[0, 0]
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(8, 4.2), gridspec_kw={"width_ratios": [x.shape[1], max(out.shape[1], 1)]},
                               layout=layout())
    left, right = axes
    left.imshow(x.numpy(), cmap="Greys", alpha=0.35)
    for (r, c), value in zip(torch.cartesian_prod(torch.arange(x.shape[0]), torch.arange(x.shape[1])).tolist(), x.flatten().tolist()):
        left.text(c, r, f"{value:g}", ha="center", va="center", fontsize=9)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            colour = _COLOURS[(i * out.shape[1] + j) % len(_COLOURS)]
            left.add_patch(Rectangle((j * sw - 0.5, i * sh - 0.5), kw, kh, fill=False, edgecolor=colour, lw=2))
            if mode == "max":
                window = x[i * sh : i * sh + kh, j * sw : j * sw + kw]
                flat = int(window.flatten().argmax())
                left.add_patch(Rectangle((j * sw + flat % kw - 0.4, i * sh + flat // kw - 0.4), 0.8, 0.8, fill=False, edgecolor=colour, lw=1, ls="--"))
            right.text(j, i, f"{float(out[i, j]):.3g}", ha="center", va="center", fontsize=10, color=colour)
    right.imshow(out.numpy(), cmap="Greys", alpha=0.35)
    left.set(title=f"input {tuple(x.shape)}: {kh}x{kw} windows, stride {sh}x{sw}", xlabel="column", ylabel="row")
    right.set(title=f"{mode} pooled {tuple(out.shape)}", xlabel="column", ylabel="row")
    for ax in axes:
        ax.set_xticks(range(ax.get_images()[0].get_array().shape[1]))
        ax.set_yticks(range(ax.get_images()[0].get_array().shape[0]))
    return axes


def conv_explorer():
    """Sliders for input size, kernel, stride, padding and dilation over :func:`draw_windows`."""
    import ipywidgets as w

    def show(size, kernel, stride, padding, dilation):
        draw_windows(size, kernel, stride, padding, dilation)

    return interact(
        show,
        size=w.IntSlider(7, 1, 16, description="input"),
        kernel=w.IntSlider(3, 1, 7, description="kernel"),
        stride=w.IntSlider(1, 1, 4, description="stride"),
        padding=w.IntSlider(0, 0, 3, description="padding"),
        dilation=w.IntSlider(1, 1, 3, description="dilation"),
    )


def pooling_explorer(x: torch.Tensor | None = None):
    """Sliders for kernel and stride and a max/avg toggle over :func:`draw_pooling`."""
    import ipywidgets as w

    if x is None:
        x = torch.randint(0, 10, (6, 6), generator=torch.Generator().manual_seed(0)).float()

    def show(kernel, stride, mode):
        draw_pooling(x, kernel, stride, mode)

    return interact(
        show,
        kernel=w.IntSlider(2, 1, min(x.shape), description="kernel"),
        stride=w.IntSlider(2, 1, min(x.shape), description="stride"),
        mode=w.ToggleButtons(options=["max", "avg"], description="mode"),
    )


