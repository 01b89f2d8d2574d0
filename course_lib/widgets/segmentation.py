"""Explorer of lecture 07: a segmenter's label map over a scene, its opacity, and the scene's IoU per class."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from ..train import predict
from ._interact import interact

__all__ = ["label_colours", "draw_segmentation", "segmentation_explorer"]


def label_colours(num_classes: int) -> ListedColormap:
    """One colour per class, background (label 0) dark grey, the rest from matplotlib's ``tab10``."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 1 <= num_classes <= 10:
        raise ValueError(f"num_classes must be an int from 1 to 10, got {num_classes!r}")
    colours = [(0.2, 0.2, 0.2)] + [plt.get_cmap("tab10")(k)[:3] for k in range(num_classes - 1)]
    return ListedColormap(colours, name=f"labels{num_classes}")


def draw_segmentation(image, pred, target=None, class_names=None, opacity: float = 0.5, axes=None, title: str = ""):
    """Draw ``image`` ``[3, H, W]`` (in grey) with the label map ``pred`` ``[H, W]`` laid over it at ``opacity`` (0: the
    image alone, 1: the labels alone; background pixels, label 0, are left uncoloured); with ``target``
    ``[H, W]``, also the true labels beside it and the IoU of every class of this one scene (``-`` for a
    class in neither map) in the title.

    ``class_names`` names the labels (their number fixes the colours; default: as many as the largest
    label needs). Returns the axes drawn on (one, or two with ``target``) and the per-class IoU ``[C]``
    (``None`` without ``target``).
    """
    from ..plot import to_numpy_image
    from ..segmentation import iou_per_class

    if not isinstance(opacity, (int, float)) or isinstance(opacity, bool) or not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be a number from 0 to 1, got {opacity!r}")
    if pred.dim() != 2 or pred.shape != image.shape[-2:]:
        raise ValueError(f"pred must be [H, W] like the image {tuple(image.shape[-2:])}, got {tuple(pred.shape)}")
    if target is not None and target.shape != pred.shape:
        raise ValueError(f"target must have pred's shape {tuple(pred.shape)}, got {tuple(target.shape)}")
    num_classes = len(class_names) if class_names is not None else int(max(pred.max(), 0 if target is None else target.max())) + 1
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    cmap = label_colours(num_classes)
    panels = 1 if target is None else 2
    if axes is None:
        _, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.4), squeeze=False)
        axes = list(axes[0])
    axes = list(np.atleast_1d(axes))
    picture = to_numpy_image(image).clip(0, 1)
    if picture.ndim == 3:  # the photo in grey, so that the label colours stand out
        picture = picture.mean(axis=2)
    maps = [(pred, "prediction")] + ([(target, "ground truth")] if target is not None else [])
    for ax, (labels, what) in zip(axes, maps):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
        values = labels.detach().cpu().numpy()
        ax.imshow(np.ma.masked_where(values == 0, values), cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5, alpha=opacity,
                  interpolation="nearest")
        ax.set(title=what, xlabel="x (pixels)", ylabel="y (pixels)")
    iou = None
    if target is not None:
        iou = iou_per_class(pred, target, num_classes)
        words = ", ".join(f"{name} {'-' if torch.isnan(v) else f'{float(v):.2f}'}" for name, v in zip(names, iou))
        title = f"{title}\n" if title else ""
        axes[0].figure.suptitle(f"{title}IoU on this scene: {words}; mIoU {float(iou.nanmean()):.3f}", fontsize=10)
    elif title:
        axes[0].set_title(title)
    handles = [Patch(facecolor="none", edgecolor="0.5", label=f"{names[0]} (uncoloured)")]
    handles += [Patch(color=cmap(k), label=name) for k, name in enumerate(names) if k]
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    axes[0].figure.tight_layout()
    return axes, iou


def segmentation_explorer(models: dict, images, targets, class_names=None):
    """Pick a scene (slider), a model (drop-down) and the overlay's opacity; shows
    :func:`draw_segmentation` of that model's prediction against the scene's true labels.

    ``models``: ``{name: model}``, each mapping ``[N, 3, H, W]`` to logits ``[N, C, H, W]``; ``images``
    ``[N, 3, H, W]``, ``targets`` ``[N, H, W]``. Predictions are computed once per model and scene shown.
    """
    import ipywidgets as w

    if not isinstance(models, dict) or not models:
        raise ValueError(f"models must be a non-empty dict of name -> model, got {type(models).__name__}")
    cache = {}

    def predicted(name, index):
        if (name, index) not in cache:
            cache[name, index] = predict(models[name], images[index : index + 1])[0].argmax(0)
        return cache[name, index]

    def show(scene, model, opacity):
        draw_segmentation(images[scene], predicted(model, scene), targets[scene], class_names, opacity,
                          title=f"{model}, scene {scene}")

    return interact(
        show,
        scene=w.IntSlider(0, min=0, max=len(images) - 1, description="scene", continuous_update=False),
        model=w.Dropdown(options=list(models), description="model"),
        opacity=w.FloatSlider(0.5, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False),
    )
