"""Explorer of lecture 06: boxes on scenes, a detector's score threshold and NMS."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle
from ._interact import interact


__all__ = ["draw_boxes", "draw_detections_filtered", "opening_threshold", "detection_explorer"]

_CLASS_COLOURS = ["0.5", "tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan", "tab:pink"]


def draw_boxes(image, boxes, labels=None, scores=None, class_names=None, ax=None, title: str = "", colour=None,
               linestyle="-", linewidth: float = 1.5, text: bool = True):
    """Draw ``image`` ``[3, H, W]`` (or ``[H, W]``) with ``boxes`` ``[K, 4]`` (x1, y1, x2, y2 pixel corners).

    ``labels`` ``[K]`` pick each box's colour and name (``class_names[label]``); ``scores`` ``[K]`` are
    written after the name. ``image=None`` draws on ``ax`` as it is (to add boxes to a drawn image).
    A box ``[x1, x2)`` covers pixels ``x1 .. x2 - 1``, whose centres ``imshow`` puts at integers, so its
    outline runs along the pixels' outer edges. Returns the axes.
    """
    from ..plot import to_numpy_image

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    if image is not None:
        ax.imshow(to_numpy_image(image).clip(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
    boxes = boxes.detach().cpu().reshape(-1, 4)
    labels = labels.detach().cpu().tolist() if labels is not None else [None] * len(boxes)
    scores = scores.detach().cpu().tolist() if scores is not None else [None] * len(boxes)
    for (x1, y1, x2, y2), label, score in zip(boxes.tolist(), labels, scores):
        edge = colour or _CLASS_COLOURS[(label or 0) % len(_CLASS_COLOURS)]
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=edge, lw=linewidth, ls=linestyle))
        words = [class_names[label] if class_names is not None and label is not None else label, score]
        words = [f"{w:.2f}" if isinstance(w, float) else str(w) for w in words if w is not None]
        if text and words:
            ax.text(x1 - 0.5, y1 - 1.0, " ".join(words), color="white", fontsize=7, va="bottom", clip_on=True,
                    bbox=dict(facecolor=edge, edgecolor="none", pad=0.8, alpha=0.85))  # clipped: never over the title
    if title:
        ax.set_title(title)
    return ax


def draw_detections_filtered(image, detections, score_threshold: float = 0.5, nms_threshold: float = 0.5,
                             class_names=None, gt_boxes=None, ax=None):
    """Apply a detector's last two steps to its raw output and draw what survives.

    ``detections``: ``{"boxes" [D, 4], "labels" [D], "scores" [D]}`` for ``image``, before any
    thresholding or NMS (``course_lib.detection.set_postprocessing(model, 0.0, 1.0, 1000)`` exposes
    them). Keeps the boxes scoring above ``score_threshold``, then runs per-class NMS
    (:func:`course_lib.detection.batched_nms`) at ``nms_threshold`` (1.0 switches it off). Ground-truth
    boxes ``gt_boxes`` ``[G, 4]``, if given, are drawn dashed in white. Returns ``(ax, kept)``, ``kept``
    the indices ``[k]`` into ``detections`` by decreasing score.
    """
    from ..detection import batched_nms

    scores = detections["scores"]
    candidates = torch.nonzero(scores > score_threshold).flatten()
    kept = candidates[batched_nms(detections["boxes"][candidates], scores[candidates],
                                  detections["labels"][candidates], nms_threshold)]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    draw_boxes(image, detections["boxes"][kept], detections["labels"][kept], scores[kept], class_names, ax=ax,
               text=len(kept) <= 12)
    if gt_boxes is not None:
        draw_boxes(None, gt_boxes, ax=ax, colour="white", linestyle="--", linewidth=1.0)
    ax.set_title(f"score > {score_threshold:.2f}, NMS at IoU {nms_threshold:.2f}:\n"
                 f"{len(kept)} of {len(scores)} raw box{'es' if len(scores) != 1 else ''} kept", fontsize=10)
    return ax, kept


def opening_threshold(scores: torch.Tensor, cap: float = 0.5) -> float:
    """A score threshold that keeps some boxes whatever the state of training: half the highest score
    in ``scores`` ``[D]``, at most ``cap``, rounded down to 0.01 (0.0 when there are no scores)."""
    if scores.numel() == 0:
        return 0.0
    return math.floor(100 * min(cap, 0.5 * float(scores.max()))) / 100


def detection_explorer(model, image, class_names=None, gt_boxes=None, score_threshold=None, nms_threshold: float = 0.5):
    """Score-threshold and NMS-IoU sliders over a detector's raw detections on ``image`` ``[3, H, W]``.

    The detector runs once, with its own threshold and NMS switched off; the sliders then redo only
    :func:`draw_detections_filtered`. The model's post-processing settings are restored afterwards. The
    score slider opens at ``score_threshold``, by default :func:`opening_threshold` of the raw scores,
    so that an undertrained detector (whose scores are all low) opens on boxes too.
    """
    import ipywidgets as w

    from ..detection import predict, set_postprocessing

    previous = set_postprocessing(model, 0.0, 1.0, 1000)
    try:
        raw = predict(model, image[None])[0]
    finally:
        set_postprocessing(model, *previous)
    if score_threshold is None:
        score_threshold = opening_threshold(raw["scores"])

    def show(score_threshold, nms_threshold):
        draw_detections_filtered(image, raw, score_threshold, nms_threshold, class_names, gt_boxes)

    return interact(
        show,
        score_threshold=w.FloatSlider(score_threshold, min=0.0, max=0.99, step=0.01, description="score >", continuous_update=False),
        nms_threshold=w.FloatSlider(nms_threshold, min=0.05, max=1.0, step=0.05, description="NMS IoU", continuous_update=False),
    )
