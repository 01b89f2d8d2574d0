"""Lecture 08: human pose estimation with keypoint heatmaps.

A pose is a set of keypoints, one ``(x, y)`` per joint. Instead of asking a network for the numbers
directly, the heatmap approach turns each joint into an *image*: a target map per joint that is 1 on a
disk of radius ``r`` around the joint and 0 elsewhere (:func:`disk_heatmaps`; :func:`gaussian_heatmaps`
is the smooth variant). Predicting ``K`` such maps is a segmentation problem with ``K`` binary
channels, so the encoder-decoder of lecture 07 (:class:`course_lib.segmentation.UNet` with one output
channel per joint) becomes a keypoint detector by changing only its targets and its loss: a per-pixel
binary cross-entropy whose positive pixels (the disks, a fraction of a percent of the image) get a
large weight (:func:`heatmap_loss`).

A predicted map is turned back into a point by a *decoder*: the first maximal pixel
(:func:`decode_argmax`), the centre of the maximal region (:func:`decode_heatmaps`, exact on flat-topped
maps such as disk targets or saturated predictions) or a softmax-weighted mean of the pixel
coordinates (:func:`soft_argmax`). Predictions are scored with the field's metric, PCK
(:func:`pck`, :func:`pck_curve`): the fraction of visible joints found within a threshold that scales
with each figure's size (:func:`torso_size`). :class:`CoordinateRegressor` is the alternative the
lecture compares against: a CNN whose fully connected head outputs the ``2K`` coordinates directly.

Coordinates: ``(x, y)`` in pixels with the centre of pixel ``map[..., i, j]`` at ``x = j, y = i``.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .data.figures import JOINTS
from .progress import progress as progress_bar
from .runtime import device as default_device
from .train import batches, evaluating
from .validate import floating, positive_int, same_device

__all__ = [
    "disk_heatmaps",
    "gaussian_heatmaps",
    "decode_heatmaps",
    "decode_argmax",
    "soft_argmax",
    "DECODERS",
    "decode_predictions",
    "pck",
    "pck_curve",
    "torso_size",
    "heatmap_loss",
    "CoordinateRegressor",
    "train_keypoints",
]


def _number(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {relation} {minimum}, got {value!r}")
    return float(value)


def _keypoints(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() < 2 or value.shape[-1] != 2:
        raise ValueError(f"{name} must be a tensor [..., K, 2] of (x, y) pixels, got {getattr(value, 'shape', type(value))}")
    return floating(name, value)


def _heatmaps(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() < 3 or value.shape[-1] == 0 or value.shape[-2] == 0:
        raise ValueError(f"{name} must be a tensor [..., K, H, W] with H, W >= 1, got {getattr(value, 'shape', type(value))}")
    return floating(name, value)


def _squared_distances(keypoints, height, width):
    """``[..., K, H, W]`` squared distance from every pixel centre to each keypoint."""
    xs = torch.arange(width, device=keypoints.device, dtype=keypoints.dtype)
    ys = torch.arange(height, device=keypoints.device, dtype=keypoints.dtype)
    dx2 = (xs - keypoints[..., 0, None]) ** 2  # [..., K, W]
    dy2 = (ys - keypoints[..., 1, None]) ** 2  # [..., K, H]
    return dy2[..., :, None] + dx2[..., None, :]


def disk_heatmaps(keypoints: torch.Tensor, height: int, width: int, radius: float) -> torch.Tensor:
    """Disk targets: ``[..., K, 2]`` keypoints ``(x, y)`` -> ``[..., K, H, W]`` maps in the keypoints' dtype.

    ``1.0`` at every pixel whose centre ``(px, py)`` (integers) satisfies ``(px - x)^2 + (py - y)^2 <= r^2``,
    a disk of *radius* ``r`` with its rim included, else ``0.0``. Joints may be sub-pixel and may lie
    outside the image (their disk is cut by the border, or empty).
    """
    _keypoints("keypoints", keypoints)
    positive_int("height", height)
    positive_int("width", width)
    radius = _number("radius", radius)
    return (_squared_distances(keypoints, height, width) <= radius**2).to(keypoints.dtype)


def gaussian_heatmaps(keypoints: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Gaussian targets: ``[..., K, 2]`` -> ``[..., K, H, W]``, ``exp(-d^2 / (2 sigma^2))`` with ``d`` the
    distance from the pixel centre to the joint (1.0 at the joint, falling smoothly)."""
    _keypoints("keypoints", keypoints)
    positive_int("height", height)
    positive_int("width", width)
    sigma = _number("sigma", sigma, strict=True)
    return torch.exp(-_squared_distances(keypoints, height, width) / (2 * sigma**2))


def _pixel_grid(heatmaps):
    height, width = heatmaps.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, device=heatmaps.device, dtype=heatmaps.dtype),
                            torch.arange(width, device=heatmaps.device, dtype=heatmaps.dtype), indexing="ij")
    return xs.flatten(), ys.flatten()  # row-major, like heatmaps.flatten(-2)


def decode_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Centre of the maximal region: ``[..., K, H, W]`` -> ``[..., K, 2]`` ``(x, y)`` in the maps' dtype.

    The maximal region of a map is the set of pixels holding exactly its maximum value; the result
    is the mean of their ``(x, y)`` coordinates. A map with one highest pixel decodes to that pixel. A
    flat-topped map (a disk target, a prediction clamped at a level) decodes to the centre of its
    plateau, so ``decode_heatmaps(disk_heatmaps(kp, H, W, r)) == kp`` for integer ``kp`` whose disk
    lies inside the image; for sub-pixel ``kp`` the result is the centroid of the pixel centres in the
    disk, which for ``r >= 0.75`` lies less than half a pixel from ``kp`` along each axis (about a tenth
    of a pixel on average). Two separate plateaus of the same height decode to the point between them,
    and a constant map to the centre of the image.
    """
    _heatmaps("heatmaps", heatmaps)
    xs, ys = _pixel_grid(heatmaps)
    flat = heatmaps.flatten(-2)
    at_max = (flat == flat.amax(dim=-1, keepdim=True)).to(heatmaps.dtype)
    count = at_max.sum(dim=-1)
    return torch.stack([(at_max * xs).sum(dim=-1) / count, (at_max * ys).sum(dim=-1) / count], dim=-1)


def decode_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """The first maximal pixel (row-major order): ``[..., K, H, W]`` -> ``[..., K, 2]`` ``(x, y)``.

    Exact for a map with one highest pixel; on a plateau it returns the plateau's top-left-most pixel
    (for a disk, its topmost pixel: ``r`` above the joint).
    """
    _heatmaps("heatmaps", heatmaps)
    width = heatmaps.shape[-1]
    index = heatmaps.flatten(-2).argmax(dim=-1)
    return torch.stack([index % width, torch.div(index, width, rounding_mode="floor")], dim=-1).to(heatmaps.dtype)


def soft_argmax(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Expected pixel coordinates under ``softmax(beta * map)``: ``[..., K, H, W]`` -> ``[..., K, 2]``.

    Differentiable and sub-pixel. Applied to logits with ``beta = 1`` it averages over the network's
    own distribution; every pixel gets some weight, so probability mass far from the peak (a second
    candidate, or thousands of background pixels with small scores) pulls the result towards it.
    """
    _heatmaps("heatmaps", heatmaps)
    beta = _number("beta", beta, strict=True)
    xs, ys = _pixel_grid(heatmaps)
    weights = torch.softmax(beta * heatmaps.flatten(-2), dim=-1)
    return torch.stack([(weights * xs).sum(dim=-1), (weights * ys).sum(dim=-1)], dim=-1)


#: The decoders :func:`decode_predictions` offers, by name.
DECODERS = ("argmax", "centre", "soft-argmax")
SATURATION = 0.99  # "centre" counts every probability above this as the maximum


def decode_predictions(logits: torch.Tensor, decoder: str = "argmax") -> torch.Tensor:
    """Keypoints ``[..., K, 2]`` from a heatmap network's logits ``[..., K, H, W]``, read by one of
    :data:`DECODERS`: ``"argmax"``, the highest pixel (:func:`decode_argmax`); ``"centre"``, the centre
    of the maximal region of the probabilities ``sigmoid(logits)`` saturated at ``SATURATION`` = 0.99, so
    that every pixel the network is sure about counts as maximal (:func:`decode_heatmaps`);
    ``"soft-argmax"``, the expected position under ``softmax(logits)`` (:func:`soft_argmax`)."""
    _heatmaps("logits", logits)
    if decoder == "argmax":
        return decode_argmax(logits)
    if decoder == "centre":
        return decode_heatmaps(torch.sigmoid(logits).clamp(max=SATURATION))
    if decoder == "soft-argmax":
        return soft_argmax(logits)
    raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")


def _check_pck(pred, gt, normalizer, visible):
    _keypoints("pred", pred)
    _keypoints("gt", gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    same_device(pred=pred, gt=gt, visible=visible, normalizer=normalizer if isinstance(normalizer, torch.Tensor) else None)
    if isinstance(normalizer, torch.Tensor) and normalizer.dim() > 0:
        if normalizer.shape != gt.shape[:-2]:
            raise ValueError(f"normalizer must be a number or one value per figure, shape {tuple(gt.shape[:-2])}, "
                             f"got shape {tuple(normalizer.shape)}")
        if not bool((normalizer > 0).all()):
            raise ValueError(f"normalizer must be positive, got a smallest value of {float(normalizer.min())}")
        normalizer = normalizer.to(pred.dtype)
    else:
        normalizer = torch.tensor(_number("normalizer", normalizer, strict=True), dtype=pred.dtype, device=pred.device)
    if visible is not None:
        if not isinstance(visible, torch.Tensor) or visible.dtype != torch.bool or visible.shape != gt.shape[:-1]:
            raise ValueError(f"visible must be None or a bool tensor of shape {tuple(gt.shape[:-1])}, "
                             f"got {getattr(visible, 'dtype', type(visible))} {tuple(getattr(visible, 'shape', ()))}")
    return normalizer


def pck(pred: torch.Tensor, gt: torch.Tensor, threshold: float, normalizer, visible=None) -> torch.Tensor:
    """Percentage of correct keypoints, as a fraction: a 0-d tensor in ``pred``'s dtype.

    ``pred``, ``gt``: ``[..., K, 2]`` ``(x, y)``; ``normalizer``: a positive number (or 0-d tensor) for all
    figures, or a tensor ``[...]`` with one value per figure (its torso size, say); ``visible``: ``None``
    (every joint counts) or a bool tensor ``[..., K]``. A joint is correct when its distance to the
    ground truth is at most ``threshold * normalizer`` of its figure; the result is the number of
    correct visible joints over the number of visible joints (NaN when none is visible).
    """
    normalizer = _check_pck(pred, gt, normalizer, visible)
    threshold = _number("threshold", threshold)
    distance = torch.linalg.vector_norm(pred - gt, dim=-1)  # [..., K]
    correct = distance <= threshold * normalizer.unsqueeze(-1)
    counted = torch.ones_like(correct) if visible is None else visible
    return (correct & counted).sum().to(pred.dtype) / counted.sum().to(pred.dtype)


def pck_curve(pred: torch.Tensor, gt: torch.Tensor, thresholds: torch.Tensor, normalizer, visible=None) -> torch.Tensor:
    """PCK per threshold and per joint: ``[T, K]``, entry ``(t, k)`` the fraction of figures whose
    (visible) joint ``k`` lies within ``thresholds[t] * normalizer`` of the ground truth (NaN for a
    joint visible in no figure). Arguments as in :func:`pck`, with ``thresholds`` a 1-D tensor."""
    normalizer = _check_pck(pred, gt, normalizer, visible)
    if not isinstance(thresholds, torch.Tensor) or thresholds.dim() != 1:
        raise ValueError(f"thresholds must be a 1-D tensor, got {getattr(thresholds, 'shape', type(thresholds))}")
    relative = torch.linalg.vector_norm(pred - gt, dim=-1) / normalizer.unsqueeze(-1)  # [..., K]
    relative = relative.reshape(-1, relative.shape[-1])
    counted = torch.ones_like(relative, dtype=torch.bool) if visible is None else visible.reshape(relative.shape)
    correct = (relative <= thresholds.to(relative)[:, None, None]) & counted  # [T, figures, K]
    return correct.sum(dim=1).to(pred.dtype) / counted.sum(dim=0).to(pred.dtype)


def torso_size(keypoints: torch.Tensor) -> torch.Tensor:
    """``[..., K, 2]`` keypoints of :mod:`course_lib.data.figures` -> ``[...]`` distance from the neck to
    the midpoint of the hips, the size PCK thresholds are measured in."""
    _keypoints("keypoints", keypoints)
    if keypoints.shape[-2] != len(JOINTS):
        raise ValueError(f"keypoints must hold the {len(JOINTS)} joints of JOINTS, got shape {tuple(keypoints.shape)}")
    neck = keypoints[..., JOINTS.index("neck"), :]
    pelvis = (keypoints[..., JOINTS.index("left_hip"), :] + keypoints[..., JOINTS.index("right_hip"), :]) / 2
    return torch.linalg.vector_norm(neck - pelvis, dim=-1)


def heatmap_loss(logits: torch.Tensor, targets: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Per-pixel binary cross-entropy of ``logits`` against ``targets`` (both ``[N, K, H, W]``), averaged
    over pixels, each positive pixel's term multiplied by ``pos_weight``. With disks covering a
    fraction ``f`` of the pixels, ``pos_weight = (1 - f) / f`` gives disks and background equal total weight."""
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor) or logits.shape != targets.shape:
        raise ValueError(f"logits and targets must be tensors of the same shape, got "
                         f"{tuple(getattr(logits, 'shape', ()))} and {tuple(getattr(targets, 'shape', ()))}")
    pos_weight = _number("pos_weight", pos_weight, strict=True)
    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=weight)


def _conv_block(in_channels, out_channels):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class CoordinateRegressor(nn.Module):
    """Direct regression of keypoints: four conv stages (3x3 conv, batch norm, ReLU, 2x2 max pooling;
    ``width`` channels doubling) shrink a ``size x size`` image to ``size/16 x size/16``, and a fully
    connected head maps the flattened features to ``2K`` numbers.

    ``[N, 3, size, size]`` -> ``[N, K, 2]`` ``(x, y)`` in pixels; an untrained net answers the image
    centre for every joint.
    """

    def __init__(self, num_joints: int = len(JOINTS), size: int = 64, width: int = 16, hidden: int = 256):
        super().__init__()
        for name, value in (("num_joints", num_joints), ("size", size), ("width", width), ("hidden", hidden)):
            positive_int(name, value)
        if size % 16:
            raise ValueError(f"size must be divisible by 16, got {size}")
        self.num_joints, self.size = num_joints, size
        widths = [3, width, 2 * width, 4 * width, 8 * width]
        self.features = nn.Sequential(*[_conv_block(a, b) for a, b in zip(widths, widths[1:])])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * (size // 16) ** 2, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 2 * num_joints))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"x must be [N, C, {self.size}, {self.size}], got shape {tuple(x.shape)}")
        offsets = self.head(self.features(x)).view(-1, self.num_joints, 2)
        return (self.size - 1) / 2 + offsets * (self.size / 2)  # outputs in units of half the image


def train_keypoints(model: nn.Module, images: torch.Tensor, keypoints: torch.Tensor, loss_fn, targets=None,
                    epochs: int = 10, lr: float = 1e-3, batch_size: int = 32, weight_decay: float = 0.0,
                    seed: int = 0, device=None, evaluate=None, progress: bool = True, desc: str = "training") -> dict:
    """Train ``model`` to predict keypoints and return ``{"loss": [...], "seconds": [...], "metric": [...]}``,
    one entry per epoch.

    Each step computes ``loss_fn(model(x), targets(kp))`` for a shuffled batch of ``images``
    ``[N, 3, H, W]`` and their ``keypoints`` ``[N, K, 2]``; ``targets`` turns a batch of keypoints into
    what the model should output (e.g. ``lambda kp: disk_heatmaps(kp, H, W, r)``; ``None`` means the
    keypoints themselves), so large target maps are never stored. AdamW with a cosine learning-rate
    schedule to zero, as in :func:`course_lib.train.fit`; ``seed`` fixes the shuffling. ``evaluate``, if
    given, is called with the model (in eval mode, without gradients) after every epoch and its number is
    recorded under ``"metric"`` (say, PCK on held-out figures).
    """
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    _number("lr", lr, strict=True)
    if len(images) != len(keypoints):
        raise ValueError(f"images and keypoints must be as many, got {len(images)} and {len(keypoints)}")
    dev = torch.device(device) if device is not None else default_device()
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    history = {"loss": [], "seconds": [], "metric": []}
    bar = progress_bar(total=epochs, desc=desc, unit="epochs", enabled=progress)
    model.train()
    for _ in range(epochs):
        start, total, count = time.perf_counter(), 0.0, 0
        for x, kp in batches((images, keypoints), batch_size, shuffle=True, generator=generator):
            x, kp = x.to(dev), kp.to(dev)
            loss = loss_fn(model(x), kp if targets is None else targets(kp))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
        history["loss"].append(total / count)
        history["seconds"].append(time.perf_counter() - start)
        postfix = {"loss": f"{history['loss'][-1]:.4f}"}
        if evaluate is not None:
            with evaluating(model), torch.no_grad():
                history["metric"].append(float(evaluate(model)))
            postfix["metric"] = f"{history['metric'][-1]:.3f}"
        bar.set_postfix(postfix)
        bar.update()
    bar.close()
    model.eval()
    return history
