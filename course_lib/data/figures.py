"""Synthetic articulated figures for pose estimation: a limb-shaped person on a cluttered background,
with the exact pixel position of each of its 14 joints and whether that joint can be seen.

The joints (:data:`JOINTS`) are those of the Leeds Sports Pose set, with the head's centre instead of
its top: head, neck, shoulders, elbows, wrists, hips, knees and ankles. :data:`SKELETON` lists the
bones between them and :data:`FLIP_PAIRS` the left/right pairs.

Conventions:

* Keypoints are ``(x, y)`` in pixels, with the centre of pixel ``image[..., i, j]`` at ``x = j, y = i``
  (integer coordinates, as ``matplotlib.pyplot.imshow`` draws them). A joint may lie outside the image.
* ``left`` and ``right`` are the figure's own: the figure faces the viewer, so its left side is on the
  image's right, unless an arm or leg crosses over. Its **left limbs are drawn in a lighter shade and
  its right limbs in a darker shade** of the body colour; without that difference a figure and its
  mirror image would look alike and "left wrist" would be ambiguous whenever the limbs cross.
* ``visible[n, k]`` is True when joint ``k`` lies inside the image (``-0.5 <= x < W - 0.5``, the same
  for ``y``: it rounds to a pixel) and the part painted on top at that pixel is one of the joint's own
  parts. An elbow behind the torso, or a hip under a forearm, is *occluded* (False), yet its keypoint
  is still exact.

How a figure is made, and why:

* All random numbers (pose, size, position, thickness, colours, clutter, noise) come from one CPU
  ``torch.Generator`` seeded with ``seed``: the same seed gives the same figures on every device.
* The pose is a small kinematic chain: the pelvis is placed, the torso leans, and each bone turns
  from its parent bone by an angle drawn between anatomical-looking limits, so figures are varied but
  never impossible. The torso length sets the scale; some figures reach over the image border.
* Drawing is vectorised on the target device: each part is a thick segment (pixels whose distance to
  the segment is at most half the thickness), the torso a trapezoid and the head a disk, evaluated for
  every (image, part, row, column) at once. Each part has a depth (an arm is in front of or behind
  the torso, one leg in front of the other); the nearest part paints the pixel. Behind the figure,
  distractor strokes (some in the figure's own colours) and a textured background make the task hard
  enough to need a CNN.
"""
from __future__ import annotations

import math

import torch

from ..validate import nonneg_int, pair, positive_int

__all__ = ["JOINTS", "SKELETON", "FLIP_PAIRS", "SIDE", "PARTS", "stick_figures"]

#: Joint names, in the order of the keypoint axis.
JOINTS = (
    "head", "neck",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_J = {name: k for k, name in enumerate(JOINTS)}

#: Bones as pairs of joint indices (for drawing skeletons).
SKELETON = tuple(
    (_J[a], _J[b])
    for a, b in [
        ("head", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
        ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
        ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
        ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "right_hip"),
        ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
        ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
    ]
)

#: ``(left, right)`` joint-index pairs: mirroring a figure swaps them.
FLIP_PAIRS = tuple((_J[f"left_{part}"], _J[f"right_{part}"]) for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"))

#: ``SIDE[k]``: +1 for the figure's left joints, -1 for its right joints, 0 for head and neck.
SIDE = tuple(1 if name.startswith("left") else -1 if name.startswith("right") else 0 for name in JOINTS)

#: The drawn parts, as ``(name, joints it is drawn around)``: the torso (a trapezoid), the head (a disk
#: and the neck), then the limbs' bones. A joint is occluded when a part that is not one of its own is
#: painted over it.
PARTS = (
    ("torso", ("neck", "left_shoulder", "right_shoulder", "left_hip", "right_hip")),
    ("head", ("head", "neck")),
    ("left_upper_arm", ("left_shoulder", "left_elbow")), ("left_forearm", ("left_elbow", "left_wrist")),
    ("right_upper_arm", ("right_shoulder", "right_elbow")), ("right_forearm", ("right_elbow", "right_wrist")),
    ("left_thigh", ("left_hip", "left_knee")), ("left_shin", ("left_knee", "left_ankle")),
    ("right_thigh", ("right_hip", "right_knee")), ("right_shin", ("right_knee", "right_ankle")),
)
_SEGMENTS = [[_J[a] for a in joints] for _, joints in PARTS[2:]]  # bones drawn as thick segments

_DISTRACTORS = 6  # most distractor strokes per image (each image draws 2 to this many)
_CHUNK = 64  # images rasterised at once, to bound memory to a few hundred MB


def _uniform(generator, shape, low, high):
    return low + (high - low) * torch.rand(shape, generator=generator)


def _direction(angle):
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)


def _sample_pose(generator, n, height, width):
    """Keypoints ``[n, K, 2]``, part depths ``[n, P]`` (larger is nearer) and drawing sizes of ``n`` figures."""
    short = min(height, width)
    torso = _uniform(generator, (n,), 0.20, 0.30) * short  # neck to pelvis, the figure's scale
    lean = _uniform(generator, (n,), -0.45, 0.45)  # torso tilt from vertical, radians
    turn = _uniform(generator, (n,), 0.6, 1.0)  # 1 = square to the viewer; narrower when turned
    pelvis = torch.stack([_uniform(generator, (n,), 0.25, 0.75) * width, _uniform(generator, (n,), 0.42, 0.62) * height], dim=-1)
    neck_tilt = _uniform(generator, (n,), -0.35, 0.35)
    # Outward angles from the torso's downward direction (positive = away from the body's midline).
    shoulder = _uniform(generator, (n, 2), -0.5, 2.9)
    elbow = _uniform(generator, (n, 2), -2.0, 2.0)
    hip = _uniform(generator, (n, 2), -0.25, 0.8)
    knee = _uniform(generator, (n, 2), -0.7, 0.7)

    # Image coordinates: x to the right, y down. The torso points "up" along angle lean - pi/2; the
    # figure's left (it faces us) lies at angle lean, to the image's right.
    up = _direction(lean - math.pi / 2)
    left = _direction(lean)
    down_angle = lean + math.pi / 2
    s = torso[:, None]
    neck = pelvis + s * up
    head = neck + 0.45 * s * _direction(lean - math.pi / 2 + neck_tilt)
    sides = torch.tensor([1.0, -1.0])  # left, right
    shoulders = neck[:, None] + (0.36 * turn * torso)[:, None, None] * sides[:, None] * left[:, None]
    hips = pelvis[:, None] + (0.24 * turn * torso)[:, None, None] * sides[:, None] * left[:, None]
    # Turning outward moves a left bone towards angle `lean` (smaller angles), a right bone away.
    upper_arm = down_angle[:, None] - sides * shoulder
    forearm = upper_arm - sides * elbow
    thigh = down_angle[:, None] - sides * hip
    shin = thigh - sides * knee
    elbows = shoulders + 0.55 * s[..., None] * _direction(upper_arm)
    wrists = elbows + 0.50 * s[..., None] * _direction(forearm)
    knees = hips + 0.62 * s[..., None] * _direction(thigh)
    ankles = knees + 0.58 * s[..., None] * _direction(shin)
    keypoints = torch.stack(
        [head, neck, shoulders[:, 0], shoulders[:, 1], elbows[:, 0], elbows[:, 1], wrists[:, 0], wrists[:, 1],
         hips[:, 0], hips[:, 1], knees[:, 0], knees[:, 1], ankles[:, 0], ankles[:, 1]], dim=1)
    limb = _uniform(generator, (n,), 0.16, 0.24) * torso  # leg thickness; arms are 0.85 of it
    # Depth of each part (larger = nearer): torso 2, head 2.5; each arm in front (3) or, one time in
    # four, behind (0.5); legs behind the torso, one in front of the other; lower bones over upper ones.
    arm_front = torch.rand(n, 2, generator=generator) < 0.75
    arm_depth = torch.where(arm_front, 3.0, 0.5) + 0.2 * torch.rand(n, 2, generator=generator)
    leg_depth = 1.0 + 0.2 * torch.rand(n, 2, generator=generator)
    depth = torch.stack(
        [torch.full((n,), 2.0), torch.full((n,), 2.5),
         arm_depth[:, 0], arm_depth[:, 0] + 0.05, arm_depth[:, 1], arm_depth[:, 1] + 0.05,
         leg_depth[:, 0], leg_depth[:, 0] + 0.05, leg_depth[:, 1], leg_depth[:, 1] + 0.05], dim=1)
    sizes = {"torso": torso, "limb": limb, "head_radius": 0.21 * torso}
    return keypoints, depth, sizes


def _sample_looks(generator, n, height, width):
    """Colours of the figure, background clutter and distractor strokes."""
    short = min(height, width)
    body = _uniform(generator, (n, 3), 0.3, 0.7)
    blobs = 4
    looks = {
        "body": body,
        "background": _uniform(generator, (n, 3), 0.2, 0.8),
        "stripe_amplitude": _uniform(generator, (n, 3), -0.08, 0.08),
        "stripe_period": _uniform(generator, (n,), 4.0, 16.0),
        "stripe_angle": _uniform(generator, (n,), 0.0, math.pi),
        "blob_xy": torch.rand(n, blobs, 2, generator=generator) * torch.tensor([width, height]),
        "blob_sigma": _uniform(generator, (n, blobs), 3.0, 10.0),
        "blob_amplitude": _uniform(generator, (n, blobs, 3), -0.2, 0.2),
        "stroke_count": torch.randint(2, _DISTRACTORS + 1, (n,), generator=generator),
        "stroke_start": torch.rand(n, _DISTRACTORS, 2, generator=generator) * torch.tensor([width, height]),
        "stroke_angle": _uniform(generator, (n, _DISTRACTORS), 0.0, 2 * math.pi),
        "stroke_length": _uniform(generator, (n, _DISTRACTORS), 0.15, 0.45) * short,
        "stroke_width": _uniform(generator, (n, _DISTRACTORS), 1.5, 4.5),
        "stroke_colour": torch.rand(n, _DISTRACTORS, 3, generator=generator),
        # a third of the strokes take one of the figure's three shades, so colour alone cannot find it
        "stroke_mimic": torch.rand(n, _DISTRACTORS, generator=generator) < 1 / 3,
        "stroke_shade": torch.randint(0, 3, (n, _DISTRACTORS), generator=generator),
        "noise": 0.03 * torch.randn(n, 3, height, width, generator=generator),
    }
    return looks


def _shades(body):
    """Body colour ``[..., 3]`` -> ``[..., 3, 3]``: body, lighter (left limbs), darker (right limbs)."""
    return torch.stack([body, body + 0.25, body - 0.25], dim=-2)


def _segment_distance(xs, ys, a, b):
    """Distance ``[..., H, W]`` from every pixel centre to the segments ``a -> b`` (``[..., 2]`` each)."""
    ax, ay = a[..., 0, None, None], a[..., 1, None, None]
    dx, dy = (b - a)[..., 0, None, None], (b - a)[..., 1, None, None]
    length2 = (dx**2 + dy**2).clamp(min=1e-12)
    t = (((xs - ax) * dx + (ys - ay) * dy) / length2).clamp(0.0, 1.0)
    return torch.hypot(xs - ax - t * dx, ys - ay - t * dy)


def _render(keypoints, depth, sizes, looks, height, width, device):
    """Images ``[n, 3, H, W]`` and the top part's index ``[n, H, W]`` (-1 for background)."""
    kp = keypoints.to(device)
    depth, sizes, looks = depth.to(device), {k: v.to(device) for k, v in sizes.items()}, {k: v.to(device) for k, v in looks.items()}
    n = kp.shape[0]
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None]
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, :]

    # Background: flat colour, a faint grating, soft blobs.
    angle = looks["stripe_angle"][:, None, None]
    along = xs * torch.cos(angle) + ys * torch.sin(angle)
    grating = torch.sin(2 * math.pi * along / looks["stripe_period"][:, None, None])
    image = looks["background"][:, :, None, None] + looks["stripe_amplitude"][:, :, None, None] * grating[:, None]
    blob = looks["blob_xy"][..., None, None]
    d2 = (xs - blob[:, :, 0]) ** 2 + (ys - blob[:, :, 1]) ** 2
    bumps = torch.exp(-d2 / (2 * looks["blob_sigma"][..., None, None] ** 2))
    image = image + torch.einsum("nbc,nbhw->nchw", looks["blob_amplitude"], bumps)

    # Distractor strokes, painted in order behind the figure.
    shades = _shades(looks["body"])  # [n, 3 shades, 3]
    mimic = torch.gather(shades, 1, looks["stroke_shade"][..., None].expand(-1, -1, 3))
    stroke_colour = torch.where(looks["stroke_mimic"][..., None], mimic, looks["stroke_colour"])
    start = looks["stroke_start"]
    end = start + looks["stroke_length"][..., None] * _direction(looks["stroke_angle"])
    on_stroke = _segment_distance(xs, ys, start, end) <= looks["stroke_width"][..., None, None] / 2
    on_stroke &= (torch.arange(_DISTRACTORS, device=device) < looks["stroke_count"][:, None])[..., None, None]
    for s in range(_DISTRACTORS):
        image = torch.where(on_stroke[:, s, None], stroke_colour[:, s, :, None, None], image)

    # The figure: one mask per part, then the nearest part wins each pixel.
    j = _J
    corners = kp[:, [j["left_shoulder"], j["right_shoulder"], j["right_hip"], j["left_hip"]]]  # [n, 4, 2]
    edges = corners.roll(-1, dims=1) - corners
    cross = edges[..., 0, None, None] * (ys - corners[..., 1, None, None]) - edges[..., 1, None, None] * (xs - corners[..., 0, None, None])
    orientation = torch.sign((edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]))[:, None, None, None]
    torso = (cross * orientation >= 0).all(dim=1)  # inside a convex polygon: on the inner side of every edge
    head = torch.hypot(xs - kp[:, j["head"], 0, None, None], ys - kp[:, j["head"], 1, None, None]) <= sizes["head_radius"][:, None, None]
    head |= _segment_distance(xs, ys, kp[:, j["neck"]], kp[:, j["head"]]) <= (0.35 * sizes["limb"])[:, None, None]
    index = torch.tensor(_SEGMENTS, device=device)
    half = sizes["limb"][:, None] / 2 * torch.tensor([0.85] * 4 + [1.0] * 4, device=device)  # arms, then legs
    limbs = _segment_distance(xs, ys, kp[:, index[:, 0]], kp[:, index[:, 1]]) <= half[..., None, None]
    masks = torch.cat([torso[:, None], head[:, None], limbs], dim=1)  # [n, P, H, W]
    nearest = torch.where(masks, depth[..., None, None], -math.inf).max(dim=1)
    top = torch.where(torch.isfinite(nearest.values), nearest.indices, -1)
    # Part colours: torso and head in the body colour, the figure's left limbs lighter, right darker.
    shade_of_part = torch.tensor([0, 0, 1, 1, 2, 2, 1, 1, 2, 2], device=device)
    part_colour = shades[:, shade_of_part]  # [n, P, 3]
    paint = torch.gather(part_colour, 1, top.clamp(min=0).flatten(1)[..., None].expand(-1, -1, 3))
    paint = paint.transpose(1, 2).reshape(n, 3, height, width)
    image = torch.where(top[:, None] >= 0, paint, image) + looks["noise"]
    return image.clamp(0.0, 1.0), top


def _visibility(keypoints, top, height, width):
    """``[n, K]`` bool: the joint rounds to a pixel of the image and one of its own parts is on top there."""
    device = top.device
    kp = keypoints.to(device)
    col, row = torch.round(kp[..., 0]).long(), torch.round(kp[..., 1]).long()
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    flat = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1))
    part = torch.gather(top.flatten(1), 1, flat)  # [n, K]
    own = torch.zeros(len(JOINTS), len(PARTS) + 1, dtype=torch.bool, device=device)  # last column: background
    for p, (_, joints) in enumerate(PARTS):
        for name in joints:
            own[_J[name], p] = True
    part = torch.where(part < 0, len(PARTS), part)
    joint = torch.arange(len(JOINTS), device=device).expand_as(part)
    return inside & own[joint, part]


def stick_figures(n: int, size=64, seed: int = 0, device=None, parts: bool = False):
    """``n`` synthetic figures, one per image, with their keypoints and visibility.

    Args:
        n: number of images.
        size: image side in pixels, or ``(height, width)``; at least 32.
        seed: the figures are a pure function of ``(n, size, seed)`` (draws are batched over images,
            so the first figures of a larger ``n`` differ from a smaller ``n``).
        device: where the tensors are created (default CPU).

    Returns:
        ``images`` ``[n, 3, H, W]`` float32 in [0, 1]; ``keypoints`` ``[n, K, 2]`` float32 ``(x, y)``
        in pixels (pixel centres at integers; joints may lie outside the image); ``visible`` ``[n, K]``
        bool, True for joints inside the image and not hidden by another part. ``K = len(JOINTS) = 14``.
        With ``parts=True`` also ``part_map`` ``[n, H, W]`` int64: the index into :data:`PARTS` of the part
        painted at each pixel, -1 for the background.
    """
    positive_int("n", n)
    height, width = pair("size", size, minimum=32)
    nonneg_int("seed", seed)
    device = torch.device("cpu") if device is None else torch.device(device)

    generator = torch.Generator().manual_seed(seed)
    keypoints, depth, sizes = _sample_pose(generator, n, height, width)
    looks = _sample_looks(generator, n, height, width)

    images, visible, part_maps = [], [], []
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        chunk_images, top = _render(keypoints[part], depth[part], {k: v[part] for k, v in sizes.items()},
                                    {k: v[part] for k, v in looks.items()}, height, width, device)
        images.append(chunk_images)
        visible.append(_visibility(keypoints[part], top, height, width))
        part_maps.append(top)
    result = (torch.cat(images), keypoints.to(device), torch.cat(visible))
    return (*result, torch.cat(part_maps)) if parts else result
