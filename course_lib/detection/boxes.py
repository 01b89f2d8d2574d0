"""Box machinery of the R-CNN family: overlap, the regression parametrisation, non-maximum
suppression, RoI pooling and anchors.

Boxes are ``[K, 4]`` tensors of ``(x1, y1, x2, y2)`` pixel corners with ``x1 <= x2`` and ``y1 <= y2``;
a box is ``x2 - x1`` wide (no ``+ 1``), as in torchvision. Every function here equals its torchvision
counterpart (the tests check it) and is written with whole-tensor operations.
"""
from __future__ import annotations

import math

import torch

from ..validate import floating, pair, same_device, tensor_rank

__all__ = [
    "box_area",
    "box_iou",
    "encode_boxes",
    "decode_boxes",
    "nms_naive",
    "nms",
    "batched_nms",
    "roi_pool",
    "anchors",
]

# decode_boxes clamps log-scale deltas here so that exp() cannot overflow (torchvision's value)
BBOX_XFORM_CLIP = math.log(1000.0 / 16)
_NMS_BLOCK = 128


def _boxes(name: str, boxes) -> torch.Tensor:
    tensor_rank(name, boxes, 2)
    if boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [K, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    return boxes


def _threshold(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in a type whose products of coordinates do not overflow: float16 and bfloat16 become
    float32, integer types narrower than 32 bits become int32 (torchvision's rule)."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas ``[K]`` of boxes ``[K, 4]``: ``(x2 - x1) * (y2 - y1)``, in float32 for float16/bfloat16 boxes
    and int32 for integer boxes narrower than that (a 300 x 300 box's area overflows float16)."""
    _boxes("boxes", boxes)
    boxes = _upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union ``[N, M]`` of every box in ``a`` ``[N, 4]`` with every box in ``b`` ``[M, 4]``.

    The intersection of two boxes is the box between the larger top-left and the smaller bottom-right
    corner, or nothing when those cross; broadcasting ``[N, 1, 2]`` against ``[M, 2]`` does all pairs at once.
    Float boxes give IoUs in their dtype (float32 for float16/bfloat16), integer boxes float32.
    """
    _boxes("a", a)
    _boxes("b", b)
    same_device(a=a, b=b)
    top_left = torch.max(a[:, None, :2], b[:, :2])  # [N, M, 2]
    bottom_right = torch.min(a[:, None, 2:], b[:, 2:])
    if top_left.is_floating_point():  # as torchvision: subtract in the boxes' dtype, then widen
        wh = _upcast(bottom_right - top_left).clamp(min=0)
    else:  # widen first: in uint8, crossed corners would wrap around to a large positive width
        wh = (_upcast(bottom_right) - _upcast(top_left)).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b) - inter
    return inter / union


def _weights(weights) -> tuple[float, float, float, float]:
    if (
        not isinstance(weights, (tuple, list))
        or len(weights) != 4
        or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights)
    ):
        raise ValueError(f"weights must be four positive numbers (wx, wy, ww, wh), got {weights!r}")
    return tuple(float(w) for w in weights)


def _centres(boxes: torch.Tensor):
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


def encode_boxes(gt: torch.Tensor, proposals: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Regression targets ``[K, 4]`` that move each proposal ``[K, 4]`` onto its ground-truth box ``[K, 4]``.

    R-CNN's parametrisation, scaled by ``weights = (wx, wy, ww, wh)``::

        tx = wx * (x* - x) / w      ty = wy * (y* - y) / h
        tw = ww * log(w* / w)       th = wh * log(h* / h)

    where ``(x, y)`` is the proposal's centre, ``w, h`` its size and starred values the ground truth's.
    Offsets are relative to the proposal's size, so one regressor serves boxes of every scale.
    Equals ``torchvision.models.detection._utils.BoxCoder(weights).encode_single(gt, proposals)``.
    """
    _boxes("gt", gt)
    _boxes("proposals", proposals)
    floating("gt", gt)
    same_device(gt=gt, proposals=proposals)
    if gt.shape[0] != proposals.shape[0]:
        raise ValueError(
            f"gt and proposals must pair up row by row, got {gt.shape[0]} and {proposals.shape[0]} boxes"
        )
    wx, wy, ww, wh = _weights(weights)
    px, py, pw, ph = _centres(proposals)
    gx, gy, gw, gh = _centres(gt)
    return torch.stack(
        [wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], dim=1
    )


def decode_boxes(deltas: torch.Tensor, proposals: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Boxes obtained by applying ``deltas`` ``[K, 4 * C]`` to ``proposals`` ``[K, 4]``: the inverse of
    :func:`encode_boxes`, returned as ``[K, 4 * C]`` (one box per class for class-specific regressors).

    ``tw`` and ``th`` are clamped at ``log(1000 / 16)`` before ``exp`` so a wild prediction cannot overflow.
    Equals ``BoxCoder(weights).decode_single(deltas, proposals)``.
    """
    tensor_rank("deltas", deltas, 2)
    floating("deltas", deltas)
    _boxes("proposals", proposals)
    same_device(deltas=deltas, proposals=proposals)
    if deltas.shape[1] % 4 != 0 or deltas.shape[0] != proposals.shape[0]:
        raise ValueError(
            f"deltas must be [K, 4 * C] with K = {proposals.shape[0]} proposals, got {tuple(deltas.shape)}"
        )
    wx, wy, ww, wh = _weights(weights)
    px, py, pw, ph = (c[:, None] for c in _centres(proposals.to(deltas.dtype)))
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=BBOX_XFORM_CLIP)
    dh = (deltas[:, 3::4] / wh).clamp(max=BBOX_XFORM_CLIP)
    cx, cy = dx * pw + px, dy * ph + py
    half_w, half_h = 0.5 * torch.exp(dw) * pw, 0.5 * torch.exp(dh) * ph
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2).flatten(1)


def _overlaps_too_much(iou: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``iou > iou_threshold``, decided exactly as torchvision's NMS kernels decide it.

    On the CPU, torchvision compares the IoU (computed in the boxes' dtype) with the threshold as a
    float64 number; its CUDA kernel first rounds the threshold to float32. Comparing a float32 IoU
    with a Python float in torch would round the threshold to the *nearest* float32 instead: boxes
    ``[0, 0, 1, 1]`` and ``[0, 0, 10, 1]`` overlap with IoU ``float32(0.1) = 0.100000001``, which is
    above 0.1 (torchvision's CPU kernel suppresses) but equal to ``float32(0.1)`` (survives). So the
    threshold becomes the largest value of the IoUs' dtype not above it, which gives the same answer
    for every IoU of that dtype.
    """
    if iou.device.type != "cpu":
        iou_threshold = float(torch.tensor(iou_threshold, dtype=torch.float32))
    if iou.dtype == torch.float64:
        return iou > iou_threshold
    below = torch.tensor(iou_threshold, dtype=iou.dtype)
    if float(below) > iou_threshold:
        below = torch.nextafter(below, below.new_tensor(-math.inf))
    return iou > float(below)


def _check_nms_args(boxes, scores, iou_threshold):
    _boxes("boxes", boxes)
    tensor_rank("scores", scores, 1)
    same_device(boxes=boxes, scores=scores)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must have one entry per box ({boxes.shape[0]}), got {scores.shape[0]}")
    return _threshold("iou_threshold", iou_threshold)


def nms_naive(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression written as the textbook loop (slow; for reading and checking).

    Repeatedly keep the best-scoring remaining box and drop every remaining box whose IoU with it is
    *greater than* ``iou_threshold``. Returns the kept indices ``[k]`` int64 by decreasing score.
    """
    iou_threshold = _check_nms_args(boxes, scores, iou_threshold)
    remaining = scores.argsort(descending=True, stable=True).tolist()
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        # One pair at a time; the IoU in the boxes' dtype and the threshold rule are torchvision's.
        remaining = [other for other in remaining
                     if not _overlaps_too_much(box_iou(boxes[best, None], boxes[other, None]), iou_threshold)]
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression: indices ``[k]`` int64 of the boxes ``[N, 4]`` kept, by decreasing score ``[N]``.

    Box ``j`` (in score order) survives when no *surviving* higher-scoring box overlaps it with IoU
    ``> iou_threshold``. That rule is sequential (whether box ``i`` suppresses others depends on whether
    ``i`` survived), but it can be solved for many boxes at once: start by letting every box survive and
    re-apply the rule to all of them in one tensor step until nothing changes. Each step settles at
    least the next undecided box, and the fixed point is the greedy answer. Boxes go in blocks of 128 in
    score order, so a step touches a 128 x 128 matrix and a long chain of suppressions costs at most
    128 steps per block; a block first drops the boxes that a box kept in an earlier block overlaps.
    Equals ``torchvision.ops.nms`` when scores are distinct (ties keep the input order).
    """
    iou_threshold = _check_nms_args(boxes, scores, iou_threshold)
    order = scores.argsort(descending=True, stable=True)
    ranked = boxes[order]
    keep = torch.zeros(order.numel(), dtype=torch.bool, device=boxes.device)
    for start in range(0, order.numel(), _NMS_BLOCK):
        block = ranked[start : start + _NMS_BLOCK]
        earlier = ranked[:start][keep[:start]]
        alive = ~_overlaps_too_much(box_iou(earlier, block), iou_threshold).any(dim=0)
        beats = _overlaps_too_much(box_iou(block, block), iou_threshold).triu(diagonal=1)  # [i, j]: i ranks above j and overlaps it
        survive = alive
        while True:
            settled = alive & ~(beats & survive[:, None]).any(dim=0)
            if torch.equal(settled, survive):
                break
            survive = settled
        keep[start : start + _NMS_BLOCK] = survive
    return order[keep]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each class: boxes ``[N, 4]`` with different ``labels`` ``[N]`` never suppress each other.

    Shifting every box by ``label * (largest coordinate + 1)`` puts each class in its own region of the
    plane, so one call to :func:`nms` handles all classes. Returns kept indices ``[k]`` by decreasing
    score; equals ``torchvision.ops.batched_nms``.
    """
    _check_nms_args(boxes, scores, iou_threshold)
    tensor_rank("labels", labels, 1)
    if labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"labels must have one entry per box ({boxes.shape[0]}), got {labels.shape[0]}")
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    offsets = labels.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    # C++ std::round, which torchvision's kernel uses. torch.round sends halves to even (2.5 -> 2), and
    # floor(|x| + 0.5) rounds 0.49999997 up (the sum rounds to 1.0); x - trunc(x) is exact, so compare that.
    whole = torch.trunc(x)
    return torch.where((x - whole).abs() >= 0.5, whole + torch.sign(x), whole)


def _floor_log2(x: torch.Tensor) -> torch.Tensor:
    """``floor(log2(x))`` of positive integers ``x`` ``[N]``, exactly (counting the powers of two <= x)."""
    powers = 2 ** torch.arange(int(x.max()).bit_length(), device=x.device)
    return (x[:, None] >= powers).sum(dim=1) - 1


def roi_pool(features: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0) -> torch.Tensor:
    """Max-pool each region of interest into a fixed ``output_size`` grid: ``[K, C, oh, ow]``.

    Args:
        features: ``[B, C, H, W]`` feature maps.
        rois: ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
        output_size: ``oh`` or ``(oh, ow)``.
        spatial_scale: feature-map pixels per image pixel (``1 / stride`` of the backbone).

    Each RoI is snapped to whole feature cells (corners scaled and rounded half away from zero; a RoI
    spans ``x2 - x1 + 1`` cells, at least one), split into ``oh x ow`` bins whose edges are floored at the
    start and ceiled at the end (so neighbouring bins may share a row or column), clipped to the map, and
    each bin keeps its maximum; an empty bin gives 0. Equals ``torchvision.ops.roi_pool``, rounding
    included: like its kernel, the scaling and the bin edges ``floor(i * size)``, ``ceil((i + 1) * size)``
    with ``size = span / bins`` are computed in the features' dtype (in float32, a 57-cell span in 7 bins
    ends its last bin at ``ceil(7 * 8.142857) = 58``, not 57).

    Vectorised with a *sparse table*: a bin's maximum is the maximum of four blocks of ``2**p x 2**q``
    cells placed in its corners, where ``2**p`` and ``2**q`` are the largest powers of two not above the
    bin's height and width; the blocks overlap, which a maximum ignores. The maps of block maxima are
    built by doubling (a ``2**(q+1)``-wide block is two ``2**q``-wide ones side by side), one level at a
    time, so memory stays at a few copies of the feature map, and every bin reads its four blocks with
    one gather: the work is a handful of passes over the map plus four reads per bin, whatever the bins'
    areas. Gradients flow to the maximum of each bin (split evenly between tied maxima, where
    torchvision picks the first); the backward pass is slower than torchvision's, so the detectors
    train with ``torchvision.ops.roi_pool``.
    """
    tensor_rank("features", features, 4)
    floating("features", features)
    tensor_rank("rois", rois, 2)
    if rois.shape[1] != 5:
        raise ValueError(f"rois must be [K, 5] rows (batch_index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    same_device(features=features, rois=rois)
    out_h, out_w = pair("output_size", output_size)
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, (int, float)) or spatial_scale <= 0:
        raise ValueError(f"spatial_scale must be a positive number, got {spatial_scale!r}")
    batch, channels, height, width = features.shape
    k = rois.shape[0]
    if k == 0:
        return features.new_zeros(0, channels, out_h, out_w)

    # The arithmetic follows torchvision's kernel step by step in the features' dtype.
    rois = rois.to(features.dtype)
    start_w, start_h, end_w, end_h = (_round_half_away(rois[:, i] * spatial_scale).long() for i in (1, 2, 3, 4))
    roi_w = (end_w - start_w + 1).clamp(min=1).to(features.dtype)
    roi_h = (end_h - start_h + 1).clamp(min=1).to(features.dtype)

    def bin_edges(start, extent, bins, limit):
        step = (extent / bins)[:, None]  # [K, 1]
        index = torch.arange(bins, device=features.device, dtype=features.dtype)
        lo = torch.floor(index * step).long() + start[:, None]
        hi = torch.ceil((index + 1) * step).long() + start[:, None]
        return lo.clamp(0, limit), hi.clamp(0, limit)  # [K, bins] each

    h_lo, h_hi = bin_edges(start_h, roi_h, out_h, height)
    w_lo, w_hi = bin_edges(start_w, roi_w, out_w, width)
    image = rois[:, 0].long()
    if image.min() < 0 or image.max() >= batch:
        raise ValueError(
            f"rois[:, 0] must be batch indices in [0, {batch - 1}], got {rois[:, 0].unique().tolist()}"
        )

    shape = (k, out_h, out_w)  # one entry per bin, flattened below
    top = h_lo[:, :, None].expand(shape).reshape(-1)
    left = w_lo[:, None, :].expand(shape).reshape(-1)
    bin_h = (h_hi - h_lo)[:, :, None].expand(shape).reshape(-1)
    bin_w = (w_hi - w_lo)[:, None, :].expand(shape).reshape(-1)
    image = image[:, None, None].expand(shape).reshape(-1)
    level_h, level_w = _floor_log2(bin_h.clamp(min=1)), _floor_log2(bin_w.clamp(min=1))
    bottom, right = top + bin_h - 2**level_h, left + bin_w - 2**level_w  # where the lower / right blocks start

    def cell(row, col):  # row of the [B * H * W, C] table; empty bins read any cell and are zeroed below
        return (image * height + row.clamp(0, height - 1)) * width + col.clamp(0, width - 1)

    corners = torch.stack([cell(top, left), cell(top, right), cell(bottom, left), cell(bottom, right)])  # [4, bins]
    found, where = [], []
    wide = features.permute(0, 2, 3, 1)  # [B, H, W, C]: each cell's channels are one row to gather
    for q in range(int(level_w.max()) + 1):
        if q:  # blocks 2**q wide from two 2**(q-1) wide ones; the last columns keep narrower blocks, never read
            half = 2 ** (q - 1)
            wide = torch.cat([torch.maximum(wide[:, :, :-half], wide[:, :, half:]), wide[:, :, -half:]], dim=2)
        blocks = wide
        for p in range(int(level_h.max()) + 1):
            if p:
                half = 2 ** (p - 1)
                blocks = torch.cat([torch.maximum(blocks[:, :-half], blocks[:, half:]), blocks[:, -half:]], dim=1)
            chosen = torch.nonzero((level_h == p) & (level_w == q)).flatten()
            if chosen.numel():
                four = blocks.reshape(-1, channels).index_select(0, corners[:, chosen].reshape(-1))
                found.append(four.view(4, -1, channels).amax(dim=0))
                where.append(chosen)
    pooled = features.new_zeros(k * out_h * out_w, channels).index_put((torch.cat(where),), torch.cat(found))
    pooled = pooled.masked_fill(((bin_h == 0) | (bin_w == 0))[:, None], 0.0)
    return pooled.view(k, out_h, out_w, channels).permute(0, 3, 1, 2).contiguous()


def anchors(feature_size, stride, sizes=(32,), aspect_ratios=(0.5, 1.0, 2.0), dtype=torch.float32, device=None):
    """Anchor boxes ``[Hf * Wf * A, 4]`` for a feature map of ``feature_size = (Hf, Wf)`` cells, ``stride``
    image pixels apart, with ``A = len(sizes) * len(aspect_ratios)`` anchors per cell.

    An anchor of size ``s`` and aspect ratio ``r = h / w`` is ``s / sqrt(r)`` wide and ``s * sqrt(r)`` tall
    (area ``s**2``), its corners rounded to whole pixels and centred on the cell's top-left image pixel
    ``(col * stride, row * stride)``. Rows are ordered by cell (row-major), then ratio, then size,
    exactly as ``torchvision.models.detection.anchor_utils.AnchorGenerator``.
    """
    fh, fw = pair("feature_size", feature_size)
    sh, sw = pair("stride", stride)
    for name, values in (("sizes", sizes), ("aspect_ratios", aspect_ratios)):
        if (
            not isinstance(values, (tuple, list))
            or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
        ):
            raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
    scales = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    cell = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()  # [A, 4]; torch.round, as torchvision
    ys = torch.arange(fh, device=device, dtype=dtype) * sh
    xs = torch.arange(fw, device=device, dtype=dtype) * sw
    shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
    return (shifts + cell).reshape(-1, 4)
