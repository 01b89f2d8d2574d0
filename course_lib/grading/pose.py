"""Exercises of lecture 08 (human pose estimation): heatmap targets, decoding and PCK.

Oracles are written from the definitions, independently of :mod:`course_lib.pose`: a loop over every
pixel for the disk targets, a loop that collects the pixels holding a map's maximum for the decoder,
and a loop over figures and joints with ``math.hypot`` for PCK, plus hand-worked values for the
lecture's examples. Cases are built to separate the right answer from the classic mistakes: joints
whose disk rim passes exactly through pixel centres (``<=`` versus ``<``), non-square images and
joints off the diagonal (``(x, y)`` versus ``(row, col)``), flat plateaus (first maximal pixel versus
the plateau's centre), joints at exactly the PCK limit, invisible joints that would count as correct,
and figures of very different sizes in one batch (per-figure versus global normalizer). Random
keypoints lie on a 1/8-pixel grid and radii on a 1/2-pixel grid, so every squared distance is exact
in float32 and many pixels fall exactly on a rim.
"""
from __future__ import annotations

import math

import torch

from .core import Case, Exercise, Mistake, rand_dtype, rand_int, register, section

LECTURE = "08_pose"
TARGETS = section("08", "Targets: a disk around each joint")
DECODING = section("08", "Decoding a heatmap into a point")
PCK = section("08", "Measuring: PCK")

# The lecture's worked example: one joint at x = 5, y = 2 in an image 5 rows high and 8 columns wide.
EXAMPLE_JOINT, EXAMPLE_SIZE, EXAMPLE_RADIUS = (5.0, 2.0), (5, 8), 2.0


def _grid_keypoints(gen, shape, height, width, dtype, margin=3.0):
    """Keypoints ``shape + [2]`` on a 1/8-pixel grid, from ``margin`` pixels outside the image to as far inside."""
    unit = torch.rand(*shape, 2, generator=gen, dtype=torch.float64)
    extent = torch.tensor([width - 1 + 2 * margin, height - 1 + 2 * margin], dtype=torch.float64)
    return (torch.round((unit * extent - margin) * 8) / 8).to(dtype)


# --- disk_heatmaps ------------------------------------------------------------------------------

def _disk_cases(gen, hidden):
    height, width = EXAMPLE_SIZE
    cases = [
        Case((torch.tensor([EXAMPLE_JOINT]), height, width, EXAMPLE_RADIUS),
             label="lecture example: joint (x=5, y=2) in a 5x8 image, radius 2 (13 pixels, 4 of them exactly on the rim)"),
        Case((torch.tensor([[2.5, 3.0], [7.0, 1.0]], dtype=torch.float64), 6, 10, 1.5),
             label="rim through pixel centres: (2.5, 3) with radius 1.5 reaches x = 1 and x = 4 exactly; (7, 1) at the top edge"),
        Case((torch.tensor([[5.0, 4.0]]), 12, 9, 5),
             label="radius 5 (an int) around (5, 4): pixels like (8, 8) lie exactly 5 away (3-4-5)"),
        Case((torch.tensor([[4.25, 1.75], [0.0, 0.0], [-1.5, 2.0]]), 6, 9, 2.5),
             label="sub-pixel joint (4.25, 1.75), a joint on the corner pixel, a joint outside the image"),
        Case((torch.tensor([[[1.0, 2.0], [6.0, 1.0]], [[3.5, 3.5], [20.0, 20.0]]], dtype=torch.float64), 5, 8, 0),
             label="two figures [2, 2, 2], radius 0: only joints exactly on a pixel centre light it; one joint far outside"),
    ]
    for shape in [(3,), (2, 4), (1, 14)]:
        dtype = rand_dtype(gen)
        height, width = rand_int(gen, 5, 14), rand_int(gen, 5, 14)
        radius = rand_int(gen, 1, 8) / 2  # 0.5 ... 4.0
        cases.append(Case((_grid_keypoints(gen, shape, height, width, dtype), height, width, radius)))
    dtype = rand_dtype(gen)
    cases.append(Case((_grid_keypoints(gen, (2, 3), 9, 16, dtype), 9, 16, rand_int(gen, 1, 3)),
                      label="a wide 9x16 image, integer radius"))
    return cases


def _disk_oracle(case):
    keypoints, height, width, radius = case.args
    flat = keypoints.double().reshape(-1, 2).tolist()
    out = torch.zeros(len(flat), height, width, dtype=torch.float64)
    for k, (x, y) in enumerate(flat):
        for row in range(height):
            for col in range(width):
                if (col - x) ** 2 + (row - y) ** 2 <= radius**2:
                    out[k, row, col] = 1.0
    return out.reshape(*keypoints.shape[:-1], height, width).to(keypoints.dtype)


def _disk(keypoints, height, width, radius, *, swap=False, strict=False, scale=1.0, offset=0.0):
    """What a student might write, with one switch per classic mistake."""
    xs = torch.arange(width, dtype=keypoints.dtype) + offset
    ys = torch.arange(height, dtype=keypoints.dtype) + offset
    x, y = (keypoints[..., 1], keypoints[..., 0]) if swap else (keypoints[..., 0], keypoints[..., 1])
    d2 = (ys[:, None] - y[..., None, None]) ** 2 + (xs[None, :] - x[..., None, None]) ** 2
    limit = (radius * scale) ** 2
    return (d2 < limit if strict else d2 <= limit).to(keypoints.dtype)


register(Exercise(
    "disk_heatmaps", LECTURE, 2, _disk_cases, _disk_oracle,
    params=("keypoints", "height", "width", "radius"),
    forms={"keypoints": ("tensor float32", "tensor float64"), "height": ("int",), "width": ("int",), "radius": ("float", "int")},
    forbidden=("course_lib.pose",),
    mistakes=(
        Mistake("xy_swapped", lambda kp, h, w, r: _disk(kp, h, w, r, swap=True),
                f"Your disks sit at (row, col) = (x, y), mirrored across the diagonal: a keypoint is (x, y) = (column, row) ({TARGETS})."),
        Mistake("strict_rim", lambda kp, h, w, r: _disk(kp, h, w, r, strict=True),
                f"You leave out the pixels exactly r away: the disk includes its rim, distance^2 <= r^2, not < ({TARGETS})."),
        Mistake("diameter", lambda kp, h, w, r: _disk(kp, h, w, r, scale=0.5),
                f"Your disks are half as wide: radius is the distance from the joint to the rim, not the disk's diameter ({TARGETS})."),
        Mistake("half_pixel", lambda kp, h, w, r: _disk(kp, h, w, r, offset=0.5),
                f"Your disks are shifted by half a pixel: pixel centres are at integer coordinates here, (x, y) = (j, i), not (j + 0.5, i + 0.5) ({TARGETS})."),
    ),
))


# --- decode_heatmaps ----------------------------------------------------------------------------

def _disk_map(height, width, x, y, radius, dtype=torch.float32):
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    cols = torch.arange(width, dtype=torch.float64)[None, :]
    return ((cols - x) ** 2 + (rows - y) ** 2 <= radius**2).to(dtype)


def _decode_cases(gen, hidden):
    height, width = EXAMPLE_SIZE
    peaked = torch.rand(6, 9, generator=gen, dtype=torch.float64) * 0.5
    peaked[1, 5] = 0.9  # one highest pixel at x = 5, y = 1
    plateau = torch.full((1, 5, 8), -6.0)
    plateau[0, 3, 2:5] = -0.5  # logits: three equal maxima in row 3, columns 2-4
    plateau[0, 1, 6] = -0.75
    twins = torch.zeros(1, 7, 9, dtype=torch.float64)
    twins[0, 1, 1] = twins[0, 5, 7] = 2.0
    cases = [
        Case((_disk_map(height, width, *EXAMPLE_JOINT, EXAMPLE_RADIUS)[None],),
             label="lecture example: the radius-2 disk target around (x=5, y=2) in a 5x8 map decodes to (5, 2)",
             expected=torch.tensor([list(EXAMPLE_JOINT)])),
        Case((peaked[None],), label="one highest pixel at (x=5, y=1) among random values: the peak itself"),
        Case((plateau,), label="logits (all negative) with a plateau of three maxima at y=3, x=2..4: its centre (3, 3)"),
        Case((torch.stack([_disk_map(6, 9, 4.25, 1.75, 2.5), torch.full((6, 9), 0.25)]),),
             label="a disk around the sub-pixel joint (4.25, 1.75), and a constant map (every pixel is maximal: the image centre)"),
        Case((twins,), label="two separate equal peaks at (1, 1) and (7, 5): the mean of all maximal pixels, (4, 3)"),
    ]
    for figures, joints in [(0, 3), (2, 4), (3, 2)]:
        dtype = rand_dtype(gen)
        height, width = rand_int(gen, 6, 16), rand_int(gen, 6, 16)
        shape = (figures, joints) if figures else (joints,)
        kp = _grid_keypoints(gen, shape, height, width, torch.float64, margin=0.0)
        d2 = ((torch.arange(width, dtype=torch.float64) - kp[..., 0, None, None]) ** 2
              + (torch.arange(height, dtype=torch.float64)[:, None] - kp[..., 1, None, None]) ** 2)
        kind = rand_int(gen, 0, 2)
        if kind == 0:  # blurry peaks with noise: one highest pixel each
            maps = torch.exp(-d2 / 6) + 0.05 * torch.rand(d2.shape, generator=gen, dtype=torch.float64)
        elif kind == 1:  # flat disks (targets)
            maps = (d2 <= (rand_int(gen, 2, 6) / 2) ** 2).double()
        else:  # saturated predictions: probabilities clamped at a level
            maps = torch.sigmoid(4 - d2 + torch.rand(d2.shape, generator=gen, dtype=torch.float64)).clamp(max=0.7)
        cases.append(Case((maps.to(dtype),), label=f"{['peaked', 'disk', 'saturated'][kind]} maps {list(maps.shape)} {dtype}"))
    return cases


def _decode_oracle(case):
    (heatmaps,) = case.args
    maps = heatmaps.double().reshape(-1, *heatmaps.shape[-2:])
    out = []
    for grid in maps.tolist():
        top = max(max(row) for row in grid)
        where = [(col, row) for row, values in enumerate(grid) for col, v in enumerate(values) if v == top]
        out.append([sum(c for c, _ in where) / len(where), sum(r for _, r in where) / len(where)])
    return torch.tensor(out, dtype=torch.float64).reshape(*heatmaps.shape[:-2], 2).to(heatmaps.dtype)


def _decode(heatmaps, *, first=False, swap=False, weighted=False, offset=0.0):
    height, width = heatmaps.shape[-2:]
    flat = heatmaps.flatten(-2)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=heatmaps.dtype), torch.arange(width, dtype=heatmaps.dtype), indexing="ij")
    xs, ys = xs.flatten() + offset, ys.flatten() + offset
    if first:
        index = flat.argmax(dim=-1)
        point = torch.stack([xs[index], ys[index]], dim=-1)
    else:
        weight = flat if weighted else (flat == flat.amax(dim=-1, keepdim=True)).to(heatmaps.dtype)
        total = weight.sum(dim=-1)
        point = torch.stack([(weight * xs).sum(-1) / total, (weight * ys).sum(-1) / total], dim=-1)
    return point.flip(-1) if swap else point


register(Exercise(
    "decode_heatmaps", LECTURE, 3, _decode_cases, _decode_oracle,
    params=("heatmaps",), forms={"heatmaps": ("tensor float32", "tensor float64")},
    forbidden=("course_lib.pose",),
    mistakes=(
        Mistake("first_pixel", lambda h: _decode(h, first=True),
                f"You return the first maximal pixel (argmax): on a flat-topped map such as a disk that is its top edge, r above the joint; take the mean of all maximal pixels ({DECODING})."),
        Mistake("row_col", lambda h: _decode(h, swap=True),
                f"Your points come out as (row, col) = (y, x): return (x, y), x the column ({DECODING})."),
        Mistake("weighted_mean", lambda h: _decode(h, weighted=True),
                f"You average every pixel weighted by its value: that is only right for a clean binary disk; use the pixels equal to the maximum, each with the same weight ({DECODING})."),
        Mistake("half_pixel", lambda h: _decode(h, offset=0.5),
                f"Your points are half a pixel off: pixel (i, j) has its centre at x = j, y = i here ({DECODING})."),
    ),
))


# --- pck ----------------------------------------------------------------------------------------

def pck_example():
    """The lecture's worked example: two figures of torso size 10 and 20, three joints each, threshold 0.2
    (limits 2 and 4 pixels). Distances: 1, 5, 2 (exactly the limit) and 3.5, 2, 3 (the last invisible)."""
    gt = torch.tensor([[[10.0, 10.0], [20.0, 10.0], [30.0, 10.0]], [[10.0, 30.0], [20.0, 30.0], [30.0, 30.0]]])
    pred = torch.tensor([[[11.0, 10.0], [23.0, 14.0], [32.0, 10.0]], [[10.0, 33.5], [22.0, 30.0], [30.0, 27.0]]])
    visible = torch.tensor([[True, True, True], [True, True, False]])
    return pred, gt, 0.2, torch.tensor([10.0, 20.0]), visible


def _pck_cases(gen, hidden):
    pred, gt, threshold, normalizer, visible = pck_example()
    cases = [
        Case((pred, gt, threshold, normalizer, visible), expected=torch.tensor(0.8),
             label="lecture example: torso sizes 10 and 20, threshold 0.2; distances 1, 5, 2 | 3.5, 2, 3 (invisible): 4 of 5"),
        Case((pred.double(), gt.double(), threshold, normalizer.double(), None),
             label="the same without visible: every joint counts (5 of 6)"),
        Case((torch.tensor([[13.0, 14.0], [0.0, 0.0]]), torch.tensor([[10.0, 10.0], [0.0, 6.0]]), 0.5, 10.0, None),
             label="one figure [2, 2], normalizer 10.0 (a float): distance 5 is exactly 0.5 x 10 and counts; 6 does not"),
    ]
    for figures, joints in [(4, 14), (9, 5), (1, 3), (16, 14)]:
        dtype = rand_dtype(gen)
        gt = _grid_keypoints(gen, (figures, joints), 64, 64, dtype, margin=0.0)
        sizes = (8.0 + 32.0 * torch.rand(figures, generator=gen, dtype=torch.float64)).to(dtype)
        error = torch.randn(figures, joints, 2, generator=gen, dtype=torch.float64) * sizes.double()[:, None, None] * 0.15
        pred = gt + error.to(dtype)
        threshold = rand_int(gen, 1, 10) / 20
        per_figure = bool(rand_int(gen, 0, 3)) or figures == 1
        normalizer = sizes if per_figure else float(sizes[0])
        visible = torch.rand(figures, joints, generator=gen) < 0.8 if rand_int(gen, 0, 3) else None
        if visible is not None:
            visible[0, 0] = True  # never a batch without visible joints
        cases.append(Case((pred, gt, threshold, normalizer, visible)))
    sizes = torch.tensor([6.0, 60.0, 12.0], dtype=torch.float64)
    gt = _grid_keypoints(gen, (3, 6), 64, 64, torch.float64, margin=0.0)
    pred = gt + torch.randn(3, 6, 2, generator=gen, dtype=torch.float64) * 3.0
    cases.append(Case((pred, gt, 0.25, sizes, torch.ones(3, 6, dtype=torch.bool)),
                      label="figures of torso size 6, 60 and 12 in one batch (each is judged by its own size)"))
    return cases


def _pck_oracle(case):
    pred, gt, threshold, normalizer, visible = case.args
    p, g = pred.double().reshape(-1, pred.shape[-2], 2).tolist(), gt.double().reshape(-1, gt.shape[-2], 2).tolist()
    sizes = [float(normalizer)] * len(p) if not isinstance(normalizer, torch.Tensor) or normalizer.dim() == 0 \
        else normalizer.double().reshape(-1).tolist()
    seen = [[True] * len(p[0])] * len(p) if visible is None else visible.reshape(len(p), -1).tolist()
    correct = counted = 0
    for n in range(len(p)):
        for k in range(len(p[n])):
            if seen[n][k]:
                counted += 1
                correct += math.hypot(p[n][k][0] - g[n][k][0], p[n][k][1] - g[n][k][1]) <= threshold * sizes[n]
    return torch.tensor(correct / counted, dtype=pred.dtype)


def _pck(pred, gt, threshold, normalizer, visible=None, *, count_all=False, global_size=False, strict=False,
         over_all=False, squared=False):
    if isinstance(normalizer, torch.Tensor) and normalizer.dim() > 0:
        normalizer = normalizer.mean() if global_size else normalizer[..., None]
    distance = ((pred - gt) ** 2).sum(-1)
    if not squared:
        distance = distance.sqrt()
    limit = threshold * normalizer
    correct = distance < limit if strict else distance <= limit
    if visible is None or count_all:
        visible = torch.ones_like(correct)
    denominator = correct.numel() if over_all else visible.sum()
    return ((correct & visible).sum() / denominator).to(pred.dtype)


register(Exercise(
    "pck", LECTURE, 3, _pck_cases, _pck_oracle,
    params=("pred", "gt", "threshold", "normalizer", "visible"),
    forms={"pred": ("tensor float32", "tensor float64"), "gt": ("tensor float32", "tensor float64"), "threshold": ("float",),
           "normalizer": ("float", "tensor float32", "tensor float64"), "visible": ("None", "tensor bool")},
    forbidden=("course_lib.pose",),
    mistakes=(
        Mistake("counts_invisible", lambda *a: _pck(*a, count_all=True),
                f"You count invisible joints too: only joints with visible True are scored, correct or not ({PCK})."),
        Mistake("global_normalizer", lambda *a: _pck(*a, global_size=True),
                f"You use one normalizer (the mean) for every figure: each figure's joints are judged by its own size ({PCK})."),
        Mistake("strict_limit", lambda *a: _pck(*a, strict=True),
                f"You leave out joints exactly at the limit: a joint is correct when its distance is at most threshold x normalizer (<=) ({PCK})."),
        Mistake("visible_over_all", lambda *a: _pck(*a, over_all=True),
                f"You divide the correct visible joints by all joints: divide by the number of visible joints ({PCK})."),
        Mistake("squared_distance", lambda *a: _pck(*a, squared=True),
                f"You compare the squared distance with threshold x normalizer: take the square root first, or square the limit ({PCK})."),
    ),
))
