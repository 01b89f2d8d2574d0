"""Natural-image classes for transfer learning, cut from photos that ship with scikit-image and
scikit-learn (no download): ten kinds of surface, each from one real photo.

====== ======================================= =========================================
class  source photo                            what a crop shows
====== ======================================= =========================================
brick  ``skimage.data.brick()``                a brick wall
grass  ``skimage.data.grass()``                blades of grass
gravel ``skimage.data.gravel()``               gravel stones
fur    ``skimage.data.chelsea()`` (the cat)    fur, an eye, whiskers
petals ``sklearn`` ``flower.jpg`` (a dahlia)   the flower's petals
tissue ``skimage.data.immunohistochemistry()`` stained tissue under a microscope
stars  ``skimage.data.hubble_deep_field()``    galaxies on a black sky
coins  ``skimage.data.coins()``                old coins on a plain background
moon   ``skimage.data.moon()``                 the lunar surface
text   ``skimage.data.page()``                 a printed page
====== ======================================= =========================================

Every photo is turned grey (the ITU-R 601 luminance, repeated in three channels so that RGB networks
take it) so that the classes differ in texture and shape, not in colour: the average colour alone
would tell several of them apart. A rectangle of the photo that shows the class (the dahlia without its
dark background, the cat without the wall) is resized by a factor chosen per class, so that a 64-pixel
tile shows a useful amount of the surface.

**The split.** Each prepared photo is cut into a grid of non-overlapping 64x64 tiles (:data:`TILE`);
a seeded permutation sends a quarter of the tiles (at least one) to the test set and the rest to the
training set. A crop lies inside one tile, so **no pixel of a test crop is in any training crop**:
crops of the two sets come from disjoint regions of the photo. Within its tile a crop is a random
square of 70-100% of the tile's side at a random position, resized to ``size`` (bilinear, averaging
several samples per output pixel when shrinking). The ``i``-th crop of a set uses that set's tile
``i mod (number of tiles)``, so the first crops all come from different tiles. The seed decides the
split and the crops; the same seed gives the same tensors on every device.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

import torch
import torch.nn.functional as F

from ..validate import nonneg_int, positive_int

__all__ = ["CLASSES", "TILE", "texture_sources", "texture_split", "texture_crops", "take_per_class"]

#: The side of a tile of the split, in pixels of the prepared photo.
TILE = 64
_TEST_FRACTION = 0.25
_MIN_SIDE = 0.7  # a crop's side is 70-100% of its tile's

# class: (loader, (top, bottom, left, right) as fractions of the photo, resize factor)
_SOURCES = {
    "brick": ("brick", (0.0, 1.0, 0.0, 1.0), 1.0),
    "grass": ("grass", (0.0, 1.0, 0.0, 1.0), 1.0),
    "gravel": ("gravel", (0.0, 1.0, 0.0, 1.0), 1.0),
    "fur": ("chelsea", (0.0, 1.0, 0.13, 1.0), 1.5),
    "petals": ("flower", (0.21, 0.77, 0.28, 0.63), 2.0),
    "tissue": ("immunohistochemistry", (0.0, 1.0, 0.0, 1.0), 1.0),
    "stars": ("hubble_deep_field", (0.0, 1.0, 0.0, 1.0), 0.6),
    "coins": ("coins", (0.0, 1.0, 0.0, 1.0), 1.2),
    "moon": ("moon", (0.0, 1.0, 0.0, 1.0), 1.0),
    "text": ("page", (0.0, 1.0, 0.0, 1.0), 1.5),
}

#: The class names; label ``k`` is ``CLASSES[k]``.
CLASSES = tuple(_SOURCES)


def _load(loader: str) -> torch.Tensor:
    """One photo as ``[H, W]`` float32 grey in [0, 1]; only files shipped inside the packages."""
    if loader == "flower":
        # The file load_sample_images() reads, opened directly: importing sklearn.datasets takes seconds.
        from PIL import Image

        folder = importlib.util.find_spec("sklearn").submodule_search_locations[0]
        with Image.open(Path(folder) / "datasets" / "images" / "flower.jpg") as file:
            array = np.asarray(file.convert("RGB"))
    else:
        import skimage.data

        array = getattr(skimage.data, loader)()
    image = torch.tensor(array, dtype=torch.float32) / 255.0
    if image.dim() == 3:
        image = image[..., :3] @ torch.tensor([0.299, 0.587, 0.114])
    return image


@functools.lru_cache(maxsize=1)
def _prepared() -> dict:
    sources = {}
    for name, (loader, (top, bottom, left, right), scale) in _SOURCES.items():
        image = _load(loader)
        h, w = image.shape
        region = image[round(top * h) : round(bottom * h), round(left * w) : round(right * w)]
        if scale != 1.0:
            region = F.interpolate(region[None, None], scale_factor=scale, mode="bilinear", antialias=True,
                                   align_corners=False)[0, 0].clamp(0, 1)
        sources[name] = region.contiguous()
    return sources


def texture_sources() -> dict:
    """The prepared photo of each class, ``{name: [H, W] float32 grey in [0, 1]}`` (CPU), in
    :data:`CLASSES` order; the tiles of :func:`texture_split` cover it from the top-left corner."""
    return {name: image.clone() for name, image in _prepared().items()}


def _grid(image: torch.Tensor) -> tuple[int, int]:
    return image.shape[0] // TILE, image.shape[1] // TILE


def texture_split(seed: int = 0) -> dict:
    """Which tiles of each prepared photo are test tiles: ``{name: [rows, cols] bool}`` (True = test).

    Deterministic for ``seed``: the same seed as :func:`texture_crops` gives that call's split.
    """
    nonneg_int("seed", seed)
    generator = torch.Generator().manual_seed(seed)
    split = {}
    for name, image in _prepared().items():
        rows, cols = _grid(image)
        test = torch.zeros(rows * cols, dtype=torch.bool)
        test[torch.randperm(rows * cols, generator=generator)[: max(1, round(_TEST_FRACTION * rows * cols))]] = True
        split[name] = test.view(rows, cols)
    return split


def _crop_boxes(tiles: torch.Tensor, cols: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``[count, 4]`` boxes ``(x1, y1, x2, y2)``: the ``i``-th a random square inside tile ``tiles[i % len]``."""
    tile = tiles[torch.arange(count) % len(tiles)]
    side = TILE * (_MIN_SIDE + (1 - _MIN_SIDE) * torch.rand(count, generator=generator))
    offset = torch.rand(count, 2, generator=generator) * (TILE - side)[:, None]
    x1 = (tile % cols) * TILE + offset[:, 0]
    y1 = torch.div(tile, cols, rounding_mode="floor") * TILE + offset[:, 1]
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def texture_crops(n_train: int = 48, n_test: int = 32, size: int = 64, seed: int = 0, device=None):
    """``(x_train, y_train, x_test, y_test)``: ``n_train`` training and ``n_test`` test crops of each of
    the ten classes of :data:`CLASSES`, split by region (see the module docstring).

    ``x`` is ``[10 * n, 3, size, size]`` float32 in [0, 1] (grey, three equal channels), ``y`` is
    ``[10 * n]`` int64, class-major (all crops of class 0, then class 1, ...). Crops are cut on
    ``device`` (``None``: the CPU) with ``torchvision.ops.roi_align`` from boxes drawn by one seeded CPU
    generator, so the same ``seed`` gives the same crops everywhere.
    """
    from torchvision.ops import roi_align

    positive_int("n_train", n_train)
    positive_int("n_test", n_test)
    positive_int("size", size)
    split = texture_split(seed)
    generator = torch.Generator().manual_seed(seed + 1)  # not the split's stream: crops change, tiles stay
    target = torch.device("cpu") if device is None else torch.device(device)
    xs = {"train": [], "test": []}
    for image, test in zip(_prepared().values(), split.values()):
        source = image.to(target)[None, None]
        cols = test.shape[1]
        for part, count, tiles in (("train", n_train, (~test).flatten().nonzero().flatten()),
                                   ("test", n_test, test.flatten().nonzero().flatten())):
            boxes = _crop_boxes(tiles, cols, count, generator).to(target)
            rois = torch.cat([torch.zeros(count, 1, device=target), boxes], dim=1)
            crops = roi_align(source, rois, output_size=(size, size), sampling_ratio=-1, aligned=True)
            xs[part].append(crops.clamp(0, 1).expand(-1, 3, -1, -1))
    labels = torch.arange(len(CLASSES), device=target)
    return (torch.cat(xs["train"]), labels.repeat_interleave(n_train),
            torch.cat(xs["test"]), labels.repeat_interleave(n_test))


def take_per_class(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` examples of every class in ``labels`` ``[N]`` (int), chosen at random
    by ``seed`` without replacement: ``[num_classes * per_class]`` int64 on ``labels``' device, class by
    class. How a "k labelled images per class" experiment picks its training set. For one ``seed`` the
    picks are nested: asking for more per class keeps the ones a smaller number picked.
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-D integer tensor, got {getattr(labels, 'shape', type(labels))}")
    positive_int("per_class", per_class)
    nonneg_int("seed", seed)
    generator = torch.Generator().manual_seed(seed)
    cpu = labels.cpu()
    picks = []
    for k in cpu.unique().tolist():
        members = (cpu == k).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(f"per_class must be at most {len(members)} (the examples of class {k}), got {per_class}")
        picks.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(picks).to(labels.device)
