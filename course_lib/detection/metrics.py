"""How good is a detector: matching detections to ground truth, precision-recall, (mean) average precision.

A detection is a *true positive* when it overlaps a ground-truth box of its class with IoU >= the
threshold and that box has not been claimed by a higher-scoring detection; every other detection is a
false positive (a duplicate, a wrong place or a wrong class). Ranking detections by score and walking
down the list traces a precision-recall curve; average precision (AP) is the area under its monotone
envelope (PASCAL VOC's all-point interpolation), and mAP averages AP over classes.
"""
from __future__ import annotations

import torch

from ..validate import nonneg_int, same_device, tensor_rank
from .boxes import _boxes, _threshold, box_iou

__all__ = ["precision_recall_curve", "average_precision", "match_detections", "mean_average_precision"]


def _ranked(scores, true_positive, num_gt):
    tensor_rank("scores", scores, 1)
    tensor_rank("true_positive", true_positive, 1)
    same_device(scores=scores, true_positive=true_positive)
    nonneg_int("num_gt", num_gt)
    if true_positive.shape != scores.shape:
        raise ValueError(
            f"true_positive must have one entry per score ({scores.shape[0]}), got {true_positive.shape[0]}"
        )
    hits = int(true_positive.bool().sum())
    if hits > num_gt:
        raise ValueError(
            f"true_positive has {hits} hits but num_gt={num_gt}: each ground truth is found at most once"
        )
    order = scores.argsort(descending=True, stable=True)
    return true_positive.bool()[order]


def precision_recall_curve(scores: torch.Tensor, true_positive: torch.Tensor, num_gt: int):
    """Precision and recall ``[D]`` after each of ``D`` detections, ranked by decreasing ``scores`` ``[D]``.

    ``true_positive`` ``[D]`` (bool or 0/1) marks the detections that found an object; ``num_gt`` is the
    number of objects to find. Ties keep the input order. With ``num_gt == 0`` recall is 0 everywhere.
    """
    tp = _ranked(scores, true_positive, num_gt)
    dtype = scores.dtype if scores.is_floating_point() else torch.float32
    found = tp.to(dtype).cumsum(0)
    ranks = torch.arange(1, tp.numel() + 1, device=scores.device, dtype=dtype)
    return found / ranks, found / max(num_gt, 1)


def average_precision(scores: torch.Tensor, true_positive: torch.Tensor, num_gt: int) -> torch.Tensor:
    """Average precision of one class, a 0-dim tensor in [0, 1] (VOC all-point interpolation).

    The precision-recall curve zig-zags: every false positive lowers precision, the next true positive
    raises it again. The *envelope* replaces precision at each rank by the best precision at any deeper
    rank (a user who wants this recall can always go deeper); AP is the area under that staircase,
    ``sum_i (recall_i - recall_{i-1}) * envelope_i``. Worked example: hits ``[1, 0, 0, 1, 1]`` with
    ``num_gt=3`` have precision ``1, 1/2, 1/3, 1/2, 3/5`` and envelope ``1, 3/5, 3/5, 3/5, 3/5``, so
    ``AP = 1/3 * 1 + 1/3 * 3/5 + 1/3 * 3/5 = 11/15``. Objects never found cap AP at the recall reached.
    No detections, or ``num_gt == 0`` (nothing to find, so nothing can be found), give 0.0;
    :func:`mean_average_precision` skips classes without ground truth.
    """
    precision, recall = precision_recall_curve(scores, true_positive, num_gt)
    if precision.numel() == 0:
        return torch.zeros((), device=scores.device, dtype=precision.dtype)
    envelope = precision.flip(0).cummax(0).values.flip(0)
    gained = torch.diff(recall, prepend=recall.new_zeros(1))  # recall added by each detection
    return (gained * envelope).sum()


def match_detections(
    boxes, scores, gt_boxes, iou_threshold: float = 0.5, labels=None, gt_labels=None
) -> torch.Tensor:
    """Which detections are true positives, ``[D]`` bool in the input order.

    Args:
        boxes, scores: detections ``[D, 4]`` and ``[D]``.
        gt_boxes: ground truth ``[G, 4]`` of the same image.
        iou_threshold: least IoU for a hit.
        labels, gt_labels: optional classes ``[D]`` and ``[G]``; a detection only matches its own class.

    PASCAL VOC's rule: each detection looks at the ground-truth box it overlaps most (within its class);
    it is a hit when that IoU is >= ``iou_threshold`` and no higher-scoring detection already claimed
    that box (a second detection of the same object is a false positive). Because every detection's
    candidate box is fixed in advance, "first claim wins" needs no loop: among the detections that
    point at the same box, only the best-ranked one is a hit.
    """
    _boxes("boxes", boxes)
    tensor_rank("scores", scores, 1)
    _boxes("gt_boxes", gt_boxes)
    same_device(boxes=boxes, scores=scores, gt_boxes=gt_boxes)
    iou_threshold = _threshold("iou_threshold", iou_threshold)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must have one entry per box ({boxes.shape[0]}), got {scores.shape[0]}")
    if (labels is None) != (gt_labels is None):
        raise ValueError("labels and gt_labels must be given together (or neither)")
    d, g = boxes.shape[0], gt_boxes.shape[0]
    if d == 0 or g == 0:
        return torch.zeros(d, dtype=torch.bool, device=boxes.device)
    iou = box_iou(boxes, gt_boxes.to(boxes.dtype))  # [D, G]
    if labels is not None:
        if labels.shape != (d,) or gt_labels.shape != (g,):
            raise ValueError(
                f"labels must be [{d}] and gt_labels [{g}], got {tuple(labels.shape)} and {tuple(gt_labels.shape)}"
            )
        iou = iou.masked_fill(labels[:, None] != gt_labels[None, :], -1.0)
    best_iou, best_gt = iou.max(dim=1)
    rank = torch.empty(d, dtype=torch.long, device=boxes.device)
    rank[scores.argsort(descending=True, stable=True)] = torch.arange(d, device=boxes.device)
    candidate = best_iou >= iou_threshold
    # the best (smallest) rank pointing at each ground-truth box claims it
    first_claim = torch.full((g,), d, dtype=torch.long, device=boxes.device)
    first_claim.scatter_reduce_(0, best_gt[candidate], rank[candidate], reduce="amin")
    return candidate & (first_claim[best_gt] == rank)


def _check_list(name, items, keys):
    if not isinstance(items, (list, tuple)) or not all(isinstance(t, dict) and keys <= t.keys() for t in items):
        raise ValueError(f"{name} must be a list of dicts with keys {sorted(keys)}, got {type(items).__name__}")


def mean_average_precision(detections, targets, iou_threshold: float = 0.5, per_class: bool = False):
    """Mean over classes of the average precision, a 0-dim tensor (mAP@0.5 with the default threshold).

    ``detections``: a list with one dict per image with ``boxes`` ``[D, 4]``, ``scores`` ``[D]``, ``labels``
    ``[D]`` (the output format of torchvision detectors); ``targets``: the same images' ground truth with
    ``boxes`` ``[G, 4]`` and ``labels`` ``[G]``. Detections are matched per image with
    :func:`match_detections`, then pooled over images per class. Classes are those present in the
    ground truth; detections of other classes are false positives that no class counts.
    With ``per_class=True`` returns ``(map, {label: ap})``.
    """
    _check_list("detections", detections, {"boxes", "scores", "labels"})
    _check_list("targets", targets, {"boxes", "labels"})
    if len(detections) != len(targets):
        raise ValueError(
            f"detections and targets must list the same images, got {len(detections)} and {len(targets)}"
        )
    iou_threshold = _threshold("iou_threshold", iou_threshold)
    hits = [
        match_detections(d["boxes"], d["scores"], t["boxes"], iou_threshold, d["labels"], t["labels"])
        for d, t in zip(detections, targets)
    ]
    device = targets[0]["labels"].device if targets else torch.device("cpu")

    def pooled(parts, dtype):  # one tensor over all images (an empty list gives an empty tensor)
        empty = torch.zeros(0, dtype=dtype, device=device)
        return torch.cat([p.to(device=device, dtype=dtype) for p in parts] + [empty])

    scores = pooled([d["scores"] for d in detections], torch.float32)
    labels = pooled([d["labels"] for d in detections], torch.int64)
    hits = pooled(hits, torch.bool)
    gt_labels = pooled([t["labels"] for t in targets], torch.int64)
    classes, gt_counts = torch.unique(gt_labels, return_counts=True)
    aps = {
        int(c): average_precision(scores[labels == c], hits[labels == c], int(n))
        for c, n in zip(classes.tolist(), gt_counts.tolist())
    }
    mean = torch.stack(list(aps.values())).mean() if aps else torch.zeros((), device=device)
    return (mean, aps) if per_class else mean
