"""Verification: are two faces the same person? A distance, a threshold, and how to score them.

A verifier compares the distance between two embeddings with a threshold: "same" when the distance is
at most the threshold. Over a set of labelled pairs, :func:`verification_accuracy` tries every
threshold that makes a difference (each distinct observed distance) and reports the best accuracy and
the smallest threshold reaching it. Sweeping the threshold also trades the *true accept rate* (TAR:
same-person pairs accepted) against the *false accept rate* (FAR: different-person pairs accepted);
:func:`roc_curve` gives that whole curve and :func:`tar_at_far` one point of it, the figure that
matters when false accepts are costly (unlocking a phone, border control).

Choosing the threshold on the very pairs it is scored on is slightly optimistic; benchmarks such as
LFW choose it on other folds. With thousands of pairs the difference is small.
"""
from __future__ import annotations

import numbers

import torch

from ..validate import floating, positive_int, tensor_rank

__all__ = ["verification_accuracy", "roc_curve", "tar_at_far", "verification_pairs", "pair_distances"]


def _check_pairs(distances, same):
    tensor_rank("distances", distances, 1)
    floating("distances", distances)
    tensor_rank("same", same, 1)
    if same.dtype != torch.bool:
        raise ValueError(f"same must be a bool tensor (True for pairs of one person), got {same.dtype}")
    if same.shape != distances.shape or len(distances) == 0:
        raise ValueError(f"distances and same must have the same non-zero length, got {tuple(distances.shape)} and {tuple(same.shape)}")
    if same.device != distances.device:
        raise ValueError(f"distances and same must share one device, got {distances.device} and {same.device}")
    if bool(torch.isnan(distances).any()):
        raise ValueError("distances must not contain nan")


def _sweep(distances, same):
    """For each distinct distance ``t`` (ascending): how many same-person and different-person pairs
    have a distance ``<= t``. Returns ``(thresholds [T], accepted_same [T], accepted_different [T])``."""
    order = distances.argsort()
    sorted_d, sorted_same = distances[order], same[order]
    accepted_same = sorted_same.long().cumsum(0)
    accepted_different = (~sorted_same).long().cumsum(0)
    # the last position of each run of equal distances: all tied pairs switch together
    last = torch.ones_like(sorted_same)
    last[:-1] = sorted_d[1:] != sorted_d[:-1]
    return sorted_d[last], accepted_same[last], accepted_different[last]


def verification_accuracy(distances: torch.Tensor, same: torch.Tensor):
    """Best verification accuracy over thresholds, and the threshold reaching it.

    ``distances [P]`` float, ``same [P]`` bool (True when the pair shows one person). A pair is predicted
    "same" when its distance is ``<= threshold``; the thresholds tried are the distinct values of
    ``distances``. Returns ``(accuracy, threshold)``, two 0-d tensors of ``distances``' dtype: the highest
    fraction of pairs predicted correctly and the *smallest* threshold that reaches it.
    """
    _check_pairs(distances, same)
    thresholds, accepted_same, accepted_different = _sweep(distances, same)
    rejected_different = int((~same).sum()) - accepted_different
    correct = accepted_same + rejected_different  # integers: ties in accuracy are exact
    best = int(correct.argmax())  # the first maximum: the smallest threshold
    return (correct[best].to(distances.dtype) / len(distances)), thresholds[best]


def roc_curve(distances: torch.Tensor, same: torch.Tensor):
    """The ROC of a distance-threshold verifier: ``(far [T+1], tar [T+1], thresholds [T+1])``.

    Point ``k`` accepts every pair with distance ``<= thresholds[k]``; ``tar`` is the fraction of
    same-person pairs accepted, ``far`` the fraction of different-person pairs accepted. The first point
    (threshold ``-inf``) accepts nothing. Needs pairs of both kinds.
    """
    _check_pairs(distances, same)
    positives, negatives = int(same.sum()), int((~same).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"same must hold both same-person and different-person pairs, got {positives} and {negatives}")
    thresholds, accepted_same, accepted_different = _sweep(distances, same)
    zero = thresholds.new_zeros(1)
    tar = torch.cat([zero, accepted_same.to(distances.dtype) / positives])
    far = torch.cat([zero, accepted_different.to(distances.dtype) / negatives])
    return far, tar, torch.cat([thresholds.new_full((1,), float("-inf")), thresholds])


def tar_at_far(distances: torch.Tensor, same: torch.Tensor, far: float = 0.01) -> torch.Tensor:
    """True accept rate at the largest threshold whose false accept rate is at most ``far`` (0-d tensor)."""
    if isinstance(far, bool) or not isinstance(far, numbers.Real) or not 0 <= far <= 1:
        raise ValueError(f"far must be a number in [0, 1], got {far!r}")
    rates, tar, _ = roc_curve(distances, same)
    return tar[rates <= far].max()


def verification_pairs(identity: torch.Tensor, negatives_per_positive: int = 1, generator: torch.Generator | None = None):
    """Labelled pairs for a verification test: ``(first [P], second [P], same [P])``.

    Every pair of two different images of one identity (``identity [N]`` integer labels), then
    ``negatives_per_positive`` times as many pairs of images of two different identities, drawn at random
    (from ``generator``, a CPU generator). Indices are int64 on ``identity``'s device.
    """
    tensor_rank("identity", identity, 1)
    positive_int("negatives_per_positive", negatives_per_positive)
    labels = identity.cpu()
    first, second = torch.triu_indices(len(labels), len(labels), offset=1)
    same_pairs = labels[first] == labels[second]
    first, second = first[same_pairs], second[same_pairs]
    positives = len(first)
    if positives == 0:
        raise ValueError("identity must contain some identity at least twice, so that same-person pairs exist")
    wanted = negatives_per_positive * positives
    a = torch.randint(len(labels), (4 * wanted,), generator=generator)
    b = torch.randint(len(labels), (4 * wanted,), generator=generator)
    different = torch.nonzero(labels[a] != labels[b]).flatten()[:wanted]
    if len(different) < wanted:
        raise ValueError("identity must contain at least two identities, so that different-person pairs exist")
    first = torch.cat([first, a[different]])
    second = torch.cat([second, b[different]])
    same = torch.cat([torch.ones(positives, dtype=torch.bool), torch.zeros(wanted, dtype=torch.bool)])
    return first.to(identity.device), second.to(identity.device), same.to(identity.device)


def pair_distances(embeddings: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Euclidean distance ``[P]`` between ``embeddings[first[k]]`` and ``embeddings[second[k]]``."""
    tensor_rank("embeddings", embeddings, 2)
    return (embeddings[first] - embeddings[second]).norm(dim=1)
