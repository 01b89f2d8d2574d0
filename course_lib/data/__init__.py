"""Datasets that need no network: real data shipped inside dependencies, and synthetic generators.

- :func:`digits`: scikit-learn's 1,797 handwritten digits (8x8, real scans), split and as tensors.
- :func:`photo`: scikit-image's sample photos (``astronaut``, ``chelsea``, ``coffee``, ...).
- :func:`lfw_patches`: scikit-image's ``lfw_subset``: 100 face and 100 non-face 25x25 patches.
- :mod:`course_lib.data.shapes`: synthetic scenes with boxes and masks (detection, segmentation).
- :mod:`course_lib.data.textures`: ten natural-surface classes cut from the shipped photos, split by
  region (transfer learning).
- :mod:`course_lib.data.figures`: synthetic articulated figures with 14 keypoints and visibility (pose).
- :mod:`course_lib.data.identities`: synthetic faces of thousands of identities with attributes and eye
  positions (faces).

The generators are deterministic for a seed and draw directly on the requested device; import them as
modules (``from course_lib.data import figures``).
"""
from __future__ import annotations

import torch

__all__ = ["digits", "photo", "PHOTOS", "lfw_patches", "to_device"]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "immunohistochemistry")


def _split(gen: torch.Generator, n: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    order = torch.randperm(n, generator=gen)
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]


def to_device(device, *tensors):
    """Move tensors to ``device`` (``None`` keeps them on the CPU)."""
    return tensors if device is None else tuple(t.to(device) for t in tensors)


def digits(test_fraction: float = 0.25, seed: int = 0, size: int = 8, device=None):
    """scikit-learn's handwritten digits as ``(x_train, y_train, x_test, y_test)``.

    ``x`` is ``[N, 1, size, size]`` float32 in [0, 1] (the 8x8 originals, bilinearly resized when
    ``size != 8``), ``y`` is ``[N]`` int64 in 0..9. The split is stratified by nothing but a seeded
    shuffle; 1,797 images in all.
    """
    from sklearn.datasets import load_digits

    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    train, test = _split(torch.Generator().manual_seed(seed), len(y), test_fraction)
    return to_device(device, x[train], y[train], x[test], y[test])


def photo(name: str = "chelsea", size=None, grey: bool = False, device=None) -> torch.Tensor:
    """One of scikit-image's sample photos as a ``[C, H, W]`` float32 tensor in [0, 1].

    ``size`` (int or (h, w)) resizes with antialiasing; ``grey=True`` gives one channel (luminance).
    """
    import skimage.data

    if name not in PHOTOS:
        raise ValueError(f"name must be one of {PHOTOS}, got {name!r}")
    array = getattr(skimage.data, name)()
    img = torch.tensor(array, dtype=torch.float32) / 255.0
    img = img.permute(2, 0, 1) if img.dim() == 3 else img.unsqueeze(0)
    if grey and img.shape[0] == 3:
        img = (img * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    if size is not None:
        from ..validate import pair

        h, w = pair("size", size)
        img = torch.nn.functional.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    (img,) = to_device(device, img.clamp(0, 1))
    return img


def lfw_patches(device=None):
    """scikit-image's ``lfw_subset``: ``(x [200, 1, 25, 25] float32 in [0, 1], y [200] int64)``,
    with ``y = 1`` for the 100 faces and 0 for the 100 non-face patches."""
    import skimage.data

    x = torch.tensor(skimage.data.lfw_subset(), dtype=torch.float32).unsqueeze(1)
    y = torch.cat([torch.ones(100, dtype=torch.int64), torch.zeros(100, dtype=torch.int64)])
    return to_device(device, x, y)
