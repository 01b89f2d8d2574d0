"""Exercises of lecture 06 (object detection): the box machinery of the R-CNN family.

Oracles: torchvision's own operators (``ops.box_iou``, ``ops.nms``, ``ops.roi_pool``, the ``BoxCoder`` of
its detection models) and, for average precision, hand-worked values plus the PASCAL VOC devkit's
recipe written out below with numpy. Cases that separate a right answer from a plausible wrong one
are built on purpose: IoU exactly equal to the NMS threshold (exact binary fractions), RoI corners
on a half cell and a hair below one, RoI spans whose bin edges the features' dtype moves, sizes the
output grid does not divide, ``exp`` deltas beyond the clamp, proposals in another dtype than the
deltas, and rankings whose precision dips and recovers.

Each exercise carries its classic wrong versions (:class:`~.core.Mistake`). They run under the same
watch as a student's code, which must not call ``torchvision.ops`` or ``course_lib.detection``, so
they are written with plain torch operations.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder

from .core import Case, Exercise, Mistake, compare_value, register, rand_dtype, rand_int, section

LECTURE = "06_detection"
IOU_SECTION = f"({section('06', 'How much do two boxes agree? Intersection over union')})"
REGRESSION_SECTION = f"({section('06', 'Box regression: moving a proposal onto the object')})"
NMS_SECTION = f"({section('06', 'Non-maximum suppression')})"
ROI_SECTION = f"({section('06', 'Fast R-CNN: one CNN pass, then cut the proposals out of the feature map')})"
AP_SECTION = f"({section('06', 'Precision, recall and average precision')})"
# What the texts forbid: torchvision's box operators and box coder, and the course's own solutions.
BOX_OPS, ROI_OPS, CODER = "torchvision.ops.boxes", "torchvision.ops.roi_pool", "torchvision.models.detection._utils"
LIBRARY_BOXES, LIBRARY_METRICS = "course_lib.detection.boxes", "course_lib.detection.metrics"

WEIGHT_CHOICES = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 0.5, 3.0, 1.5)]
TENSORS = ("tensor float32", "tensor float64", "empty tensor")


def _random_boxes(gen, n, dtype, extent=64.0, max_size=32.0, integer=False):
    """``[n, 4]`` boxes with corners inside ``[0, extent + max_size]`` and sides of at least one pixel."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * extent
    wh = 1.0 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * (max_size - 1.0)
    boxes = torch.cat([xy, xy + wh], dim=1)
    return (boxes.round() if integer else boxes).to(dtype)


def _iou(a, b, *, extra=0.0, clamp=True, union="sum-inter"):
    """IoU ``[N, M]`` from torch operations, bent into a classic mistake by the keywords."""
    area_a = (a[:, 2] - a[:, 0] + extra) * (a[:, 3] - a[:, 1] + extra)
    area_b = (b[:, 2] - b[:, 0] + extra) * (b[:, 3] - b[:, 1] + extra)
    wh = torch.min(a[:, None, 2:], b[:, 2:]) - torch.max(a[:, None, :2], b[:, :2]) + extra
    inter = wh.clamp(min=0).prod(-1) if clamp else wh.prod(-1)
    if union == "sum":
        return inter / (area_a[:, None] + area_b)
    if union == "smaller":
        return inter / torch.min(area_a[:, None], area_b)
    return inter / (area_a[:, None] + area_b - inter)


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
        Case((torch.tensor([[0.0, 0.0, 4.0, 2.0]], dtype=torch.float64), torch.tensor([[1.0, 1.0, 3.0, 5.0]], dtype=torch.float64)),
             label="a wide box and a tall one crossing (IoU 2/10)"),
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


def _iou_mistake(**bend):
    def box_iou(a, b):
        return _iou(a, b, **bend)

    return box_iou


register(Exercise(
    "box_iou", LECTURE, 2, _iou_cases, _iou_oracle,
    params=("a", "b"), forms={"a": TENSORS, "b": TENSORS},
    forbidden=(BOX_OPS, LIBRARY_BOXES),
    mistakes=(
        Mistake("+ 1 in sizes", _iou_mistake(extra=1.0),
                f"Your sizes count one pixel too many: with continuous corners a box is x2 - x1 wide, no + 1 {IOU_SECTION}."),
        Mistake("no clamp", _iou_mistake(clamp=False),
                f"Your IoU is not 0 for boxes apart in both directions: clamp the overlap's width and height at 0 before multiplying {IOU_SECTION}."),
        Mistake("union double-counts", _iou_mistake(union="sum"),
                f"Your union counts the shared area twice: union = area(a) + area(b) - intersection {IOU_SECTION}."),
        Mistake("over the smaller box", _iou_mistake(union="smaller"),
                f"You divide by the smaller box's area: IoU divides the intersection by the union of the two boxes {IOU_SECTION}."),
    ),
))


# --- encode_boxes and decode_boxes --------------------------------------------------------------

# The lecture's worked example: a proposal 20 wide and 24 tall, and the object it should be moved onto.
PROPOSAL = [8.0, 12.0, 28.0, 36.0]
OBJECT = [10.0, 10.0, 34.0, 40.0]
LOG_CLAMP = math.log(1000.0 / 16)


def _centres(boxes, extra=0.0):
    w, h = boxes[:, 2] - boxes[:, 0] + extra, boxes[:, 3] - boxes[:, 1] + extra
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


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
        Case((torch.zeros(0, 4), torch.zeros(0, 4)), label="K = 0: no boxes ([0, 4] result)"),
    ]
    return cases


def _encode_oracle(case):
    gt, proposals = case.args
    return BoxCoder(case.kwargs.get("weights", (1.0, 1.0, 1.0, 1.0))).encode_single(gt, proposals)


def _encode_mistake(*, extra=0.0, flip_log=False, by_gt=False, ignore_weights=False, corners=False):
    def encode_boxes(gt, proposals, weights=(1.0, 1.0, 1.0, 1.0)):
        wx, wy, ww, wh = (1.0, 1.0, 1.0, 1.0) if ignore_weights else weights
        px, py, pw, ph = _centres(proposals, extra)
        gx, gy, gw, gh = _centres(gt, extra)
        if corners:
            px, py, gx, gy = proposals[:, 0], proposals[:, 1], gt[:, 0], gt[:, 1]
        sw, sh = (gw, gh) if by_gt else (pw, ph)
        tw, th = (torch.log(pw / gw), torch.log(ph / gh)) if flip_log else (torch.log(gw / pw), torch.log(gh / ph))
        return torch.stack([wx * (gx - px) / sw, wy * (gy - py) / sh, ww * tw, wh * th], dim=1)

    return encode_boxes


WEIGHTS_FORMS = ("list of float",)

register(Exercise(
    "encode_boxes", LECTURE, 2, _encode_cases, _encode_oracle,
    params=("gt", "proposals", "weights"), forms={"gt": TENSORS, "proposals": TENSORS, "weights": WEIGHTS_FORMS},
    forbidden=(CODER, LIBRARY_BOXES),
    mistakes=(
        Mistake("+ 1 in sizes", _encode_mistake(extra=1.0),
                f"Your widths and heights count one pixel too many: a box is x2 - x1 wide, no + 1 {REGRESSION_SECTION}."),
        Mistake("log ratio inverted", _encode_mistake(flip_log=True),
                f"Your tw and th have the wrong sign: tw = ln(w* / w), the ground truth's size over the proposal's {REGRESSION_SECTION}."),
        Mistake("shift over the ground truth's size", _encode_mistake(by_gt=True),
                f"You divide the centre shift by the ground truth's size: tx and ty are relative to the proposal's width and height {REGRESSION_SECTION}."),
        Mistake("weights ignored", _encode_mistake(ignore_weights=True),
                f"Your targets ignore `weights`: multiply tx, ty, tw, th by wx, wy, ww, wh {REGRESSION_SECTION}."),
        Mistake("corners, not centres", _encode_mistake(corners=True),
                f"Your tx and ty shift the top-left corners: the parametrisation moves the boxes' centres {REGRESSION_SECTION}."),
    ),
))


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
             label="deltas [5, 8] (two classes), many clamped after dividing by weights (1, 1, 0.5, 0.5)"),
        Case((torch.randn(4, 8, generator=gen), _random_boxes(gen, 4, torch.float64)),
             label="float32 deltas, float64 proposals: the boxes come back in float32"),
        Case((torch.randn(3, 4, generator=gen, dtype=torch.float64), _random_boxes(gen, 3, torch.float32)), {"weights": (10.0, 10.0, 5.0, 5.0)},
             label="float64 deltas, float32 proposals: the boxes come back in float64"),
        Case((torch.zeros(0, 4), torch.zeros(0, 4)), label="K = 0: no boxes"),
    ]
    return cases


def _decode_oracle(case):
    deltas, proposals = case.args
    return BoxCoder(case.kwargs.get("weights", (1.0, 1.0, 1.0, 1.0))).decode_single(deltas, proposals)


def _decode_mistake(*, clamp=True, extra=0.0, multiply=False, centre_format=False, first_class=False, cast=True,
                    clamp_first=False):
    def decode_boxes(deltas, proposals, weights=(1.0, 1.0, 1.0, 1.0)):
        if first_class:
            deltas = deltas[:, :4]
        wx, wy, ww, wh = (1 / w for w in weights) if multiply else weights
        px, py, pw, ph = (c[:, None] for c in _centres(proposals.to(deltas.dtype) if cast else proposals, extra))
        dw, dh = deltas[:, 2::4], deltas[:, 3::4]
        if clamp_first:
            dw, dh = dw.clamp(max=LOG_CLAMP) / ww, dh.clamp(max=LOG_CLAMP) / wh
        else:
            dw, dh = dw / ww, dh / wh
            if clamp:
                dw, dh = dw.clamp(max=LOG_CLAMP), dh.clamp(max=LOG_CLAMP)
        cx, cy = deltas[:, 0::4] / wx * pw + px, deltas[:, 1::4] / wy * ph + py
        w, h = torch.exp(dw) * pw, torch.exp(dh) * ph
        parts = [cx, cy, w, h] if centre_format else [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        return torch.stack(parts, dim=2).flatten(1)

    return decode_boxes


register(Exercise(
    "decode_boxes", LECTURE, 2, _decode_cases, _decode_oracle,
    params=("deltas", "proposals", "weights"), forms={"deltas": TENSORS, "proposals": TENSORS, "weights": WEIGHTS_FORMS},
    forbidden=(CODER, LIBRARY_BOXES),
    mistakes=(
        Mistake("no clamp", _decode_mistake(clamp=False),
                f"Your boxes explode where tw or th is large: clamp them at log(1000 / 16) before exp {REGRESSION_SECTION}."),
        Mistake("clamp before the weights", _decode_mistake(clamp_first=True),
                f"You clamp tw and th before dividing them by their weights: divide first, then clamp at log(1000 / 16) {REGRESSION_SECTION}."),
        Mistake("+ 1 in sizes", _decode_mistake(extra=1.0),
                f"Your proposal sizes count one pixel too many: a box is x2 - x1 wide, no + 1 {REGRESSION_SECTION}."),
        Mistake("weights multiplied", _decode_mistake(multiply=True),
                f"You multiply the deltas by their weights: decoding undoes encoding, so divide by wx, wy, ww, wh {REGRESSION_SECTION}."),
        Mistake("centres returned", _decode_mistake(centre_format=True),
                f"You return (centre x, centre y, width, height): return corners (x1, y1, x2, y2) {REGRESSION_SECTION}."),
        Mistake("first class only", _decode_mistake(first_class=True),
                f"You decode only the first group of four columns: deltas has one (tx, ty, tw, th) group per class, 4 * C columns {REGRESSION_SECTION}."),
        Mistake("proposals' dtype", _decode_mistake(cast=False),
                f"Your boxes follow the proposals' dtype where it differs: convert the proposals to the deltas' dtype first {REGRESSION_SECTION}."),
    ),
))


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
        # An IoU within rounding of the threshold would make the answer depend on how the comparison rounds.
        while ((torchvision.ops.box_iou(boxes, boxes).double() - threshold).abs() < 1e-5).any():
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


def _nms_mistake(*, greater_equal=False, any_higher=False, input_order=False, extra=0.0, sorted_positions=False):
    """The textbook loop: keep the best remaining box, drop those that overlap it too much."""

    def nms(boxes, scores, iou_threshold):
        order = torch.arange(len(scores)) if input_order else scores.argsort(descending=True)
        overlaps = _iou(boxes[order], boxes[order], extra=extra)
        beats = overlaps >= iou_threshold if greater_equal else overlaps > iou_threshold
        keep = []
        for rank in range(len(order)):
            judges = range(rank) if any_higher else keep  # suppressed by any higher box, or only by kept ones
            if not any(bool(beats[j, rank]) for j in judges):
                keep.append(rank)
        keep = torch.tensor(keep, dtype=torch.int64)
        return keep if sorted_positions else order[keep]

    return nms


register(Exercise(
    "nms", LECTURE, 3, _nms_cases, _nms_oracle,
    params=("boxes", "scores", "iou_threshold"), forms={"boxes": TENSORS, "scores": TENSORS, "iou_threshold": ("float",)},
    forbidden=(BOX_OPS, LIBRARY_BOXES),
    mistakes=(
        Mistake(">= threshold", _nms_mistake(greater_equal=True),
                f"You also suppress boxes whose IoU equals the threshold: only IoU strictly greater than iou_threshold suppresses {NMS_SECTION}."),
        Mistake("suppressed boxes suppress", _nms_mistake(any_higher=True),
                f"A box you already removed still removes others: only kept boxes suppress, so in a chain A-B-C, C survives {NMS_SECTION}."),
        Mistake("input order", _nms_mistake(input_order=True),
                f"You walk the boxes in input order: sort them by decreasing score first {NMS_SECTION}."),
        Mistake("+ 1 in sizes", _nms_mistake(extra=1.0),
                f"Your IoUs count one pixel too many in every size: a box is x2 - x1 wide, no + 1 {NMS_SECTION}."),
        Mistake("positions in sorted order", _nms_mistake(sorted_positions=True),
                f"You return positions in the score-sorted order: return the kept boxes' indices into the input, order[keep] {NMS_SECTION}."),
    ),
))


# --- roi_pool -----------------------------------------------------------------------------------

def roi_example():
    """The lecture's RoI pooling example: a 6 x 8 map of distinct values and one RoI whose corners
    round differently from how they floor and whose 4 cells do not split evenly into 3 bins."""
    values = torch.randperm(48, generator=torch.Generator().manual_seed(31)).float()
    return values.view(1, 1, 6, 8), torch.tensor([[0.0, 1.5, 0.6, 5.2, 4.4]]), (2, 3)


SCALES = [1.0, 0.5, 0.25, 0.0625]  # powers of two: scaled corners are exact in any dtype


def _random_rois(gen, k, batch, height, width, scale, dtype):
    # Corners in image pixels in steps of 1 / (2 * scale), so that on the feature map many fall on a
    # half (where rounding and flooring differ); some RoIs reach outside the map.
    extent = torch.tensor([width, height], dtype=torch.float64) / scale
    xy = (torch.rand(k, 2, generator=gen, dtype=torch.float64) * 1.3 - 0.15) * extent
    wh = torch.rand(k, 2, generator=gen, dtype=torch.float64) * extent * 0.8
    corners = torch.round(torch.cat([xy, xy + wh], dim=1) * 2 * scale) / (2 * scale)
    index = torch.randint(0, batch, (k, 1), generator=gen).to(torch.float64)
    return torch.cat([index, corners], dim=1).to(dtype)


def _bin_edge_case(span, bins, dtype):
    """A RoI of ``span`` cells from the corner, in ``bins`` bins, where the dtype's arithmetic ends the last
    bin one row and column later than exact fractions do; that row and column hold the map's maximum."""
    features = torch.arange(float((span + 3) ** 2), dtype=dtype).sin().view(1, 1, span + 3, span + 3)
    features[..., span, :] = features[..., :, span] = 100.0
    size = float(torch.tensor(span, dtype=dtype) / bins)
    return Case((features, torch.tensor([[0.0, 0.0, 0.0, span - 1.0, span - 1.0]], dtype=dtype), bins),
                label=f"a {span}-cell RoI in {bins} bins on a {str(dtype)[6:]} map: size {span}/{bins} = {size:.17g} "
                      f"in {str(dtype)[6:]}, so the last bin ends at ceil({bins} * size) = {span + 1}")


def _roi_cases(gen, hidden):
    features, rois, size = roi_example()
    stride_map = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16).sin()
    hair32 = float(torch.tensor(2.0, dtype=torch.float32).nextafter(torch.tensor(0.0)))  # 1.9999999: 0.49999997 at scale 1/4
    hair64 = math.nextafter(2.0, 0.0)
    halves = [[0, -6.0, -2.0, 16.0, 10.0], [1, 1.0, 6.0, 18.0, 22.0], [0, -2.0, -6.0, 10.0, 14.0]]
    cases = [
        Case((features, rois, size), label="lecture example: 6x8 map, RoI (1.5, 0.6)-(5.2, 4.4), output 2x3"),
        Case((stride_map, torch.tensor([[1.0, 6.0, 10.0, 30.0, 22.0], [0.0, 0.0, 0.0, 63.0, 63.0]]), 3), {"spatial_scale": 0.25},
             label="stride-4 feature map (spatial_scale 0.25), corners at 1.5 and 2.5 cells, and the whole image"),
        Case((features, torch.tensor([[0.0, 2.0, 2.0, 2.0, 2.0], [0.0, 40.0, 40.0, 50.0, 50.0], [0.0, -3.0, 1.0, 9.0, 5.0]]), 2),
             label="a zero-size RoI (one cell), a RoI off the map (all 0), a RoI wider than the map"),
        Case((torch.randn(2, 2, 7, 9, generator=gen), torch.tensor(halves), (3, 2)), {"spatial_scale": 0.25},
             label="corners at -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5 and 5.5 cells: halves round away from zero"),
        Case((torch.randn(1, 2, 7, 9, generator=gen), torch.tensor([[0, hair32, hair32, 10.0, 14.0], [0, -hair32, 6.0, 26.0, 22.0]]), 2),
             {"spatial_scale": 0.25}, label="float32 corners a hair below 0.5 cells (0.49999997 rounds to 0) and above -0.5 (to 0)"),
        Case((torch.randn(1, 2, 7, 9, generator=gen, dtype=torch.float64),
              torch.tensor([[0, hair64, hair64, 10.0, 14.0], [0, -hair64, 6.0, 26.0, 22.0]], dtype=torch.float64), 2),
             {"spatial_scale": 0.25}, label="float64 corners a hair below 0.5 cells (0.49999999999999994 rounds to 0) and above -0.5"),
        _bin_edge_case(57, 7, torch.float32),
        _bin_edge_case(29, 7, torch.float64),
    ]
    for output_size in [1, (2, 3), 7, (3, 2)]:
        dtype = rand_dtype(gen)
        batch, channels = rand_int(gen, 1, 3), rand_int(gen, 1, 4)
        height, width = rand_int(gen, 5, 16), rand_int(gen, 5, 16)
        scale = SCALES[rand_int(gen, 0, len(SCALES) - 1)]
        x = torch.randn(batch, channels, height, width, generator=gen, dtype=dtype)
        cases.append(Case((x, _random_rois(gen, rand_int(gen, 3, 20), batch, height, width, scale, dtype), output_size),
                          {"spatial_scale": scale}))
    cases.append(Case((torch.randn(2, 3, 8, 8, generator=gen), torch.zeros(0, 5), 2), label="no RoIs ([0, 3, 2, 2] result)"))
    return cases


def _roi_oracle(case):
    return torchvision.ops.roi_pool(*case.args, **case.kwargs)


def _round_half_away(x):
    whole = torch.trunc(x)
    return torch.where((x - whole).abs() >= 0.5, whole + torch.sign(x), whole)


def _roi_mistake(*, corner="away", bins="dtype", plus_one=True, use_scale=True, empty=0.0, reduce="max"):
    """RoI pooling with loops over RoIs and bins, all arithmetic in the features' dtype, bent by the keywords."""
    snap = {"away": _round_half_away, "floor": torch.floor, "even": torch.round,
            "floor-abs-plus-half": lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5)}[corner]

    def edges(start, span, n, limit, dtype):
        if bins == "exact":  # exact fractions: floor(i * L / n) and ceil((i + 1) * L / n) with integers
            pairs = [((i * span) // n, -((-(i + 1) * span) // n)) for i in range(n)]
        elif bins == "integer-division":  # bins that never share a row or column
            pairs = [((i * span) // n, ((i + 1) * span) // n) for i in range(n)]
        else:
            size = torch.tensor(span, dtype=dtype) / n
            pairs = [(int(torch.floor(i * size)), int(torch.ceil((i + 1) * size))) for i in range(n)]
        return [(min(max(lo + start, 0), limit), min(max(hi + start, 0), limit)) for lo, hi in pairs]

    def roi_pool(features, rois, output_size, spatial_scale=1.0):
        oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
        _, channels, height, width = features.shape
        out = features.new_zeros(len(rois), channels, oh, ow)
        scaled = snap(rois[:, 1:].to(features.dtype) * (spatial_scale if use_scale else 1.0)).long().tolist()
        for k, (x1, y1, x2, y2) in enumerate(scaled):
            span_w, span_h = max(x2 - x1 + plus_one, 1), max(y2 - y1 + plus_one, 1)
            for i, (top, bottom) in enumerate(edges(y1, span_h, oh, height, features.dtype)):
                for j, (left, right) in enumerate(edges(x1, span_w, ow, width, features.dtype)):
                    region = features[int(rois[k, 0]), :, top:bottom, left:right]
                    if region.numel() == 0:
                        out[k, :, i, j] = empty
                    else:
                        out[k, :, i, j] = region.amax((1, 2)) if reduce == "max" else region.mean((1, 2))
        return out

    return roi_pool


register(Exercise(
    "roi_pool", LECTURE, 3, _roi_cases, _roi_oracle,
    params=("features", "rois", "output_size", "spatial_scale"),
    forms={"features": ("tensor float32", "tensor float64"), "rois": TENSORS, "output_size": ("int", "(int, int)"),
           "spatial_scale": ("float",)},
    forbidden=(ROI_OPS, LIBRARY_BOXES),
    mistakes=(
        Mistake("floored corners", _roi_mistake(corner="floor"),
                f"Your RoIs start and end a cell early: round the scaled corners to the nearest cell, do not floor them {ROI_SECTION}."),
        Mistake("halves to even", _roi_mistake(corner="even"),
                f"Your corners round halves to even (torch.round, Python's round: 2.5 -> 2): round them away from zero (2.5 -> 3, -0.5 -> -1) {ROI_SECTION}."),
        Mistake("floor(|x| + 0.5)", _roi_mistake(corner="floor-abs-plus-half"),
                f"Your corners a hair below a half round up: floor(|x| + 0.5) rounds 0.49999997 to 1, because the sum is rounded to 1.0; compare x - trunc(x) with 0.5 instead {ROI_SECTION}."),
        Mistake("integer-division bins", _roi_mistake(bins="integer-division"),
                f"Your bins never share a row or column: a bin ends at ceil((i + 1) * size), not at the next bin's start {ROI_SECTION}."),
        Mistake("exact bin edges", _roi_mistake(bins="exact"),
                f"Your bin edges are exact fractions: like torchvision, compute size = L / n in the features' dtype, then floor(i * size) and ceil((i + 1) * size) {ROI_SECTION}."),
        Mistake("no + 1 in the span", _roi_mistake(plus_one=False),
                f"Your RoIs are one cell short: a RoI from cell x1 to cell x2 covers both, x2 - x1 + 1 cells {ROI_SECTION}."),
        Mistake("spatial_scale ignored", _roi_mistake(use_scale=False),
                f"Your RoIs stay in image pixels: multiply the corners by spatial_scale to reach feature-map cells {ROI_SECTION}."),
        Mistake("empty bins -inf", _roi_mistake(empty=-math.inf),
                f"Your empty bins (outside the map) hold -inf: an empty bin gives 0 {ROI_SECTION}."),
        Mistake("average pooling", _roi_mistake(reduce="mean"),
                f"Your bins average their cells: RoI pooling takes each bin's maximum {ROI_SECTION}."),
    ),
))


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
    """As the text says: a Python number or a 0-d tensor; float32 arithmetic is accurate to about 1e-6 here."""
    if isinstance(got, torch.Tensor) and got.dim() != 0:
        return f"expected a number (a Python float or a 0-d tensor) close to {float(expected):.6g}, got a tensor of shape {list(got.shape)}"
    return compare_value(float(expected), got, rel=1e-5)


def _ap_mistake(*, envelope="right", ranked=True, denominator="num_gt", points=None):
    def average_precision(scores, true_positive, num_gt):
        order = scores.argsort(descending=True, stable=True) if ranked else torch.arange(len(scores))
        hits = true_positive[order].double()
        if hits.numel() == 0 or num_gt == 0:
            return 0.0
        found = hits.cumsum(0)
        precision = found / torch.arange(1, len(hits) + 1)
        recall = found / (num_gt if denominator == "num_gt" else max(float(hits.sum()), 1.0))
        if envelope == "right":
            precision = precision.flip(0).cummax(0).values.flip(0)
        elif envelope == "left":
            precision = precision.cummax(0).values
        if points:  # the old VOC2007 11-point interpolation
            return sum(float(precision[recall >= t].max()) if (recall >= t).any() else 0.0
                       for t in torch.linspace(0, 1, points).tolist()) / points
        return float((torch.diff(recall, prepend=recall.new_zeros(1)) * precision).sum())

    return average_precision


register(Exercise(
    "average_precision", LECTURE, 3, _ap_cases, _ap_oracle, _compare_ap,
    params=("scores", "true_positive", "num_gt"),
    forms={"scores": TENSORS, "true_positive": ("tensor bool", "empty tensor"), "num_gt": ("int",)},
    forbidden=(LIBRARY_METRICS,),
    mistakes=(
        Mistake("no envelope", _ap_mistake(envelope=None),
                f"Your AP uses the raw precision at each rank: replace each precision by the best at that rank or any deeper one (the envelope) first {AP_SECTION}."),
        Mistake("envelope from the left", _ap_mistake(envelope="left"),
                f"Your envelope carries the best precision *down* the ranking: it takes the best precision at the same or any *deeper* rank {AP_SECTION}."),
        Mistake("not ranked", _ap_mistake(ranked=False),
                f"You walk the detections in input order: rank them by decreasing score first {AP_SECTION}."),
        Mistake("recall over hits", _ap_mistake(denominator="hits"),
                f"Your recall divides by the number of hits: recall = hits so far / num_gt, the objects there are to find {AP_SECTION}."),
        Mistake("11-point", _ap_mistake(points=11),
                f"Your AP samples the curve at 11 recall levels (VOC2007): use the area under the whole envelope, all points {AP_SECTION}."),
    ),
))
