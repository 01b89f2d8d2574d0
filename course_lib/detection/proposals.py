"""Region proposals in the spirit of selective search: group pixels into regions, box each region.

Selective search over-segments an image, then merges neighbouring regions, and proposes the box of
every region it ever forms, at several colour scales. This simplified version keeps the ideas and
drops the greedy similarity ordering:

1. smooth the image a little, so pixel noise does not shatter regions;
2. quantise each colour channel into ``q`` levels for a few ``q`` (coarse to fine): pixels of one
   object mostly share a code, and a coarse ``q`` also joins an object's textured parts;
3. find the 4-connected regions of equal code (:func:`connected_components`, vectorised);
4. propose the box of every region that is large enough but not most of the image, optionally also
   the union box of every pair of touching regions (one grouping step), and drop duplicates.

The whole batch is processed at once; there is no loop over pixels, regions or images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..validate import floating, positive_int, same_device, tensor_rank
from .boxes import _boxes, _threshold, box_iou

__all__ = ["connected_components", "region_proposals", "proposal_recall"]


def connected_components(codes: torch.Tensor) -> torch.Tensor:
    """Label the 4-connected regions of equal value in ``codes`` ``[N, H, W]`` (integers).

    Returns ``[N, H, W]`` int64: every pixel gets the raster index ``row * W + col`` of its region's
    first pixel, so two pixels share a label exactly when a path of equal codes joins them.

    Algorithm (*hook and compress*, GPU-friendly): every pixel starts as its own region, pointing to
    itself. Each round, every edge between two equal-coded neighbours that still sit in different
    regions hooks the region with the larger root onto the smaller root (``scatter_reduce`` with
    ``amin`` settles conflicts), then pointer jumping (``parent = parent[parent]``) flattens the trees.
    Regions merge pairwise, so a handful of rounds suffices even for long snaking regions, where
    propagating labels one pixel per step would need as many steps as the region is long.
    """
    tensor_rank("codes", codes, 3)
    if codes.is_floating_point() or codes.is_complex():
        raise ValueError(f"codes must be an integer or bool tensor, got {codes.dtype}")
    n, h, w = codes.shape
    index = torch.arange(n * h * w, device=codes.device).reshape(n, h, w)
    same_right = codes[:, :, 1:] == codes[:, :, :-1]
    same_down = codes[:, 1:] == codes[:, :-1]
    u = torch.cat([index[:, :, :-1][same_right], index[:, :-1][same_down]])
    v = torch.cat([index[:, :, 1:][same_right], index[:, 1:][same_down]])
    parent = index.reshape(-1).clone()
    while True:
        root_u, root_v = parent[u], parent[v]
        apart = root_u != root_v
        if not apart.any():
            break
        high, low = torch.maximum(root_u, root_v)[apart], torch.minimum(root_u, root_v)[apart]
        parent.scatter_reduce_(0, high, low, reduce="amin")
        while True:
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand
    first_pixel_of_image = index.reshape(n, -1)[:, :1]
    return (parent.reshape(n, -1) - first_pixel_of_image).reshape(n, h, w)


def _region_boxes(labels: torch.Tensor):
    """Box ``[R, 4]``, image ``[R]``, pixel count ``[R]`` of every region, and the region of each pixel."""
    n, h, w = labels.shape
    key = (labels + torch.arange(n, device=labels.device)[:, None, None] * (h * w)).reshape(-1)
    regions, region_of, size = torch.unique(key, return_inverse=True, return_counts=True)
    pixel = torch.arange(n * h * w, device=labels.device)
    xs, ys = pixel % w, (pixel // w) % h
    r = regions.numel()

    def reduce(values, fill, how):
        start = torch.full((r,), fill, dtype=torch.long, device=labels.device)
        return start.scatter_reduce(0, region_of, values, reduce=how)

    boxes = torch.stack(
        [reduce(xs, w, "amin"), reduce(ys, h, "amin"), reduce(xs + 1, 0, "amax"), reduce(ys + 1, 0, "amax")], dim=1
    )
    return boxes, regions // (h * w), size, region_of.reshape(n, h, w)


def _touching_pairs(region_of: torch.Tensor) -> torch.Tensor:
    """Pairs ``[P, 2]`` (smaller id first) of regions that share at least one pixel edge."""
    a = torch.cat([region_of[:, :, :-1].reshape(-1), region_of[:, :-1].reshape(-1)])
    b = torch.cat([region_of[:, :, 1:].reshape(-1), region_of[:, 1:].reshape(-1)])
    differ = a != b
    pairs = torch.stack([torch.minimum(a, b)[differ], torch.maximum(a, b)[differ]], dim=1)
    return torch.unique(pairs, dim=0)


def region_proposals(
    images: torch.Tensor,
    colour_levels=(2, 3, 4),
    min_pixels: int = 20,
    max_fraction: float = 0.5,
    merge_neighbours: bool = False,
    max_proposals: int = 300,
):
    """Candidate object boxes from colour regions (a small selective search).

    Args:
        images: ``[3, H, W]`` or ``[N, 3, H, W]`` with values in [0, 1].
        colour_levels: quantisation levels per channel, one segmentation each (coarse levels join
            textured objects, fine levels separate similar colours).
        min_pixels: smallest region kept (noise specks give tiny regions).
        max_fraction: largest box kept, as a fraction of the image area (background regions).
        merge_neighbours: also propose the union box of every two touching regions.
        max_proposals: at most this many per image, coarse levels first.

    Returns:
        ``[P, 4]`` float boxes (x1, y1, x2, y2) for one image, or a list of ``N`` such tensors. Boxes
        cover whole pixels, like the shapes scenes' ground truth. On shapes scenes the defaults give
        about 50 proposals per image (at most about 100) and find 99% of the objects at IoU 0.5
        (95% at IoU 0.7).
    """
    tensor_rank("images", images, (3, 4))
    floating("images", images)
    single = images.dim() == 3
    batch = images[None] if single else images
    if batch.shape[1] != 3:
        raise ValueError(f"images must have 3 colour channels, got shape {tuple(images.shape)}")
    if (
        not isinstance(colour_levels, (tuple, list))
        or not colour_levels
        or not all(isinstance(q, int) and not isinstance(q, bool) and 2 <= q <= 16 for q in colour_levels)
    ):
        raise ValueError(f"colour_levels must be a non-empty sequence of ints in [2, 16], got {colour_levels!r}")
    positive_int("min_pixels", min_pixels)
    max_fraction = _threshold("max_fraction", max_fraction)
    positive_int("max_proposals", max_proposals)
    n, _, h, w = batch.shape

    smooth = F.avg_pool2d(batch, 3, stride=1, padding=1, count_include_pad=False)
    found_boxes, found_images = [], []
    for q in colour_levels:
        level = (smooth * q).floor().clamp(0, q - 1).long()
        codes = (level[:, 0] * q + level[:, 1]) * q + level[:, 2]
        boxes, image_of, size, region_of = _region_boxes(connected_components(codes))
        big = size >= min_pixels
        found_boxes.append(boxes[big])
        found_images.append(image_of[big])
        if merge_neighbours:
            pairs = _touching_pairs(region_of)
            pairs = pairs[big[pairs[:, 0]] & big[pairs[:, 1]]]
            first, second = boxes[pairs[:, 0]], boxes[pairs[:, 1]]
            union = torch.cat([first[:, :2].minimum(second[:, :2]), first[:, 2:].maximum(second[:, 2:])], dim=1)
            found_boxes.append(union)
            found_images.append(image_of[pairs[:, 0]])
    boxes, image_of = torch.cat(found_boxes), torch.cat(found_images)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = area <= max_fraction * h * w
    boxes, image_of = boxes[keep], image_of[keep]

    # Drop repeated boxes (keeping the first), then cap each image at max_proposals, in found order.
    rows = torch.cat([image_of[:, None], boxes], dim=1)
    _, group, counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
    position = torch.arange(rows.shape[0], device=rows.device)
    first = torch.full_like(counts, rows.shape[0]).scatter_reduce(0, group, position, "amin")
    rows = rows[first.sort().values]
    rows = rows[torch.sort(rows[:, 0], stable=True).indices]  # group by image, found order within
    per_image = torch.bincount(rows[:, 0], minlength=n)
    rank = torch.arange(rows.shape[0], device=rows.device) - (torch.cumsum(per_image, 0) - per_image)[rows[:, 0]]
    rows = rows[rank < max_proposals]
    per_image = per_image.clamp(max=max_proposals)
    result = list(rows[:, 1:].to(batch.dtype).split(per_image.tolist()))
    return result[0] if single else result


def proposal_recall(proposals, gt_boxes, iou_threshold: float = 0.5) -> torch.Tensor:
    """Fraction of ground-truth boxes matched by at least one proposal with IoU >= ``iou_threshold``.

    ``proposals`` ``[P, 4]`` and ``gt_boxes`` ``[G, 4]`` for one image, or lists of them for many images
    (the recall then pools all objects). Returns a 0-dim float tensor; 0.0 when there is no object.
    """
    iou_threshold = _threshold("iou_threshold", iou_threshold)
    if isinstance(proposals, torch.Tensor):
        proposals, gt_boxes = [proposals], [gt_boxes]
    if (
        not isinstance(proposals, (list, tuple))
        or not isinstance(gt_boxes, (list, tuple))
        or len(proposals) != len(gt_boxes)
    ):
        raise ValueError("proposals and gt_boxes must be two tensors or two lists of the same length")
    found, total = 0, 0
    for p, g in zip(proposals, gt_boxes):
        _boxes("proposals", p)
        _boxes("gt_boxes", g)
        same_device(proposals=p, gt_boxes=g)
        if g.shape[0] and p.shape[0]:
            found += (box_iou(g.to(p.dtype), p).amax(dim=1) >= iou_threshold).sum()
        total += g.shape[0]
    device = gt_boxes[0].device if gt_boxes else torch.device("cpu")
    return torch.as_tensor(found / max(total, 1), dtype=torch.float32, device=device)
