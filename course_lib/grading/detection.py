"""Exercises of lecture 06 (object detection): the box machinery of the R-CNN family.

Oracles: torchvision's own operators (``ops.box_iou``, ``ops.nms``, ``ops.roi_pool``, the ``BoxCoder`` of
its detection models) and, for average precision, hand-worked values plus the PASCAL VOC devkit's
recipe written out below with numpy. Cases that separate a right answer from a plausible wrong one
are built on purpose: IoU exactly equal to the NMS threshold (exact binary fractions), RoI corners
with fractions of one half, RoI sizes that the output grid does not divide, ``exp`` deltas beyond the
clamp, and rankings whose precision dips and recovers.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder

from .core import Case, Exercise, compare_value, register, rand_dtype, rand_int

LECTURE = "06_detection"

WEIGHT_CHOICES = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 0.5, 3.0, 1.5)]


def _random_boxes(gen, n, dtype, extent=64.0, max_size=32.0, integer=False):
    """``[n, 4]`` boxes with corners inside ``[0, extent + max_size]`` and sides of at least one pixel."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * extent
    wh = 1.0 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * (max_size - 1.0)
    boxes = torch.cat([xy, xy + wh], dim=1)
    return (boxes.round() if integer else boxes).to(dtype)


# --- box_iou ------------------------------------------------------------------------------------

def _iou_cases(gen, hidden):
    square = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    others = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    cases = [
        Case((torch.tensor([[10.0, 10.0, 30.0, 30.0]]), torch.tensor([[15.0, 10.0, 35.0, 30.0]])),
             label="lecture example: [10, 10, 30, 30] vs [15, 10, 35, 30] (IoU 300/500 = 0.6)"),
        Case((square, others), label="2x2 square vs overlapping (1/7), touching edge (0), apart (0), identical (1)"),
        Case((torch.tensor([[0.0, 0.0, 4.0, 4.0], [10.0, 10.0, 12.0, 12.0]]),
              torch.tensor([[20.0, 20.0, 24.0, 24.0], [5.0, 30.0, 9.0, 33.0], [11.0, 0.0, 15.0, 4.0]])),
             label="no box overlaps any other (all IoU 0)"),
    ]
    for n, m in [(1, 1), (5, 3), (17, 9), (40, 25)]:
        dtype = rand_dtype(gen)
        cases.append(Case((_random_boxes(gen, n, dtype, integer=bool(rand_int(gen, 0, 1))), _random_boxes(gen, m, dtype))))
    same = _random_boxes(gen, 6, torch.float64)
    cases += [
        Case((same, same.clone()), label="a set of 6 boxes against itself (diagonal 1)"),
        Case((torch.zeros(0, 4), _random_boxes(gen, 3, torch.float32)), label="no boxes in a (empty [0, 3] result)"),
        Case((_random_boxes(gen, 2, torch.float64), torch.zeros(0, 4, dtype=torch.float64)), label="no boxes in b"),
    ]
    return cases


def _iou_oracle(case):
    return torchvision.ops.box_iou(*case.args)


register(Exercise("box_iou", LECTURE, 2, _iou_cases, _iou_oracle))


# --- encode_boxes and decode_boxes --------------------------------------------------------------

# The lecture's worked example: a proposal 20 wide and 24 tall, and the object it should be moved onto.
PROPOSAL = [8.0, 12.0, 28.0, 36.0]
OBJECT = [10.0, 10.0, 34.0, 40.0]


def _encode_cases(gen, hidden):
    cases = [
        Case((torch.tensor([OBJECT]), torch.tensor([PROPOSAL])),
             label=f"lecture example: gt {OBJECT}, proposal {PROPOSAL} -> [0.2, 1/24, ln 1.2, ln 1.25]"),
        Case((torch.tensor([[5.0, 0.0, 25.0, 20.0]]), torch.tensor([[0.0, 0.0, 10.0, 20.0]])),
             label="gt [5, 0, 25, 20], proposal [0, 0, 10, 20]: centre 10 right (one width), width doubled -> [1, 0, ln 2, 0]"),
        Case((torch.tensor([OBJECT]), torch.tensor([PROPOSAL])), {"weights": (10.0, 10.0, 5.0, 5.0)},
             label="lecture example with weights (10, 10, 5, 5)"),
    ]
    for k in [1, 7, 30, 12]:
        dtype = rand_dtype(gen)
        weights = WEIGHT_CHOICES[rand_int(gen, 0, len(WEIGHT_CHOICES) - 1)]
        cases.append(Case((_random_boxes(gen, k, dtype), _random_boxes(gen, k, dtype)), {"weights": weights}))
    same = _random_boxes(gen, 5, torch.float32, integer=True)
    cases += [
        Case((same, same.clone()), label="proposals already equal to the ground truth (all zeros)"),
        Case((torch.zeros(0, 4), torch.zeros(0, 4)), label="no boxes ([0, 4] result)"),
    ]
    return cases


def _encode_oracle(case):
    gt, proposals = case.args
    return BoxCoder(case.kwargs.get("weights", (1.0, 1.0, 1.0, 1.0))).encode_single(gt, proposals)


register(Exercise("encode_boxes", LECTURE, 2, _encode_cases, _encode_oracle))


def _decode_cases(gen, hidden):
    proposal = torch.tensor([PROPOSAL])
    cases = [
        Case((torch.tensor([[0.2, 1 / 24, math.log(1.2), math.log(1.25)]]), proposal),
             label=f"lecture example: deltas [0.2, 1/24, ln 1.2, ln 1.25] on proposal {PROPOSAL} -> {OBJECT}"),
        Case((torch.tensor([[1.0, 0.0, math.log(2.0), 0.0]]), torch.tensor([[0.0, 0.0, 10.0, 20.0]])),
             label="deltas [1, 0, ln 2, 0] on [0, 0, 10, 20] -> [5, 0, 25, 20]"),
        Case((torch.tensor([[0.0, 0.0, 10.0, -1.0], [0.5, -0.5, 3.0, 8.0]]), torch.tensor([[0.0, 0.0, 10.0, 20.0], [4.0, 4.0, 8.0, 6.0]])),
             label="log-size deltas above log(1000/16) ~ 4.14 must be clamped before exp"),
    ]
    for k, classes in [(1, 1), (6, 1), (9, 3), (20, 4)]:
        dtype = rand_dtype(gen)
        weights = WEIGHT_CHOICES[rand_int(gen, 0, len(WEIGHT_CHOICES) - 1)]
        deltas = torch.randn(k, 4 * classes, generator=gen, dtype=dtype)
        cases.append(Case((deltas, _random_boxes(gen, k, dtype)), {"weights": weights}))
    big = torch.randn(5, 8, generator=gen, dtype=torch.float64) * 4 + 2  # some log-sizes beyond the clamp
    cases += [
        Case((big, _random_boxes(gen, 5, torch.float64)), {"weights": (1.0, 1.0, 0.5, 0.5)},
             label="deltas [5, 8] (two classes), many clamped, weights (1, 1, 0.5, 0.5)"),
        Case((torch.zeros(0, 4), torch.zeros(0, 4)), label="no boxes"),
    ]
    return cases


def _decode_oracle(case):
    deltas, proposals = case.args
    return BoxCoder(case.kwargs.get("weights", (1.0, 1.0, 1.0, 1.0))).decode_single(deltas, proposals)


register(Exercise("decode_boxes", LECTURE, 2, _decode_cases, _decode_oracle))


# --- nms ----------------------------------------------------------------------------------------

def _nms_cases(gen, hidden):
    # [0, 0, 3, 1] and [1, 0, 4, 1] overlap in 2 of 4 pixels: IoU exactly 0.5, exact in binary.
    half = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]])
    # A chain: A overlaps B, B overlaps C, A does not overlap C. Greedy NMS drops B (beaten by A) and
    # then keeps C, because only *kept* boxes suppress.
    chain = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0], [8.0, 0.0, 18.0, 10.0]])
    cases = [
        Case((torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]]),
              torch.tensor([0.9, 0.8, 0.7]), 0.5), label="lecture example: a near-duplicate (IoU 0.68) and a separate box"),
        Case((half, torch.tensor([0.9, 0.8]), 0.5), label="IoU exactly 0.5 with threshold 0.5: keep both (only IoU > threshold suppresses)"),
        Case((torch.tensor([[0.0, 0.0, 5.0, 1.0], [3.0, 0.0, 8.0, 1.0], [20.0, 0.0, 21.0, 1.0]]), torch.tensor([0.3, 0.6, 0.1]), 0.25),
             label="IoU exactly 0.25 with threshold 0.25, scores not in input order"),
        Case((chain, torch.tensor([0.9, 0.8, 0.7]), 0.3), label="a chain A-B-C: A suppresses B, so B cannot suppress C"),
        Case((chain.flip(0), torch.tensor([0.5, 0.6, 0.7]), 0.3), label="the chain given in reverse order"),
    ]
    for n, threshold in [(5, 0.5), (40, 0.3), (40, 0.7), (200, 0.5)]:
        dtype = rand_dtype(gen)
        boxes = _random_boxes(gen, n, dtype, extent=40.0, max_size=24.0)
        scores = (torch.randperm(n, generator=gen).to(dtype) + 1) / n  # distinct
        cases.append(Case((boxes, scores, threshold)))
    same = torch.tensor([[3.0, 4.0, 9.0, 12.0]]).repeat(4, 1)
    cases += [
        Case((same, torch.tensor([0.2, 0.9, 0.4, 0.3]), 0.5), label="four identical boxes: only the best survives"),
        Case((torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 7.0, 7.0], [10.0, 0.0, 12.0, 2.0]]), torch.tensor([0.1, 0.7, 0.4]), 0.0),
             label="boxes that do not overlap, threshold 0: all kept, best first"),
        Case((torch.zeros(0, 4), torch.zeros(0), 0.5), label="no boxes (empty int64 result)"),
    ]
    return cases


def _nms_oracle(case):
    return torchvision.ops.nms(*case.args)


register(Exercise("nms", LECTURE, 3, _nms_cases, _nms_oracle))


# --- roi_pool -----------------------------------------------------------------------------------

def roi_example():
    """The lecture's RoI pooling example: a 6 x 8 map of distinct values and one RoI whose corners
    round differently from how they floor and whose 4 cells do not split evenly into 3 bins."""
    values = torch.randperm(48, generator=torch.Generator().manual_seed(31)).float()
    return values.view(1, 1, 6, 8), torch.tensor([[0.0, 1.5, 0.6, 5.2, 4.4]]), (2, 3)


def _random_rois(gen, k, batch, height, width, scale, dtype):
    # Corners in image pixels in steps of 1 / (2 * scale), so that on the feature map many fall on a
    # half (where rounding and flooring differ); some RoIs reach outside the map.
    extent = torch.tensor([width, height], dtype=torch.float64) / scale
    xy = (torch.rand(k, 2, generator=gen, dtype=torch.float64) * 1.3 - 0.15) * extent
    wh = torch.rand(k, 2, generator=gen, dtype=torch.float64) * extent * 0.8
    corners = torch.round(torch.cat([xy, xy + wh], dim=1) * 2 * scale) / (2 * scale)
    index = torch.randint(0, batch, (k, 1), generator=gen).to(torch.float64)
    return torch.cat([index, corners], dim=1).to(dtype)


def _roi_cases(gen, hidden):
    features, rois, size = roi_example()
    stride_map = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16).sin()
    cases = [
        Case((features, rois, size), label="lecture example: 6x8 map, RoI (1.5, 0.6)-(5.2, 4.4), output 2x3"),
        Case((stride_map, torch.tensor([[1.0, 6.0, 10.0, 30.0, 22.0], [0.0, 0.0, 0.0, 63.0, 63.0]]), 3), {"spatial_scale": 0.25},
             label="stride-4 feature map (spatial_scale 0.25), corners at 1.5 and 2.5 cells, and the whole image"),
        Case((features, torch.tensor([[0.0, 2.0, 2.0, 2.0, 2.0], [0.0, 40.0, 40.0, 50.0, 50.0], [0.0, -3.0, 1.0, 9.0, 5.0]]), 2),
             label="a zero-size RoI (one cell), a RoI off the map (all 0), a RoI wider than the map"),
    ]
    for output_size in [1, (2, 3), 7, (3, 2)]:
        dtype = rand_dtype(gen)
        batch, channels = rand_int(gen, 1, 3), rand_int(gen, 1, 4)
        height, width = rand_int(gen, 5, 16), rand_int(gen, 5, 16)
        scale = [1.0, 0.5, 0.25][rand_int(gen, 0, 2)]
        x = torch.randn(batch, channels, height, width, generator=gen, dtype=dtype)
        cases.append(Case((x, _random_rois(gen, rand_int(gen, 3, 20), batch, height, width, scale, dtype), output_size),
                          {"spatial_scale": scale}))
    cases.append(Case((torch.randn(2, 3, 8, 8, generator=gen), torch.zeros(0, 5), 2), label="no RoIs ([0, 3, 2, 2] result)"))
    return cases


def _roi_oracle(case):
    return torchvision.ops.roi_pool(*case.args, **case.kwargs)


register(Exercise("roi_pool", LECTURE, 3, _roi_cases, _roi_oracle))


# --- average_precision --------------------------------------------------------------------------

def _voc_average_precision(scores, true_positive, num_gt) -> float:
    """The PASCAL VOC devkit's recipe (VOC2010 onwards), in numpy: pad the curve with recall 0 and 1,
    sweep precision from the right keeping the running maximum, sum precision times recall steps."""
    order = np.argsort(-scores.double().numpy(), kind="stable")
    hits = true_positive.bool().numpy()[order].astype(np.float64)
    if hits.size == 0 or num_gt == 0:
        return 0.0
    tp, fp = np.cumsum(hits), np.cumsum(1.0 - hits)
    recall = np.concatenate([[0.0], tp / num_gt, [1.0]])
    precision = np.concatenate([[0.0], tp / (tp + fp), [0.0]])
    for i in range(precision.size - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _ap_cases(gen, hidden):
    def ranked(hits, num_gt, label, expected, scores=None):
        hits = torch.tensor(hits, dtype=torch.bool)
        scores = torch.linspace(0.95, 0.05, len(hits)) if scores is None else torch.tensor(scores)
        return Case((scores, hits, num_gt), label=label, expected=expected)

    cases = [
        ranked([1, 0, 0, 1, 1], 3, "lecture example: hits [1, 0, 0, 1, 1] by rank, 3 objects (AP 11/15)", 11 / 15),
        ranked([1, 1, 1], 3, "every detection a hit, all objects found (AP 1)", 1.0),
        ranked([1, 0, 1], 2, "hits [1, 0, 1], 2 objects (AP 1/2 + 1/2 * 2/3)", 0.5 + 0.5 * 2 / 3),
        ranked([1, 1], 4, "two hits, but 4 objects: half never found (AP 0.5)", 0.5),
        ranked([0, 0, 1], 1, "the only hit ranked third (AP 1/3)", 1 / 3),
        ranked([0, 1, 0, 1], 2, "scores not sorted: the hits have the top scores (AP 1)", 1.0, scores=[0.2, 0.9, 0.1, 0.8]),
        ranked([], 3, "no detections (AP 0)", 0.0),
        ranked([0, 0], 0, "nothing to find, num_gt = 0 (AP 0)", 0.0),
    ]
    for d in [6, 20, 50, 120]:
        dtype = rand_dtype(gen)
        scores = (torch.randperm(d, generator=gen).to(dtype) + 1) / (d + 1)  # distinct
        hits = torch.rand(d, generator=gen) < 0.3 + 0.5 * torch.rand(1, generator=gen)
        num_gt = int(hits.sum()) + rand_int(gen, 0, 3)
        cases.append(Case((scores, hits, num_gt)))
    return cases


def _ap_oracle(case):
    return _voc_average_precision(*case.args)


def _compare_ap(expected, got):
    # A Python number or a one-element tensor; float32 arithmetic is accurate to about 1e-6 here.
    return compare_value(float(expected), got, rel=1e-5)


register(Exercise("average_precision", LECTURE, 3, _ap_cases, _ap_oracle, _compare_ap))
