"""How good is a label map: the confusion matrix, IoU per class, mean IoU, and IoU near boundaries.

Every pixel is one classification, so the whole dataset's pixels give one ``[C, C]`` confusion matrix
(rows the true class, columns the predicted one). The IoU of class ``c`` is its diagonal entry over
its row sum plus its column sum minus the diagonal: the pixels both call ``c`` over the pixels either
calls ``c``. Mean IoU (mIoU) averages it over the classes that occur at all (in the truth or in the
prediction); a class that is in neither has no IoU, so it is left out rather than counted as 0 or 1.

Counts are *accumulated* over every pixel given, across images, before dividing: a class that fills
a few pixels of one image weighs as much as those pixels, not as much as a whole image. Pixel accuracy
(the diagonal over the total) flatters a model on background-heavy images, which is why segmentation
reports mIoU. Skip connections matter most near object outlines, so :func:`boundary_band` selects
the pixels within a few pixels of a label change, to score them alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..train import confusion_matrix
from ..validate import nonneg_int, positive_int, same_device, tensor_rank

__all__ = ["segmentation_confusion", "iou_per_class", "mean_iou", "pixel_accuracy", "boundary_band", "segmentation_scores"]


def _check_labels(pred, target, num_classes, ignore_index):
    tensor_rank("pred", pred, (2, 3))
    tensor_rank("target", target, (2, 3))
    same_device(pred=pred, target=target)
    positive_int("num_classes", num_classes)
    for name, value in (("pred", pred), ("target", target)):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class labels, got dtype {value.dtype}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if ignore_index is not None and (not isinstance(ignore_index, int) or isinstance(ignore_index, bool)):
        raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
    ignored = target == ignore_index if ignore_index is not None else None
    checked = target if ignored is None else torch.where(ignored, 0, target)
    for name, value in (("pred", pred), ("target", checked)):
        if value.numel():
            low, high = (int(v) for v in torch.aminmax(value))
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"{name} labels must lie in 0..{num_classes - 1} (num_classes={num_classes})"
                    f"{'' if ignore_index is None or name == 'pred' else f' or be ignore_index={ignore_index}'}, "
                    f"got values from {low} to {high}"
                )
    if ignored is not None:
        # Ignored pixels go to an extra class num_classes, whose row of the confusion matrix is dropped:
        # no boolean indexing (a copy of every kept pixel), so large label maps stay fast.
        target = torch.where(ignored, num_classes, target.long())
    return pred, target


def segmentation_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 pixel counts, rows the true class, columns the predicted one.

    ``pred``, ``target``: integer label maps ``[H, W]`` or ``[N, H, W]`` of the same shape; pixels whose
    target is ``ignore_index`` are not counted (their prediction does not matter).
    """
    pred, target = _check_labels(pred, target, num_classes, ignore_index)
    if ignore_index is None:
        return confusion_matrix(pred, target, num_classes)
    return confusion_matrix(pred, target, num_classes + 1)[:num_classes, :num_classes]


def iou_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """IoU of each class ``[num_classes]`` float32, accumulated over all pixels given; ``nan`` for a class
    that neither ``pred`` nor ``target`` contains (its union is empty). Arguments as
    :func:`segmentation_confusion`."""
    counts = segmentation_confusion(pred, target, num_classes, ignore_index)
    inter = counts.diagonal()
    union = counts.sum(0) + counts.sum(1) - inter
    return (inter.float() / union.float()).masked_fill(union == 0, float("nan"))


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """Mean IoU, a 0-d float32 tensor: :func:`iou_per_class` averaged over the classes whose union is
    non-empty (``nan`` when no pixel is counted at all).

    ``pred``, ``target``: integer ``[H, W]`` or ``[N, H, W]``; intersections and unions are summed over
    every pixel (and image) before dividing. Pixels whose target is ``ignore_index`` are left out.
    Worked example: target ``[[0, 0], [1, 1]]``, prediction ``[[0, 1], [1, 1]]``: class 0 has IoU 1/2,
    class 1 has 2/3, and a third class present nowhere is not averaged in: mIoU = 7/12.
    """
    return iou_per_class(pred, target, num_classes, ignore_index).nanmean()


def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Fraction of the counted pixels whose label is right, a 0-d float32 tensor (pixels whose target is
    ``ignore_index`` are left out)."""
    tensor_rank("pred", pred, (2, 3))
    tensor_rank("target", target, (2, 3))
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    keep = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    return (pred[keep] == target[keep]).float().mean()


def boundary_band(target: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within ``width`` pixels of a label change: a bool mask of ``target``'s shape (``[H, W]`` or
    ``[N, H, W]``).

    A pixel is in the band when the ``(2*width + 1)``-square around it holds more than one label, i.e.
    the largest and the smallest label there differ (max pooling of the labels and of their negatives;
    the image border is not a boundary). ``width=0`` gives an empty band.
    """
    tensor_rank("target", target, (2, 3))
    nonneg_int("width", width)
    labels = target.to(torch.float32 if target.device.type == "mps" else torch.float64)
    batch = labels.reshape(-1, 1, *labels.shape[-2:])
    if width == 0:
        return torch.zeros_like(target, dtype=torch.bool)
    size = 2 * width + 1
    high = F.max_pool2d(batch, size, stride=1, padding=width)
    low = -F.max_pool2d(-batch, size, stride=1, padding=width)
    return (high != low).reshape(target.shape)


def segmentation_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int, band_width: int = 2,
                        ignore_index: int | None = None) -> dict:
    """The lecture's table row for one model: ``{"miou", "iou" [num_classes], "pixel_accuracy",
    "boundary_miou", "boundary_iou" [num_classes]}``, the boundary scores counting only the pixels of
    :func:`boundary_band` ``(target, band_width)`` (the others are ignored)."""
    ignore = -1 if ignore_index is None else ignore_index
    near = torch.where(boundary_band(target, band_width), target, torch.full_like(target, ignore))
    if ignore_index is not None:
        near = torch.where(target == ignore_index, target, near)
    iou = iou_per_class(pred, target, num_classes, ignore_index)
    boundary = iou_per_class(pred, near, num_classes, ignore)
    return {"miou": float(iou.nanmean()), "iou": iou, "pixel_accuracy": float(pixel_accuracy(pred, target, ignore_index)),
            "boundary_miou": float(boundary.nanmean()), "boundary_iou": boundary}
