"""Synthetic detection scenes: a few coloured, textured shapes on a cluttered background.

Every scene comes with exact annotations in torchvision's detection format: one dict per image with
``boxes`` (``[K, 4]`` float32, ``(x1, y1, x2, y2)`` in pixels), ``labels`` (``[K]`` int64, 1 is the first
class, 0 is reserved for background) and ``masks`` (``[K, H, W]`` uint8 instance masks).

How a scene is made, and why:

* All random numbers (object count, class, size, position, rotation, colour, texture, clutter, pixel
  noise) come from one CPU ``torch.Generator`` seeded with ``seed``. The same seed therefore gives the
  same scenes on every device and in every call.
* Drawing is vectorised on the target device: each shape is an inequality on the coordinates of the
  pixel centres, evaluated for every (image, object, row, column) at once by broadcasting.
* Objects never overlap: a candidate object is rejected when its circumscribed circle comes within
  two pixels of an object already placed. Each mask is therefore fully visible, each box is the
  tight box of its mask, and painting the objects in any order gives the same label map.
* Objects lie entirely inside the image (one pixel margin), so boxes are never clipped.
* A pixel belongs to a shape when its centre ``(x + 0.5, y + 0.5)`` is inside the shape, and the box of
  a mask covers its pixels: ``x1 = min column, x2 = max column + 1`` (the same for rows). Widths are
  ``x2 - x1`` with no ``+ 1``, the convention of torchvision and :mod:`course_lib.detection`.
"""
from __future__ import annotations

import math

import torch

from ..validate import nonneg_int, pair, positive_int

__all__ = ["CLASS_NAMES", "shapes_scenes", "semantic_masks", "masks_to_boxes"]

#: ``CLASS_NAMES[label]`` names a label of the default scenes; label 0 is the background.
CLASS_NAMES = ("background", "circle", "square", "triangle", "star")

_SIDES = {"circle": 0, "square": 4, "triangle": 3, "star": 5}
_STAR_INNER = 0.45  # inner radius of the star's notches, as a fraction of its outer radius
_CANDIDATES_PER_OBJECT = 8  # rejection sampling tries this many placements per wanted object
_GAP = 2.0  # pixels kept free between the circumscribed circles of two objects
_CHUNK = 128  # images rasterised at once, to bound memory to a few hundred MB


def _uniform(generator, shape, low, high):
    return low + (high - low) * torch.rand(shape, generator=generator)


def _sample_objects(generator, n, height, width, max_objects, num_classes):
    """Object parameters per image, ``[n, max_objects]`` each, placed without overlap."""
    slots = max_objects * _CANDIDATES_PER_OBJECT
    wanted = torch.randint(1, max_objects + 1, (n,), generator=generator)
    short = min(height, width)
    radius = _uniform(generator, (n, slots), 0.10 * short, 0.25 * short)
    cx = radius + 1 + torch.rand(n, slots, generator=generator) * (width - 2 - 2 * radius)
    cy = radius + 1 + torch.rand(n, slots, generator=generator) * (height - 2 - 2 * radius)
    candidate = {
        "label": torch.randint(1, num_classes + 1, (n, slots), generator=generator),
        "radius": radius,
        "cx": cx,
        "cy": cy,
        "angle": _uniform(generator, (n, slots), 0.0, 2 * math.pi),
        # each channel differs from the background by 0.25 to 0.5, up or down (see _sample_background)
        "contrast": _uniform(generator, (n, slots, 3), 0.25, 0.5)
        * (torch.randint(0, 2, (n, slots, 3), generator=generator) * 2 - 1),
        "texture": torch.randint(0, 4, (n, slots), generator=generator),
        "texture_period": _uniform(generator, (n, slots), 3.0, 7.0),
        "texture_angle": _uniform(generator, (n, slots), 0.0, math.pi),
        "texture_amplitude": _uniform(generator, (n, slots), 0.05, 0.15),
    }
    # Greedy rejection sampling, one candidate slot at a time for all images together.
    accepted = torch.zeros(n, slots, dtype=torch.bool)
    count = torch.zeros(n, dtype=torch.long)
    for j in range(slots):
        distance = torch.hypot(cx[:, :j] - cx[:, j : j + 1], cy[:, :j] - cy[:, j : j + 1])
        clash = (distance < radius[:, :j] + radius[:, j : j + 1] + _GAP) & accepted[:, :j]
        accepted[:, j] = (count < wanted) & ~clash.any(dim=1)
        count += accepted[:, j]
    # Move the accepted candidates, in placement order, to the first `count` slots.
    order = torch.sort((~accepted).to(torch.uint8), dim=1, stable=True).indices[:, :max_objects]
    objects = {}
    for key, value in candidate.items():
        index = order if value.dim() == 2 else order[..., None].expand(-1, -1, value.shape[-1])
        objects[key] = torch.gather(value, 1, index)
    objects["valid"] = torch.arange(max_objects) < count[:, None]
    return objects


def _sample_background(generator, n, height, width):
    blobs = 4
    return {
        "colour": _uniform(generator, (n, 3), 0.25, 0.75),
        "stripe_amplitude": _uniform(generator, (n, 3), -0.1, 0.1),
        "stripe_period": _uniform(generator, (n,), 4.0, 16.0),
        "stripe_angle": _uniform(generator, (n,), 0.0, math.pi),
        "stripe_phase": _uniform(generator, (n,), 0.0, 2 * math.pi),
        "blob_x": _uniform(generator, (n, blobs), 0.0, width),
        "blob_y": _uniform(generator, (n, blobs), 0.0, height),
        "blob_sigma": _uniform(generator, (n, blobs), 3.0, 10.0),
        "blob_amplitude": _uniform(generator, (n, blobs, 3), -0.2, 0.2),
        "noise": 0.04 * torch.randn(n, 3, height, width, generator=generator),
    }


def _inside(label_sides, u, v):
    """Which pixels lie inside each shape of circumradius 1, in the shape's own rotated frame.

    ``u, v``: ``[..., H, W]`` coordinates divided by the radius; ``label_sides``: ``[..., 1, 1]``
    number of sides (0 = circle, 5 = star). A regular polygon with ``s`` sides is the set of points whose
    projection on the nearest edge normal is at most ``cos(pi / s)``; folding the polar angle into one
    sector reduces every polygon (and the star's notched outline) to one half-plane test.
    """
    rho = torch.hypot(u, v)
    phi = torch.atan2(v, u)
    circle = rho <= 1.0
    polygons = {}
    for sides in (3, 4):
        sector = 2 * math.pi / sides
        t = torch.remainder(phi - sector / 2, sector)
        t = torch.minimum(t, sector - t)
        polygons[sides] = rho * torch.cos(t) <= math.cos(math.pi / sides)
    # Star: fold onto the sector between a tip (angle 0, radius 1) and a notch (angle pi/5).
    sector = 2 * math.pi / 5
    t = torch.remainder(phi, sector)
    t = torch.minimum(t, sector - t)
    notch_x, notch_y = _STAR_INNER * math.cos(sector / 2), _STAR_INNER * math.sin(sector / 2)
    normal_x, normal_y = notch_y, 1.0 - notch_x  # outward normal of the edge tip -> notch
    star = rho * (normal_x * torch.cos(t) + normal_y * torch.sin(t)) <= normal_x
    return torch.where(
        label_sides == 0,
        circle,
        torch.where(label_sides == 3, polygons[3], torch.where(label_sides == 4, polygons[4], star)),
    )


def _render(objects, background, sides_of_label, height, width, device):
    """Images ``[n, 3, H, W]`` and instance masks ``[n, K, H, W]`` for one chunk of scenes."""
    obj = {k: v.to(device) for k, v in objects.items()}
    bg = {k: v.to(device) for k, v in background.items()}
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, :] + 0.5

    # Background: flat colour + a colour grating + soft blobs.
    angle = bg["stripe_angle"][:, None, None]
    along = xs * torch.cos(angle) + ys * torch.sin(angle)  # [n, H, W]
    phase = bg["stripe_phase"][:, None, None]
    grating = torch.sin(2 * math.pi * along / bg["stripe_period"][:, None, None] + phase)
    image = bg["colour"][:, :, None, None] + bg["stripe_amplitude"][:, :, None, None] * grating[:, None]
    d2 = (xs - bg["blob_x"][..., None, None]) ** 2 + (ys - bg["blob_y"][..., None, None]) ** 2  # [n, B, H, W]
    bumps = torch.exp(-d2 / (2 * bg["blob_sigma"][..., None, None] ** 2))
    image = image + torch.einsum("nbc,nbhw->nchw", bg["blob_amplitude"], bumps)

    # Objects: pixel centres in each object's rotated frame, scaled by its radius.
    def per_object(key):
        return obj[key][..., None, None]  # [n, K, 1, 1]

    dx, dy = xs - per_object("cx"), ys - per_object("cy")
    cos, sin = torch.cos(per_object("angle")), torch.sin(per_object("angle"))
    radius = per_object("radius")
    u, v = (dx * cos + dy * sin) / radius, (-dx * sin + dy * cos) / radius
    sides = sides_of_label.to(device)[obj["label"]][..., None, None]
    masks = _inside(sides, u, v) & per_object("valid")  # [n, K, H, W]

    # Texture: flat, stripes, checkerboard or linear shading, in the object's frame.
    t_angle = per_object("texture_angle")
    period = per_object("texture_period")
    along = (dx * torch.cos(t_angle) + dy * torch.sin(t_angle)) / period
    across = (-dx * torch.sin(t_angle) + dy * torch.cos(t_angle)) / period
    stripes = torch.sin(2 * math.pi * along)
    checker = torch.sign(torch.sin(math.pi * along) * torch.sin(math.pi * across))
    shading = (along * period / radius).clamp(-1, 1)
    kind = per_object("texture")
    pattern = torch.where(
        kind == 0, 0.0, torch.where(kind == 1, stripes, torch.where(kind == 2, checker, shading))
    )
    colour = bg["colour"][:, None, :] + obj["contrast"]  # [n, K, 3]
    paint = colour[..., None, None] + (per_object("texture_amplitude") * pattern)[:, :, None]  # [n, K, 3, H, W]
    covered = masks.any(dim=1, keepdim=True)  # [n, 1, H, W]; masks never overlap, so a sum paints them
    objects_paint = (paint * masks[:, :, None]).sum(dim=1)
    image = torch.where(covered, objects_paint, image) + bg["noise"]
    return image.clamp(0.0, 1.0), masks


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``[..., 4]`` (x1, y1, x2, y2) of binary masks ``[..., H, W]``; an empty mask gives zeros.

    A box covers whole pixels: ``x2 = last column + 1``. (``torchvision.ops.masks_to_boxes`` returns the
    last column itself, one pixel narrower.)
    """
    if not isinstance(masks, torch.Tensor) or masks.dim() < 2:
        raise ValueError(f"masks must be a tensor [..., H, W], got {getattr(masks, 'shape', type(masks))}")
    masks = masks.bool()
    height, width = masks.shape[-2:]
    cols = masks.any(dim=-2)  # [..., W]
    rows = masks.any(dim=-1)  # [..., H]
    x = torch.arange(width, device=masks.device)
    y = torch.arange(height, device=masks.device)
    x1 = torch.where(cols, x, width).amin(dim=-1)
    x2 = torch.where(cols, x + 1, 0).amax(dim=-1)
    y1 = torch.where(rows, y, height).amin(dim=-1)
    y2 = torch.where(rows, y + 1, 0).amax(dim=-1)
    empty = ~cols.any(dim=-1)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1).float()
    return boxes.masked_fill(empty[..., None], 0.0)


def shapes_scenes(
    n: int,
    size=64,
    max_objects: int = 4,
    seed: int = 0,
    device=None,
    classes=CLASS_NAMES[1:],
):
    """``n`` synthetic scenes with 1 to ``max_objects`` non-overlapping shapes each.

    Args:
        n: number of images.
        size: image side in pixels, or ``(height, width)``; at least 32.
        max_objects: most objects per image (each image draws its count uniformly in ``1..max_objects``;
            a crowded image may hold fewer when no free place is found).
        seed: the scenes are a pure function of ``(n, size, max_objects, seed, classes)``; the first
            scenes of a larger ``n`` differ from a smaller ``n`` (draws are batched over images).
        device: where the tensors are created (default CPU).
        classes: names of the shapes to draw, a subset of ``("circle", "square", "triangle", "star")``;
            ``classes[k]`` gets label ``k + 1``.

    Returns:
        ``images`` ``[n, 3, H, W]`` float32 in [0, 1] and ``targets``, a list of ``n`` dicts with
        ``boxes`` ``[K, 4]`` float32 (x1, y1, x2, y2), ``labels`` ``[K]`` int64 in ``1..len(classes)``
        and ``masks`` ``[K, H, W]`` uint8, all on ``device``.
    """
    positive_int("n", n)
    height, width = pair("size", size, minimum=32)
    positive_int("max_objects", max_objects)
    if max_objects > 8:
        raise ValueError(f"max_objects must be at most 8 to fit without overlap, got {max_objects}")
    nonneg_int("seed", seed)
    if (
        isinstance(classes, str)
        or not classes
        or any(c not in _SIDES for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ValueError(f"classes must be distinct names from {tuple(_SIDES)}, got {classes!r}")
    device = torch.device("cpu") if device is None else torch.device(device)

    generator = torch.Generator().manual_seed(seed)
    objects = _sample_objects(generator, n, height, width, max_objects, len(classes))
    background = _sample_background(generator, n, height, width)
    sides_of_label = torch.tensor([0] + [_SIDES[c] for c in classes])

    images, masks = [], []
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        chunk_images, chunk_masks = _render(
            {k: v[part] for k, v in objects.items()},
            {k: v[part] for k, v in background.items()},
            sides_of_label,
            height,
            width,
            device,
        )
        images.append(chunk_images)
        masks.append(chunk_masks)
    images, masks = torch.cat(images), torch.cat(masks)
    boxes = masks_to_boxes(masks)  # [n, K, 4]
    labels = objects["label"].to(device)
    counts = objects["valid"].sum(dim=1).tolist()
    targets = [
        {"boxes": boxes[i, :k], "labels": labels[i, :k], "masks": masks[i, :k].to(torch.uint8)}
        for i, k in enumerate(counts)
    ]
    return images, targets


def semantic_masks(targets, size) -> torch.Tensor:
    """Per-pixel class labels ``[N, H, W]`` int64 from instance targets (0 = background).

    ``targets``: a list of ``N`` dicts with ``masks`` ``[K, H, W]`` and ``labels`` ``[K]``; ``size``: ``H`` or
    ``(H, W)`` (needed when a list holds no object at all). Where masks overlap, the later object wins,
    as if the objects were painted in order (shapes scenes never overlap, so the order does not matter
    there).
    """
    height, width = pair("size", size)
    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, dict) for t in targets):
        raise ValueError(
            f"targets must be a list of dicts with 'masks' and 'labels', got {type(targets).__name__}"
        )
    if not targets:
        raise ValueError("targets must hold at least one image, got an empty list")
    for i, t in enumerate(targets):
        if "masks" not in t or "labels" not in t or t["masks"].shape[-2:] != (height, width):
            raise ValueError(
                f"targets[{i}] must have 'masks' [K, {height}, {width}] and 'labels' [K], "
                f"got keys {sorted(t)} with masks shape {tuple(t['masks'].shape) if 'masks' in t else None}"
            )
    device = targets[0]["masks"].device
    all_masks = torch.cat([t["masks"].bool().reshape(-1, height * width) for t in targets])  # [M, H*W]
    background = torch.zeros(1, dtype=torch.int64, device=device)
    all_labels = torch.cat([background] + [t["labels"].long() for t in targets])
    counts = torch.tensor([len(t["labels"]) for t in targets], device=device)
    image_of = torch.repeat_interleave(torch.arange(len(targets), device=device), counts)
    # Object m (counting from 1 across the list) paints m; later objects have larger numbers, so the
    # per-pixel maximum is the last object painted there.
    number = torch.arange(1, all_masks.shape[0] + 1, device=device)[:, None] * all_masks
    painted = torch.zeros(len(targets), height * width, dtype=torch.int64, device=device)
    painted.scatter_reduce_(0, image_of[:, None].expand_as(number), number, reduce="amax")
    return all_labels[painted].reshape(len(targets), height, width)
