"""Distances between embeddings, the triplet loss, and which triplets to train on.

An embedding ``f`` maps a face to a point; two faces are the same person when their points are
close. :func:`pairwise_distances` measures every pair at once with the expansion
``|x - y|^2 = |x|^2 - 2 x.y + |y|^2`` (one matrix product instead of an ``[N, M, D]`` tensor of
differences). The **triplet loss** asks, for an *anchor* ``a``, a *positive* ``p`` (same person) and a
*negative* ``n`` (someone else), that ``p`` be closer to ``a`` than ``n`` is, by a *margin*; triplets
that already satisfy this contribute nothing (the hinge is flat), so which triplets a batch holds
decides how much it teaches. :func:`random_triplets` draws them at random; :func:`batch_hard_triplets`
picks, for every anchor, its *farthest* positive and *nearest* negative in the batch (Hermans, Beyer
and Leibe, 2017), the triplets the embedding currently gets most wrong.
"""
from __future__ import annotations

import numbers

import torch

from ..validate import floating, same_device, tensor_rank

__all__ = ["pairwise_distances", "triplet_loss", "random_triplets", "batch_hard_triplets", "batch_hard_triplet_loss"]


def _embeddings(name: str, value) -> torch.Tensor:
    tensor_rank(name, value, 2)
    return floating(name, value)


def _margin(margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not margin >= 0:
        raise ValueError(f"margin must be a number >= 0, got {margin!r}")
    return float(margin)


def _labels(labels, n: int, embeddings: torch.Tensor) -> torch.Tensor:
    tensor_rank("labels", labels, 1)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or len(labels) != n:
        raise ValueError(f"labels must be {n} integer identity labels (one per embedding), got {labels.dtype} {tuple(labels.shape)}")
    same_device(embeddings=embeddings, labels=labels)
    return labels


def _safe_sqrt(squared: torch.Tensor) -> torch.Tensor:
    """``sqrt`` with a zero gradient (not ``inf * 0 = nan``) where the distance is exactly 0."""
    positive = squared > 0
    return torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0)


def pairwise_distances(x: torch.Tensor, y: torch.Tensor | None = None, squared: bool = False) -> torch.Tensor:
    """Euclidean distances ``[N, M]`` between the rows of ``x [N, D]`` and ``y [M, D]`` (``y=None``: ``x``
    with itself, with an exact zero diagonal), equal to ``torch.cdist(x, y)``; ``squared=True`` gives
    their squares. Same dtype as ``x``.

    ``|x|^2 - 2 x.y + |y|^2`` can come out slightly negative by rounding for (nearly) equal rows, so it
    is clamped at 0 before the square root.
    """
    _embeddings("x", x)
    same_as_x = y is None
    y = x if same_as_x else _embeddings("y", y)
    same_device(x=x, y=y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same embedding size, got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.dtype != x.dtype:
        raise ValueError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if not isinstance(squared, bool):
        raise ValueError(f"squared must be True or False, got {squared!r}")
    d2 = (x * x).sum(1)[:, None] - 2 * x @ y.T + (y * y).sum(1)[None, :]
    d2 = d2.clamp(min=0)
    if same_as_x:
        d2 = d2.masked_fill(torch.eye(len(x), dtype=torch.bool, device=x.device), 0.0)
    return d2 if squared else _safe_sqrt(d2)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0,
                 squared: bool = False) -> torch.Tensor:
    """Mean triplet loss over the rows of ``anchor``, ``positive``, ``negative`` (each ``[N, D]``), a 0-d
    tensor: the mean of ``relu(d(a, p) - d(a, n) + margin)``.

    ``squared=False``: ``d`` is the Euclidean distance, as ``F.triplet_margin_loss`` (which adds
    ``eps=1e-6`` to each difference; pass ``eps=0`` to it for the exact same numbers).
    ``squared=True``: ``d`` is the squared distance, FaceNet's form (Schroff et al., 2015).
    """
    _embeddings("anchor", anchor)
    for name, value in (("positive", positive), ("negative", negative)):
        _embeddings(name, value)
        if value.shape != anchor.shape:
            raise ValueError(f"{name} must have the anchor's shape {tuple(anchor.shape)}, got {tuple(value.shape)}")
    same_device(anchor=anchor, positive=positive, negative=negative)
    margin = _margin(margin)
    if not isinstance(squared, bool):
        raise ValueError(f"squared must be True or False, got {squared!r}")
    if len(anchor) == 0:
        raise ValueError("anchor must hold at least one triplet, got 0 rows")
    d_ap = (anchor - positive).pow(2).sum(1)
    d_an = (anchor - negative).pow(2).sum(1)
    if not squared:
        d_ap, d_an = _safe_sqrt(d_ap), _safe_sqrt(d_an)
    return torch.relu(d_ap - d_an + margin).mean()


def random_triplets(labels: torch.Tensor, generator: torch.Generator | None = None):
    """One random triplet per anchor that has a positive: indices ``(anchor, positive, negative)``, each
    ``[T]`` int64. The positive is another row with the anchor's label, the negative a row with another
    label, both drawn uniformly (from ``generator``, a CPU generator). Anchors without a positive or
    without a negative are left out."""
    labels = _labels(labels, len(labels), labels)
    same = labels[:, None] == labels[None, :]
    positives = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negatives = ~same
    anchors = torch.nonzero(positives.any(1) & negatives.any(1)).flatten()
    noise = torch.rand(len(anchors), len(labels), generator=generator).to(labels.device)
    # a uniform pick among the allowed columns: the largest random key among them
    positive = torch.where(positives[anchors], noise, -1.0).argmax(1)
    noise = torch.rand(len(anchors), len(labels), generator=generator).to(labels.device)
    negative = torch.where(negatives[anchors], noise, -1.0).argmax(1)
    return anchors, positive, negative


def batch_hard_triplets(embeddings: torch.Tensor, labels: torch.Tensor):
    """For every anchor that has a positive: indices ``(anchor, hardest_positive, hardest_negative)``, each
    ``[T]`` int64: its *farthest* positive (another row with its label) and *nearest* negative (a row with
    another label), by Euclidean distance. An anchor without any negative gets ``-1`` as its negative.
    """
    _embeddings("embeddings", embeddings)
    labels = _labels(labels, len(embeddings), embeddings)
    with torch.no_grad():
        distances = pairwise_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    positives = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    anchors = torch.nonzero(positives.any(1)).flatten()
    far = torch.where(positives, distances, -1.0)[anchors].argmax(1)
    near_d, near = torch.where(same, float("inf"), distances)[anchors].min(1)
    return anchors, far, torch.where(torch.isinf(near_d), -1, near)


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss, a 0-d tensor.

    ``embeddings [B, D]``, ``labels [B]`` integer identities. For every anchor that has a positive (another
    row with its label): ``relu(d(a, farthest positive) - d(a, nearest negative) + margin)`` with
    Euclidean ``d``; the loss is the mean over those anchors. An anchor with no negative in the batch has
    its nearest negative infinitely far (hinge 0); a batch where no anchor has a positive gives 0.
    """
    _embeddings("embeddings", embeddings)
    labels = _labels(labels, len(embeddings), embeddings)
    margin = _margin(margin)
    distances = pairwise_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    positives = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    has_positive = positives.any(1)
    if not bool(has_positive.any()):
        return embeddings.sum() * 0.0  # keeps the graph, so a training step can still call backward
    hardest_positive = torch.where(positives, distances, 0.0).amax(1)
    hardest_negative = torch.where(same, float("inf"), distances).amin(1)
    hinge = torch.relu(hardest_positive - hardest_negative + margin)
    return hinge[has_positive].mean()
