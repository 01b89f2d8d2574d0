"""A small embedding CNN, and how to train it as a classifier (DeepFace) or with triplets (FaceNet).

DeepFace (Taigman et al., 2014) trains a network to *classify* the 4,030 people of its training set,
then throws the classifier away: the layer before it is a description of a face that generalises to
people the network never saw, and two faces are compared by the distance between their descriptions.
FaceNet (Schroff et al., 2015) trains the description itself: a triplet loss pulls images of one person
together and pushes other people away, directly in the space where distances are measured.

:class:`EmbeddingNet` serves both: three conv stages and a linear layer give the embedding; with
``num_classes`` it also has a linear classifier on top (train it with :func:`course_lib.train.fit`).
:func:`train_embedding` trains it with a triplet loss on batches of ``P`` identities x ``K`` images,
with random or batch-hard triplets.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import Progress
from ..runtime import device as default_device
from ..train import evaluating
from ..validate import positive_int, tensor_rank
from .losses import batch_hard_triplets, random_triplets

__all__ = ["EmbeddingNet", "embed", "identity_batches", "train_embedding"]


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class EmbeddingNet(nn.Module):
    """Images ``[N, C, S, S]`` to embeddings ``[N, embedding_dim]`` (or logits, with ``num_classes``).

    Three conv stages (3x3 conv, batch norm, ReLU, 2x2 max pooling; ``width``, ``2 * width``,
    ``4 * width`` channels) and a linear layer. The final layer keeps *where* things are (no global
    pooling): on aligned faces, position is information. :meth:`embed` returns the embedding, scaled to
    unit length when ``normalize`` (FaceNet's choice; Hermans et al. train from scratch without it);
    ``forward`` returns the same, or, with ``num_classes``, the logits of a linear classifier over the
    un-normalised embedding (DeepFace's penultimate layer).
    """

    def __init__(self, embedding_dim: int = 64, num_classes: int | None = None, width: int = 16, image_size: int = 32,
                 in_channels: int = 3, normalize: bool = True):
        super().__init__()
        self.normalize = normalize
        positive_int("embedding_dim", embedding_dim)
        positive_int("width", width)
        positive_int("in_channels", in_channels)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be True or False, got {normalize!r}")
        if positive_int("image_size", image_size) % 8:
            raise ValueError(f"image_size must be a multiple of 8 (three 2x2 poolings), got {image_size}")
        if num_classes is not None:
            positive_int("num_classes", num_classes)
        self.features = nn.Sequential(
            _stage(in_channels, width), _stage(width, 2 * width), _stage(2 * width, 4 * width),
            nn.Flatten(), nn.Linear(4 * width * (image_size // 8) ** 2, embedding_dim),
        )
        self.classifier = nn.Linear(embedding_dim, num_classes) if num_classes is not None else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[N, embedding_dim]`` (unit length when ``normalize``)."""
        e = self.features(x)
        return F.normalize(e, dim=1) if self.normalize else e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            return self.embed(x)
        return self.classifier(self.features(x))


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model.embed`` of ``images [N, C, H, W]`` in eval mode, without gradients, batch by batch, on
    the model's device: ``[N, D]``."""
    tensor_rank("images", images, 4)
    positive_int("batch_size", batch_size)
    dev = next(model.parameters()).device
    with evaluating(model):
        return torch.cat([model.embed(images[i : i + batch_size].to(dev)) for i in range(0, len(images), batch_size)])


def identity_batches(identity: torch.Tensor, identities_per_batch: int, images_per_identity: int,
                     generator: torch.Generator):
    """An endless stream of index batches ``[P * K]`` (int64, CPU): ``P = identities_per_batch`` random
    identities, ``K = images_per_identity`` random images of each, consecutive. Only identities with at
    least ``K`` images take part."""
    tensor_rank("identity", identity, 1)
    positive_int("identities_per_batch", identities_per_batch)
    positive_int("images_per_identity", images_per_identity)
    labels = identity.cpu()
    _, inverse, counts = labels.unique(return_inverse=True, return_counts=True)
    order = inverse.argsort(stable=True)
    starts = torch.cumsum(counts, 0) - counts
    usable = torch.nonzero(counts >= images_per_identity).flatten()
    if len(usable) < identities_per_batch:
        raise ValueError(f"identity must hold at least identities_per_batch={identities_per_batch} identities with "
                         f"{images_per_identity} images or more, got {len(usable)}")
    slots = torch.arange(int(counts.max()))
    while True:
        chosen = usable[torch.randperm(len(usable), generator=generator)[:identities_per_batch]]
        keys = torch.rand(len(chosen), len(slots), generator=generator).masked_fill(slots >= counts[chosen, None], -1.0)
        pick = keys.topk(images_per_identity, dim=1).indices  # K distinct images of each chosen identity
        yield order[(starts[chosen, None] + pick).flatten()]


def train_embedding(
    model: nn.Module,
    images: torch.Tensor,
    identity: torch.Tensor,
    mining: str = "batch_hard",
    steps: int = 1000,
    margin: float = 0.2,
    identities_per_batch: int = 32,
    images_per_identity: int = 4,
    lr: float = 2e-3,
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> dict:
    """Train ``model`` (whose ``forward`` returns embeddings) with the triplet loss; returns the history
    ``{"loss": [steps], "active": [steps]}`` (floats).

    Each step draws ``identities_per_batch`` identities x ``images_per_identity`` images
    (:func:`identity_batches`), embeds them and forms one triplet per anchor: ``mining="random"``
    (:func:`~.losses.random_triplets`) or ``"batch_hard"`` (:func:`~.losses.batch_hard_triplets`).
    The loss is the mean hinge ``relu(d(a, p) - d(a, n) + margin)`` (Euclidean ``d``); ``active`` is
    the fraction of the step's triplets with a non-zero hinge, the only ones that teach anything.
    AdamW with a cosine learning-rate schedule; ``seed`` fixes the batches and random triplets.
    """
    tensor_rank("images", images, 4)
    if mining not in ("random", "batch_hard"):
        raise ValueError(f"mining must be 'random' or 'batch_hard', got {mining!r}")
    positive_int("steps", steps)
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or margin < 0:
        raise ValueError(f"margin must be a number >= 0, got {margin!r}")
    if len(identity) != len(images):
        raise ValueError(f"identity must hold one label per image, got {len(identity)} labels for {len(images)} images")
    dev = torch.device(device) if device is not None else default_device()
    model.to(dev)
    generator = torch.Generator().manual_seed(seed)
    stream = identity_batches(identity, identities_per_batch, images_per_identity, generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = {"loss": [], "active": []}
    bar = Progress(total=steps, desc=f"triplets ({mining.replace('_', '-')})", unit="steps", enabled=progress)
    model.train()
    for _ in range(steps):
        index = next(stream)
        x = images[index.to(images.device)].to(dev)
        labels = identity[index.to(identity.device)].to(dev)
        embeddings = model(x)
        if mining == "random":
            a, p, n = random_triplets(labels, generator)
        else:
            a, p, n = batch_hard_triplets(embeddings, labels)
        hinge = torch.relu((embeddings[a] - embeddings[p]).norm(dim=1) - (embeddings[a] - embeddings[n]).norm(dim=1) + margin)
        loss = hinge.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history["loss"].append(float(loss.detach()))
        history["active"].append(float((hinge.detach() > 0).float().mean()))
        bar.update()
        if len(history["loss"]) % 20 == 0:
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", active=f"{history['active'][-1]:.0%}")
    bar.close()
    return history
