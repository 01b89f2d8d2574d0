"""Graders of lecture 09: a student's straightforward versions pass and course_lib agrees with the oracles;
the classic mistakes (squared and plain distances mixed up, no relu, a sum for a mean, the anchor as its
own positive, the nearest positive, ``<`` for ``<=``, the largest threshold on a tie, ...) fail with the
failing case named and the mistake diagnosed; calls the texts forbid are refused; odd answers are
explained, not crashing."""
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from course_lib import faces
from course_lib.grading import check, exercise_names
from course_lib.grading.core import WRONG_DTYPE, Case, case_generator, get_exercise
from course_lib.grading.faces import LECTURE, batch_hard_example
from odd_answers import Liar

REFERENCE = ["pairwise_distances", "triplet_loss", "batch_hard_triplet_loss", "verification_accuracy"]


# --- what a student might write: loops and plain formulas, with a switch per classic mistake ------

def distances(x, y=None, squared=False, *, root="as asked"):
    y = x if y is None else y
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    take_root = {"as asked": not squared, "never": False, "always": True}[root]
    return d2.sqrt() if take_root else d2


def triplets(anchor, positive, negative, margin=1.0, squared=False, *, use_squared=None, relu=True, reduce="mean"):
    squared = squared if use_squared is None else use_squared
    d_ap = torch.stack([((a - p) ** 2).sum() for a, p in zip(anchor, positive)])
    d_an = torch.stack([((a - n) ** 2).sum() for a, n in zip(anchor, negative)])
    if not squared:
        d_ap, d_an = d_ap.sqrt(), d_an.sqrt()
    hinge = d_ap - d_an + margin
    hinge = hinge.clamp(min=0) if relu else hinge
    return hinge.sum() if reduce == "sum" else hinge.mean()


def batch_hard(embeddings, labels, margin, *, self_positive=False, positive="farthest", squared=False, reduce="anchors"):
    hinges = []
    for i in range(len(labels)):
        d = ((embeddings - embeddings[i]) ** 2).sum(1)
        d = d if squared else d.sqrt()
        mine = labels == labels[i]
        others = mine.clone()
        if not self_positive:
            others[i] = False
        if not bool(others.any()):
            continue
        hardest_positive = d[others].max() if positive == "farthest" else d[others].min()
        hinges.append(torch.relu(hardest_positive - d[~mine].min() + margin))
    if not hinges:
        return embeddings.new_zeros(())
    total = torch.stack(hinges).sum()
    return total if reduce == "sum" else total / (len(labels) if reduce == "batch" else len(hinges))


def threshold_search(distances, same, *, strict=False, largest=False):
    best, chosen = -1, None
    for t in sorted(set(distances.tolist())):
        accepted = distances < t if strict else distances <= t
        correct = int((accepted == same).sum())
        if correct > best or (largest and correct == best):
            best, chosen = correct, t
    return best / len(distances), chosen


STUDENT = {"pairwise_distances": distances, "triplet_loss": triplets, "batch_hard_triplet_loss": batch_hard,
           "verification_accuracy": threshold_search}


def wrong(name, **switches):
    return lambda *args, **kwargs: STUDENT[name](*args, **kwargs, **switches)


# The wrong versions the issue lists, each with the known mistake the check must name.
ISSUE_MISTAKES = [
    ("pairwise_distances", wrong("pairwise_distances", root="never"), "no square root"),
    ("pairwise_distances", wrong("pairwise_distances", root="always"), "square root always"),
    ("triplet_loss", wrong("triplet_loss", relu=False), "no relu"),
    ("triplet_loss", wrong("triplet_loss", reduce="sum"), "sum"),
    ("triplet_loss", wrong("triplet_loss", use_squared=False), "squared ignored"),
    ("triplet_loss", wrong("triplet_loss", use_squared=True), "always squared"),
    ("batch_hard_triplet_loss", wrong("batch_hard_triplet_loss", self_positive=True), "anchor as its own positive"),
    ("batch_hard_triplet_loss", wrong("batch_hard_triplet_loss", positive="nearest"), "nearest positive"),
    ("batch_hard_triplet_loss", wrong("batch_hard_triplet_loss", squared=True), "squared distances"),
    ("batch_hard_triplet_loss", wrong("batch_hard_triplet_loss", reduce="sum"), "sum"),
    ("batch_hard_triplet_loss", wrong("batch_hard_triplet_loss", reduce="batch"), "mean over the whole batch"),
    ("verification_accuracy", wrong("verification_accuracy", strict=True), "< instead of <="),
    ("verification_accuracy", wrong("verification_accuracy", largest=True), "largest threshold"),
]


def test_every_exercise_is_listed_in_notebook_order():
    assert exercise_names(LECTURE) == REFERENCE


@pytest.mark.parametrize("name", REFERENCE)
def test_student_versions_pass_and_course_lib_agrees_with_the_oracles(name, unwatched):
    for seed in (None, 987, 20240601):
        result = check(name, STUDENT[name], seed=seed)
        assert result.passed and result.points == result.max_points, result.message
        assert unwatched(name, getattr(faces, name), seed).passed, name


def test_solution_notebook_answers_pass():
    notebook = nbformat.read(Path(__file__).resolve().parent.parent / "solutions" / f"{LECTURE}.ipynb", as_version=4)
    namespace = {"torch": torch, "F": F}
    for cell in notebook.cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            exec(cell.source, namespace)
    for name in REFERENCE:
        result = check(name, namespace[name])
        assert result.passed and result.points == result.max_points, result.message


@pytest.mark.parametrize("name,fn,key", ISSUE_MISTAKES, ids=[f"{n}: {k}" for n, _, k in ISSUE_MISTAKES])
def test_the_issues_wrong_versions_fail_and_are_named(name, fn, key, assert_rejected):
    result = assert_rejected(name, fn)
    assert result.diagnosis == key, result.message
    assert next(m.message for m in get_exercise(name).mistakes if m.key == key) in result.message


@pytest.mark.parametrize("name,key,case", [
    ("triplet_loss", "no relu", "lecture example: an easy triplet"),
    ("batch_hard_triplet_loss", "anchor as its own positive", "lecture example"),
    ("batch_hard_triplet_loss", "mean over the whole batch", "lecture example"),
    ("verification_accuracy", "largest threshold", "lecture example"),
    ("verification_accuracy", "< instead of <=", "every pair the same person"),
    ("verification_accuracy", "ties split", "many ties"),
])
def test_the_named_mistakes_fail_on_the_cases_built_for_them(name, key, case, assert_mistake_fails_on):
    assert_mistake_fails_on(name, key, case)


@pytest.mark.parametrize("name,fn,forbidden", [
    ("pairwise_distances", lambda x, y=None, squared=False: torch.cdist(x, x if y is None else y), "torch.cdist"),
    ("pairwise_distances", lambda x, y=None, squared=False: F.pairwise_distance(x[:, None], (x if y is None else y)[None]),
     "pairwise_distance"),
    ("pairwise_distances", faces.pairwise_distances, "course_lib.faces.losses"),
    ("triplet_loss", lambda a, p, n, margin=1.0, squared=False: F.triplet_margin_loss(a, p, n, margin=margin), "triplet_margin_loss"),
    ("triplet_loss", lambda a, p, n, margin=1.0, squared=False: torch.nn.TripletMarginLoss(margin)(a, p, n), "triplet_margin_loss"),
    ("batch_hard_triplet_loss", faces.batch_hard_triplet_loss, "course_lib.faces.losses"),
    ("verification_accuracy", faces.verification_accuracy, "course_lib.faces.verification"),
])
def test_calling_what_the_text_forbids_is_refused(name, fn, forbidden):
    result = check(name, fn)
    assert not result.passed and result.points == 0
    assert forbidden in result.message and "which this exercise asks you not to use" in result.message, result.message


def test_batch_hard_may_use_cdist_and_triplet_loss_helpers():
    def with_cdist(embeddings, labels, margin):
        d = torch.cdist(embeddings, embeddings, compute_mode="donot_use_mm_for_euclid_dist")
        return batch_hard(embeddings, labels, margin) + 0 * d.sum()

    assert check("batch_hard_triplet_loss", with_cdist).passed


@pytest.mark.parametrize("name", ["pairwise_distances", "triplet_loss", "batch_hard_triplet_loss"])
def test_a_wrong_dtype_is_said_first(name):
    def fn(*args, **kwargs):
        right = STUDENT[name](*args, **kwargs)
        return right.float() if right.dtype == torch.float64 else right.double()

    result = check(name, fn)
    assert not result.passed
    assert result.message.splitlines()[0].startswith("Right values, wrong dtype on all"), result.message
    assert WRONG_DTYPE in result.message


@pytest.mark.parametrize("answer", [
    lambda a, t: (a, t), lambda a, t: (torch.tensor(a), torch.tensor(t)), lambda a, t: [a, t],
    lambda a, t: (torch.tensor(a, dtype=torch.float32), t),
])
def test_verification_accuracy_accepts_numbers_or_0d_tensors(answer):
    assert check("verification_accuracy", lambda d, s: answer(*threshold_search(d, s))).passed


@pytest.mark.parametrize("answer,words", [
    (lambda a, t: a, "expected a pair"), (lambda a, t: (a, t, 0), "expected a pair"),
    (lambda a, t: (torch.tensor([a]), t), "pair of numbers"), (lambda a, t: (a, t + 1e-3), "expected threshold"),
    (lambda a, t: (a - 0.01, t), "expected accuracy"), (lambda a, t: ("high", t), "pair of numbers"),
])
def test_verification_accuracy_odd_answers_are_explained(answer, words):
    result = check("verification_accuracy", lambda d, s: answer(*threshold_search(d, s)))
    assert not result.passed and words in result.message, result.message


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize(
    "answer",
    [None, Liar(), "faces", torch.zeros(1, 1, 1), lambda right: torch.full_like(torch.as_tensor(right, dtype=torch.float64), float("nan")),
     lambda right: torch.as_tensor(right).to(torch.int32), lambda right: [torch.as_tensor(right).tolist()],
     lambda right: (_ for _ in ()).throw(RuntimeError("boom"))],
    ids=["none", "liar", "str", "wrong-shape", "nan", "int32", "list", "raises"],
)
def test_odd_answers_are_explained_not_crashing(name, answer):
    def fn(*args, **kwargs):
        if callable(answer):
            return answer(STUDENT[name](*args, **kwargs))
        return answer

    result = check(name, fn)
    assert not result.passed and result.message
    assert "expected" in result.message or "raised" in result.message


def test_worked_examples_hold():
    x, y = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [6.0, 8.0], [3.0, 0.0]])
    assert torch.equal(torch.cdist(x, y), torch.tensor([[0.0, 10.0, 3.0], [5.0, 5.0, 4.0]]))
    a, p, n = torch.zeros(2, 2), torch.tensor([[3.0, 4.0], [0.0, 2.0]]), torch.tensor([[6.0, 8.0], [1.0, 0.0]])
    assert F.triplet_margin_loss(a, p, n, margin=1.0, eps=0.0).item() == 1.0
    assert triplets(a, p, n, squared=True).item() == 2.0
    assert batch_hard(*batch_hard_example()).item() == 2.0
    distances = torch.tensor([0.2, 0.5, 0.7, 0.9, 1.1, 1.4])
    same = torch.tensor([True, True, False, True, False, False])
    assert threshold_search(distances, same) == (5 / 6, pytest.approx(0.5))
    assert threshold_search(distances, same, largest=True)[1] == pytest.approx(0.9)


@pytest.mark.parametrize("seed", range(3))
def test_verification_oracle_equals_an_exhaustive_search(seed):
    """The oracle's first-best rule is the definition: accuracy of every threshold, then the smallest best."""
    exercise = get_exercise("verification_accuracy")
    g = torch.Generator().manual_seed(seed)
    distances = torch.round(torch.rand(60, generator=g) * 12) / 12
    same = torch.rand(60, generator=g) < 0.5
    table = {t: ((distances <= t) == same).double().mean().item() for t in distances.tolist()}
    best = max(table.values())
    assert exercise.oracle(Case((distances, same))) == (pytest.approx(best), min(t for t, v in table.items() if v == best))


def test_hidden_seed_keeps_the_worked_examples_first(monkeypatch):
    exercise = get_exercise("verification_accuracy")
    public = exercise.cases(*case_generator())
    monkeypatch.setenv("COURSE_GRADING_SEED", "4242")
    secret = exercise.cases(*case_generator())
    assert [c.label for c in public[:5]] == [c.label for c in secret[:5]]
    assert any(not torch.equal(p.args[0], s.args[0]) for p, s in zip(public[5:], secret[5:]))


def test_cases_are_plain_data():
    from course_lib.grading import serialize

    for name in REFERENCE:
        for case in get_exercise(name).cases(*case_generator()):
            assert isinstance(case, Case)
            assert serialize.loads(serialize.dumps([case.args, case.kwargs])) is not None
