"""Matplotlib helpers: every figure gets a title and labelled axes, and every helper returns its
figure so a notebook can add to it. Images are ``[C, H, W]`` or ``[H, W]`` tensors on any device."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

__all__ = ["layout", "to_numpy_image", "show_image", "show_images", "plot_history", "plot_confusion", "plot_heatmap"]


def layout():
    """The course's figure layout: matplotlib's constrained layout with a little more room between
    rows, so that a figure title (``fig.suptitle``) never touches the axes titles under it, which the
    default padding allows when the axes hold images of fixed aspect. Use as
    ``plt.subplots(..., layout=plot.layout())`` or ``plt.figure(..., layout=plot.layout())``."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    return ConstrainedLayoutEngine(h_pad=0.15)


def to_numpy_image(img: torch.Tensor):
    """``[C, H, W]`` / ``[H, W]`` tensor -> an array ``imshow`` understands (``[H, W, 3]`` or ``[H, W]``)."""
    if not isinstance(img, torch.Tensor) or img.dim() not in (2, 3):
        raise ValueError(f"img must be a [C, H, W] or [H, W] tensor, got {getattr(img, 'shape', type(img))}")
    img = img.detach().float().cpu()
    if img.dim() == 3:
        img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
    return img.numpy()


def show_image(img, title: str = "", ax=None, cmap: str = "gray", colorbar: bool = False, **kwargs):
    """Draw one image without ticks; grey images use ``cmap``. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    array = to_numpy_image(img)
    handle = ax.imshow(array, cmap=cmap if array.ndim == 2 else None, **kwargs)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(handle, ax=ax, fraction=0.046, pad=0.04)
    return ax


def show_images(images, titles=None, ncols: int = 8, title: str = "", cmap: str = "gray", size: float = 1.6, **kwargs):
    """A grid of images (a ``[N, C, H, W]`` tensor or a list) with optional per-image titles."""
    images = list(images)
    if not images:
        raise ValueError("images must not be empty")
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if title else 0)), squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index < len(images):
            show_image(images[index], titles[index] if titles else "", ax=ax, cmap=cmap, **kwargs)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history, title: str = "Training history"):
    """Loss and accuracy curves of a :class:`course_lib.train.History` (train and, if any, validation)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = range(1, history.epochs + 1)
    left.plot(epochs, history.train_loss, label="train")
    right.plot(epochs, history.train_acc, label="train")
    if history.val_loss:
        left.plot(epochs, history.val_loss, label="validation")
        right.plot(epochs, history.val_acc, label="validation")
    left.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    right.set(title="accuracy", xlabel="epoch", ylabel="fraction correct")
    for ax in (left, right):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(matrix: torch.Tensor, class_names=None, title: str = "Confusion matrix", unit: str = "images"):
    """Counts matrix (rows true, columns predicted) with the numbers written in the cells; ``unit`` names
    what is counted (``"pixels"`` for a segmentation)."""
    matrix = matrix.detach().cpu()
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(0.5 * n + 2.5, 0.5 * n + 2))
    handle = ax.imshow(matrix.numpy(), cmap="Blues")
    threshold = matrix.max().item() / 2
    for i in range(n):
        for j in range(n):
            value = int(matrix[i, j])
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color="white" if value > threshold else "black")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=names, yticklabels=names, xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(handle, ax=ax, fraction=0.046, pad=0.04, label=unit)
    fig.tight_layout()
    return fig


def plot_heatmap(values: torch.Tensor, title: str = "", ax=None, cmap: str = "viridis", label: str = "", **kwargs):
    """A 2-D map (e.g. an occlusion or score map) with a labelled colour bar."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.5))
    handle = ax.imshow(values.detach().float().cpu().numpy(), cmap=cmap, **kwargs)
    ax.set_title(title)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.figure.colorbar(handle, ax=ax, fraction=0.046, pad=0.04, label=label)
    return ax
