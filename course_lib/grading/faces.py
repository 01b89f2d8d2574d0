"""Exercises of lecture 09 (faces): distances between embeddings, the triplet loss, batch-hard mining
and the verification threshold.

Oracles never use :mod:`course_lib.faces`: ``torch.cdist`` (in float64, without its matrix-product
shortcut) for distances, ``F.triplet_margin_loss`` with ``eps=0`` for the Euclidean triplet loss, and
plain Python loops over triplets, anchors and thresholds otherwise, plus the lecture's hand-worked
examples. Cases are built to separate the right answer from the classic mistakes: ``squared`` both ways
in one exercise, triplets that are already easy (so a missing ``relu`` shows), identities seen only once
in a batch (so counting the anchor as its own positive shows, and its hinge is not zero), embeddings
scaled so that many hinges are active, and distances with ties and accuracy plateaus (so ``<`` versus
``<=`` and the tie-break of the threshold show).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import Case, Exercise, Mistake, compare_tensor, rand_dtype, rand_int, register, section

LECTURE = "09_faces"
DISTANCES = section("09", "Distances between embeddings")
THRESHOLD = section("09", "Verification: a threshold on the distance")
TRIPLET = section("09", "FaceNet: the triplet loss")
MINING = section("09", "Which triplets? Random or batch-hard")
TENSORS = ("tensor float32", "tensor float64")
LOSSES, VERIFICATION = "course_lib.faces.losses", "course_lib.faces.verification"


def _points(gen, n, d, dtype):
    """``[n, d]`` random embeddings scaled to unit expected length, so distances are about 1.4 and a
    margin between 0.2 and 1.5 leaves some triplets easy and some active."""
    return (torch.randn(n, d, generator=gen, dtype=torch.float64) / d**0.5).to(dtype)


# --- pairwise_distances -------------------------------------------------------------------------

EXAMPLE_X = [[0.0, 0.0], [3.0, 4.0]]
EXAMPLE_Y = [[0.0, 0.0], [6.0, 8.0], [3.0, 0.0]]


def _distance_cases(gen, hidden):
    x, y = torch.tensor(EXAMPLE_X), torch.tensor(EXAMPLE_Y)
    cases = [
        Case((x, y), label="lecture example: x = [[0, 0], [3, 4]], y = [[0, 0], [6, 8], [3, 0]] -> [[0, 10, 3], [5, 5, 4]]"),
        Case((x, y), {"squared": True}, label="lecture example, squared=True -> [[0, 100, 9], [25, 25, 16]]"),
        Case((torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64), None),
             label="y=None: three points of a triangle with sides sqrt(2), against themselves (zero diagonal)"),
    ]
    for n, m, d in [(1, 1, 1), (5, 7, 3), (12, 4, 16), (30, 25, 8)]:
        dtype = rand_dtype(gen)
        cases.append(Case((_points(gen, n, d, dtype), _points(gen, m, d, dtype)), {"squared": bool(rand_int(gen, 0, 1))}))
    for n, d in [(6, 5), (20, 12)]:
        dtype = rand_dtype(gen)
        cases.append(Case((_points(gen, n, d, dtype), None), {"squared": bool(rand_int(gen, 0, 1))},
                          label=f"y=None: {n} embeddings of size {d} against themselves ({dtype})".replace("torch.", "")))
    twins = _points(gen, 4, 6, torch.float64)
    cases += [
        Case((twins, twins[[2, 0, 3]].clone()), {"squared": False}, label="y repeats rows of x: exact zeros off the diagonal"),
        Case((torch.zeros(0, 5), _points(gen, 3, 5, torch.float32)), label="no rows in x (an empty [0, 3] result)"),
    ]
    return cases


def _distance_oracle(case):
    x = case.args[0]
    y = case.args[1] if len(case.args) > 1 and case.args[1] is not None else x
    d = torch.cdist(x.double(), y.double(), compute_mode="donot_use_mm_for_euclid_dist")
    return (d**2 if case.kwargs.get("squared", False) else d).to(x.dtype)


def _compare_distances(expected, got):
    # |x|^2 - 2 x.y + |y|^2 rounds to a little above 0 for equal rows, and its square root magnifies that
    # (about 1e-3 in float32): the tolerance accepts both ways of computing the distances.
    atol = 3e-3 if expected.dtype == torch.float32 else 1e-6
    return compare_tensor(expected, got, rtol=1e-4 if expected.dtype == torch.float32 else 1e-7, atol=atol)


def _distance_mistake(kind):
    def pairwise_distances(x, y=None, squared=False):
        y = x if y is None else y
        difference = x[:, None, :] - y[None, :, :]
        if kind == "manhattan":
            return difference.abs().sum(-1)
        d2 = (difference**2).sum(-1)
        want_squared = {"no square root": True, "square root always": False}[kind]
        return d2 if want_squared else d2.sqrt()

    return pairwise_distances


register(Exercise(
    "pairwise_distances", LECTURE, 2, _distance_cases, _distance_oracle, _compare_distances,
    params=("x", "y", "squared"),
    forms={"x": (*TENSORS, "empty tensor"), "y": (*TENSORS, "None"), "squared": ("bool",)},
    forbidden=("torch.cdist", "torch.nn.functional.pairwise_distance", LOSSES),
    mistakes=(
        Mistake("no square root", _distance_mistake("no square root"),
                f"With squared=False you return squared distances: take the square root of |x - y|^2 ({DISTANCES})."),
        Mistake("square root always", _distance_mistake("square root always"),
                f"With squared=True you still take the square root: squared=True asks for |x - y|^2 itself ({DISTANCES})."),
        Mistake("manhattan", _distance_mistake("manhattan"),
                f"You sum absolute differences (the L1 distance): the Euclidean distance is the square root of the sum of squared differences ({DISTANCES})."),
    ),
))


# --- triplet_loss -------------------------------------------------------------------------------

# The lecture's worked example: two triplets in 2-D. The first is easy (d(a,p) = 5, d(a,n) = 10), the
# second violates the margin (d(a,p) = 2, d(a,n) = 1).
EXAMPLE_ANCHOR = [[0.0, 0.0], [0.0, 0.0]]
EXAMPLE_POSITIVE = [[3.0, 4.0], [0.0, 2.0]]
EXAMPLE_NEGATIVE = [[6.0, 8.0], [1.0, 0.0]]


def _triplet_cases(gen, hidden):
    a, p, n = torch.tensor(EXAMPLE_ANCHOR), torch.tensor(EXAMPLE_POSITIVE), torch.tensor(EXAMPLE_NEGATIVE)
    cases = [
        Case((a, p, n), label="lecture example: an easy triplet (5 vs 10) and a hard one (2 vs 1), margin 1 -> (0 + 2) / 2 = 1",
             expected=torch.tensor(1.0)),
        Case((a, p, n), {"squared": True}, label="lecture example with squared distances (25 vs 100, 4 vs 1) -> (0 + 4) / 2 = 2",
             expected=torch.tensor(2.0)),
        Case((a, p, n), {"margin": 6.0}, label="lecture example, margin 6: both triplets active -> (1 + 7) / 2 = 4",
             expected=torch.tensor(4.0)),
    ]
    for rows, d in [(1, 2), (8, 4), (32, 16), (64, 8), (20, 3)]:
        dtype = rand_dtype(gen)
        margin = [0.2, 0.5, 1.0, 1.5][rand_int(gen, 0, 3)]
        triplet = tuple(_points(gen, rows, d, dtype) for _ in range(3))
        cases.append(Case(triplet, {"margin": margin, "squared": bool(rand_int(gen, 0, 1))}))
    anchor = _points(gen, 10, 5, torch.float64)
    cases += [
        Case((anchor, anchor.clone(), _points(gen, 10, 5, torch.float64)), {"margin": 0.2},
             label="positives equal to their anchors (distance exactly 0)"),
        Case(tuple(_points(gen, 16, 4, torch.float32) for _ in range(3)), {"margin": 0.0},
             label="margin 0: only triplets whose negative is nearer than the positive count"),
        Case((anchor, anchor + 0.01, anchor + 3.0), {"margin": 0.5, "squared": True},
             label="every triplet easy: the loss is exactly 0"),
    ]
    return cases


def _triplet_oracle(case):
    anchor, positive, negative = case.args
    margin, squared = case.kwargs.get("margin", 1.0), case.kwargs.get("squared", False)
    if not squared and margin > 0:  # torch refuses a margin of 0
        return F.triplet_margin_loss(anchor, positive, negative, margin=margin, eps=0.0)
    power = 1.0 if squared else 0.5
    total = 0.0
    for a, p, n in zip(anchor.double().tolist(), positive.double().tolist(), negative.double().tolist()):
        d_ap = sum((u - v) ** 2 for u, v in zip(a, p)) ** power
        d_an = sum((u - v) ** 2 for u, v in zip(a, n)) ** power
        total += max(d_ap - d_an + margin, 0.0)
    return torch.tensor(total / len(anchor), dtype=anchor.dtype)


def _triplet_mistake(*, relu=True, reduce="mean", distance="as asked", swapped=False, margin_outside=False):
    def triplet_loss(anchor, positive, negative, margin=1.0, squared=False):
        use_squared = {"as asked": squared, "always plain": False, "always squared": True}[distance]
        d_ap = ((anchor - positive) ** 2).sum(1)
        d_an = ((anchor - negative) ** 2).sum(1)
        if not use_squared:
            d_ap, d_an = d_ap.sqrt(), d_an.sqrt()
        if swapped:
            d_ap, d_an = d_an, d_ap
        if margin_outside:
            hinge = torch.relu(d_ap - d_an) + margin
        else:
            hinge = d_ap - d_an + margin
            hinge = torch.relu(hinge) if relu else hinge
        return hinge.sum() if reduce == "sum" else hinge.mean()

    return triplet_loss


register(Exercise(
    "triplet_loss", LECTURE, 2, _triplet_cases, _triplet_oracle,
    params=("anchor", "positive", "negative", "margin", "squared"),
    forms={"anchor": TENSORS, "positive": TENSORS, "negative": TENSORS, "margin": ("float",), "squared": ("bool",)},
    forbidden=("torch.nn.functional.triplet_margin_loss", "torch.nn.functional.triplet_margin_with_distance_loss", LOSSES),
    mistakes=(
        Mistake("no relu", _triplet_mistake(relu=False),
                f"Easy triplets lower your loss: without relu a triplet that already meets the margin counts as negative loss; clamp each hinge at 0 ({TRIPLET})."),
        Mistake("sum", _triplet_mistake(reduce="sum"),
                f"You add the hinges up: the loss is their mean over the triplets ({TRIPLET})."),
        Mistake("squared ignored", _triplet_mistake(distance="always plain"),
                f"With squared=True you still use plain distances: FaceNet's form compares squared distances, |a-p|^2 - |a-n|^2 ({TRIPLET})."),
        Mistake("always squared", _triplet_mistake(distance="always squared"),
                f"With squared=False you use squared distances: the default compares Euclidean distances |a-p| - |a-n|, as F.triplet_margin_loss ({TRIPLET})."),
        Mistake("positive and negative swapped", _triplet_mistake(swapped=True),
                f"Your hinge is d(a, n) - d(a, p) + margin: the loss must grow when the positive is far and the negative is near ({TRIPLET})."),
        Mistake("margin outside the relu", _triplet_mistake(margin_outside=True),
                f"You add the margin after the relu: it belongs inside, relu(d(a,p) - d(a,n) + margin), so that a triplet is satisfied only once the negative is farther by the margin ({TRIPLET})."),
    ),
))


# --- batch_hard_triplet_loss -------------------------------------------------------------------

def batch_hard_example():
    """The lecture's worked example: five 1-D embeddings, two people with two images each and one
    person seen once, margin 1."""
    return torch.tensor([[0.0], [1.0], [1.5], [4.0], [4.5]]), torch.tensor([0, 0, 1, 1, 2]), 1.0


def _batch_hard_cases(gen, hidden):
    embeddings, labels, margin = batch_hard_example()
    cases = [
        Case((embeddings, labels, margin),
             label="lecture example: points 0, 1 (person 0), 1.5, 4 (person 1), 4.5 (seen once), margin 1 -> (0.5 + 1.5 + 3 + 3) / 4 = 2",
             expected=torch.tensor(2.0)),
        Case((torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [3.0, 3.0]], dtype=torch.float64), torch.tensor([7, 7, 2, 2]), 0.5),
             label="two people, labels 7 and 2 (not 0..P-1), 2-D, margin 0.5"),
    ]
    for people, images, singles, d in [(2, 3, 0, 2), (4, 4, 2, 8), (8, 4, 3, 16), (6, 2, 4, 4), (16, 4, 0, 32)]:
        dtype = rand_dtype(gen)
        labels = torch.cat([torch.arange(people).repeat_interleave(images), people + torch.arange(singles)])
        labels = labels[torch.randperm(len(labels), generator=gen)] * 3 + 1
        margin = [0.2, 0.5, 1.0, 1.5][rand_int(gen, 0, 3)]
        cases.append(Case((_points(gen, len(labels), d, dtype), labels, margin),
                          label=f"{people} people x {images} images + {singles} seen once, size {d}, margin {margin} ({str(dtype)[6:]})"))
    cases += [
        Case((_points(gen, 5, 4, torch.float32), torch.tensor([3, 1, 4, 0, 2]), 1.0),
             label="every person seen once: no anchor has a positive -> 0"),
        Case((_points(gen, 12, 6, torch.float64), torch.randint(0, 4, (12,), generator=gen), 0.3),
             label="12 embeddings with random labels among 4 people, margin 0.3"),
    ]
    return cases


def _batch_hard_oracle(case):
    embeddings, labels, margin = case.args
    points, names = embeddings.double().tolist(), labels.tolist()

    def distance(i, j):
        return sum((u - v) ** 2 for u, v in zip(points[i], points[j])) ** 0.5

    hinges = []
    for i, label in enumerate(names):
        positives = [distance(i, j) for j, other in enumerate(names) if other == label and j != i]
        negatives = [distance(i, j) for j, other in enumerate(names) if other != label]
        if positives:
            nearest = min(negatives) if negatives else float("inf")
            hinges.append(max(max(positives) - nearest + margin, 0.0))
    return torch.tensor(sum(hinges) / len(hinges) if hinges else 0.0, dtype=embeddings.dtype)


def _batch_hard_mistake(*, own_positive=False, positive="farthest", negative="nearest", squared=False, relu=True,
                        reduce="mean over anchors with a positive"):
    def batch_hard_triplet_loss(embeddings, labels, margin):
        d2 = ((embeddings[:, None, :] - embeddings[None, :, :]) ** 2).sum(-1)
        d = d2 if squared else d2.sqrt()
        same = labels[:, None] == labels[None, :]
        positives = same if own_positive else same & ~torch.eye(len(labels), dtype=torch.bool)
        if positive == "farthest":
            hardest_positive = torch.where(positives, d, -torch.inf).amax(1)
        else:
            hardest_positive = torch.where(positives, d, torch.inf).amin(1)
        if negative == "nearest":
            hardest_negative = torch.where(same, torch.inf, d).amin(1)
        else:
            hardest_negative = torch.where(same, -torch.inf, d).amax(1)
        hinge = hardest_positive - hardest_negative + margin
        hinge = torch.relu(hinge) if relu else hinge
        anchors = positives.any(1)
        if not bool(anchors.any()):
            return embeddings.new_zeros(())
        if reduce == "sum":
            return hinge[anchors].sum()
        if reduce == "mean over the batch":
            return hinge[anchors].sum() / len(labels)
        return hinge[anchors].mean()

    return batch_hard_triplet_loss


register(Exercise(
    "batch_hard_triplet_loss", LECTURE, 3, _batch_hard_cases, _batch_hard_oracle,
    params=("embeddings", "labels", "margin"),
    forms={"embeddings": TENSORS, "labels": ("tensor int64",), "margin": ("float",)},
    forbidden=(LOSSES,),
    mistakes=(
        Mistake("anchor as its own positive", _batch_hard_mistake(own_positive=True),
                f"A person seen once in the batch counts as an anchor in your loss: the anchor is not its own positive (distance 0); leave out the diagonal, and anchors with no other image of their person ({MINING})."),
        Mistake("nearest positive", _batch_hard_mistake(positive="nearest"),
                f"You take each anchor's nearest positive: batch-hard uses the hardest one, the positive *farthest* from the anchor ({MINING})."),
        Mistake("farthest negative", _batch_hard_mistake(negative="farthest"),
                f"You take each anchor's farthest negative: batch-hard uses the hardest one, the negative *nearest* to the anchor ({MINING})."),
        Mistake("squared distances", _batch_hard_mistake(squared=True),
                f"You compare squared distances: this loss uses Euclidean distances, |a - p| - |a - n| ({MINING})."),
        Mistake("no relu", _batch_hard_mistake(relu=False),
                f"Anchors whose hardest triplet is already satisfied lower your loss: clamp each hinge at 0 with relu ({MINING})."),
        Mistake("sum", _batch_hard_mistake(reduce="sum"),
                f"You add the hinges up: the loss is their mean over the anchors that have a positive ({MINING})."),
        Mistake("mean over the whole batch", _batch_hard_mistake(reduce="mean over the batch"),
                f"You divide by the batch size: the mean runs over the anchors that have a positive only ({MINING})."),
    ),
))


# --- verification_accuracy ------------------------------------------------------------------------

# The lecture's worked example: six pairs; thresholds 0.5 and 0.9 both reach 5/6, the smaller one wins.
EXAMPLE_DISTANCES = [0.2, 0.5, 0.7, 0.9, 1.1, 1.4]
EXAMPLE_SAME = [True, True, False, True, False, False]


def _verification_cases(gen, hidden):
    def pairs(distances, same, label, dtype=torch.float32):
        return Case((torch.tensor(distances, dtype=dtype), torch.tensor(same)), label=label)

    cases = [
        pairs(EXAMPLE_DISTANCES, EXAMPLE_SAME,
              "lecture example: distances 0.2 .. 1.4, same T T F T F F: 5/6 at thresholds 0.5 and 0.9 -> (5/6, 0.5)"),
        pairs([1.4, 0.7, 0.2, 1.1, 0.9, 0.5], [False, False, True, False, True, True], "the lecture example in another order"),
        pairs([0.25, 0.5, 0.5, 0.5, 0.75, 1.0], [True, True, False, True, False, True],
              "three pairs tied at 0.5 (two same, one not): they are accepted or rejected together -> (4/6, 0.5)"),
        pairs([0.5, 0.25, 1.0, 0.75], [True, True, True, True], "every pair the same person: the largest distance accepts all -> (1, 1.0)"),
        pairs([0.3], [True], "a single pair", dtype=torch.float64),
    ]
    for count, ties in [(10, False), (40, True), (150, False), (400, True)]:
        dtype = rand_dtype(gen)
        same = torch.rand(count, generator=gen) < 0.5
        # same-person pairs tend to be closer: a real verifier's distances, with overlap
        distances = torch.rand(count, generator=gen, dtype=torch.float64) + 0.6 * (~same).double()
        if ties:
            distances = torch.round(distances * 10) / 10
        cases.append(Case((distances.to(dtype), same),
                          label=f"{count} pairs{' (distances rounded to 0.1: many ties)' if ties else ''} ({str(dtype)[6:]})"))
    return cases


def _verification_oracle(case):
    distances, same = case.args
    values, labels = distances.tolist(), same.tolist()
    best = None
    for threshold in sorted(set(values)):
        correct = sum((d <= threshold) == s for d, s in zip(values, labels))
        if best is None or correct > best[0]:  # strictly better: the smallest threshold keeps a tie
            best = (correct, threshold)
    return best[0] / len(values), best[1]


def _number(value):
    if isinstance(value, torch.Tensor) and value.dim() == 0 and (value.is_floating_point() or value.dtype == torch.int64):
        return float(value)
    if type(value) in (int, float):
        return float(value)
    return None


def _compare_verification(expected, got):
    """A pair (accuracy, threshold): numbers or 0-d tensors; the accuracy within 1e-6, the threshold one of the
    given distances (up to float32 rounding, in case it passed through a float32 tensor)."""
    accuracy, threshold = expected
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"expected a pair (accuracy, threshold) = ({accuracy:.6g}, {threshold:.6g}), got {type(got).__name__} {str(got)[:60]}"
    got_accuracy, got_threshold = _number(got[0]), _number(got[1])
    if got_accuracy is None or got_threshold is None:
        return (f"expected a pair of numbers (Python floats or 0-d tensors) ({accuracy:.6g}, {threshold:.6g}), "
                f"got ({type(got[0]).__name__}, {type(got[1]).__name__})")
    if not abs(got_accuracy - accuracy) <= 1e-6:
        return f"expected accuracy {accuracy:.6g} (at threshold {threshold:.6g}), got accuracy {got_accuracy!r} (at threshold {got_threshold!r})"
    if not abs(got_threshold - threshold) <= 1e-7 * abs(threshold):  # one of the distances, up to float32 rounding
        return f"expected threshold {threshold:.6g} (accuracy {accuracy:.6g}), got threshold {got_threshold!r} (accuracy right)"
    return None


def _verification_mistake(*, strict=False, largest=False, reversed_rule=False, midpoints=False, ties_split=False):
    def verification_accuracy(distances, same):
        order = distances.argsort()
        d, s = distances[order].tolist(), same[order].tolist()
        candidates = sorted(set(d))
        if midpoints:
            candidates = [(a + b) / 2 for a, b in zip(candidates, candidates[1:])] + [candidates[-1]]
        results = []
        if ties_split:  # one threshold per sorted position: the first k pairs accepted, even inside a tie
            for k in range(1, len(d) + 1):
                correct = sum(s[:k]) + sum(not x for x in s[k:])
                results.append((correct, d[k - 1]))
        else:
            for t in candidates:
                accepted = [(x < t if strict else x <= t) for x in d]
                if reversed_rule:
                    accepted = [x >= t for x in d]
                correct = sum(a == b for a, b in zip(accepted, s))
                results.append((correct, t))
        best = max(c for c, _ in results)
        threshold = [t for c, t in results if c == best][-1 if largest else 0]
        return best / len(d), threshold

    return verification_accuracy


register(Exercise(
    "verification_accuracy", LECTURE, 3, _verification_cases, _verification_oracle, _compare_verification,
    params=("distances", "same"),
    forms={"distances": TENSORS, "same": ("tensor bool",)},
    forbidden=(VERIFICATION,),
    mistakes=(
        Mistake("< instead of <=", _verification_mistake(strict=True),
                f"You accept a pair when its distance is below the threshold: the rule is distance <= threshold, so the pair at the threshold counts as the same person ({THRESHOLD})."),
        Mistake("largest threshold", _verification_mistake(largest=True),
                f"When several thresholds reach the best accuracy you return the largest: return the smallest ({THRESHOLD})."),
        Mistake("distance as similarity", _verification_mistake(reversed_rule=True),
                f"You accept pairs whose distance is *above* the threshold: a small distance means the same person ({THRESHOLD})."),
        Mistake("midpoints", _verification_mistake(midpoints=True),
                f"Your thresholds lie between observed distances: the thresholds to try are the distances themselves ({THRESHOLD})."),
        Mistake("ties split", _verification_mistake(ties_split=True),
                f"You accept sorted pairs one at a time, so a threshold can accept some pairs at a distance and reject others at the same distance: tied pairs are accepted together ({THRESHOLD})."),
    ),
))
