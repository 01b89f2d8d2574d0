"""Graders of lecture 06: a student's straightforward versions pass, course_lib agrees with the oracles
(and calling it, or torchvision's operators, is refused), every known mistake (``+ 1`` in widths, ``>=``
in NMS, floored or half-to-even RoI corners, exact-fraction bin edges, AP without the envelope, ...)
fails with a message that names the failing case, the forms the texts announce (K = 0 boxes, proposals
in another dtype, per-channel ...) are used, and odd answers are explained, not crashing."""
import math

import pytest
import torch
import torchvision

from course_lib import detection
from course_lib.grading import check, exercise_names
from course_lib.grading.core import WRONG_DTYPE, Case, case_generator, get_exercise
from course_lib.grading.detection import LECTURE, _voc_average_precision, roi_example
from odd_answers import Liar

REFERENCE = ["box_iou", "encode_boxes", "decode_boxes", "nms", "roi_pool", "average_precision"]


# --- what a student might write, following the texts ----------------------------------------------

def iou(a, b):
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.min(a[:, None, 2:], b[:, 2:]) - torch.max(a[:, None, :2], b[:, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b - inter)


def centres(boxes):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode(gt, proposals, weights=(1.0, 1.0, 1.0, 1.0)):
    wx, wy, ww, wh = weights
    px, py, pw, ph = centres(proposals)
    gx, gy, gw, gh = centres(gt)
    return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], dim=1)


def decode(deltas, proposals, weights=(1.0, 1.0, 1.0, 1.0)):
    wx, wy, ww, wh = weights
    px, py, pw, ph = (c[:, None] for c in centres(proposals.to(deltas.dtype)))
    dw = (deltas[:, 2::4] / ww).clamp(max=math.log(1000 / 16))
    dh = (deltas[:, 3::4] / wh).clamp(max=math.log(1000 / 16))
    cx, cy = deltas[:, 0::4] / wx * pw + px, deltas[:, 1::4] / wy * ph + py
    w, h = torch.exp(dw) * pw, torch.exp(dh) * ph
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=2).flatten(1)


def greedy_nms(boxes, scores, iou_threshold):
    """The textbook loop: keep the best remaining box, drop those that overlap it too much."""
    remaining = scores.argsort(descending=True).tolist()
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        overlaps = iou(boxes[best, None], boxes[remaining])[0] if remaining else []
        remaining = [j for j, o in zip(remaining, overlaps) if not o > iou_threshold]
    return torch.tensor(keep, dtype=torch.int64)


def loop_roi_pool(features, rois, output_size, spatial_scale=1.0):
    """Loops over RoIs and bins; every step in the features' dtype, as the text says."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    _, channels, height, width = features.shape
    out = features.new_zeros(len(rois), channels, oh, ow)
    scaled = rois[:, 1:] * spatial_scale
    whole = scaled.trunc()
    corners = torch.where((scaled - whole).abs() >= 0.5, whole + scaled.sign(), whole).long()
    for k, (x1, y1, x2, y2) in enumerate(corners.tolist()):
        span_w, span_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        size_h = torch.tensor(span_h, dtype=features.dtype) / oh
        size_w = torch.tensor(span_w, dtype=features.dtype) / ow
        for i in range(oh):
            top = min(max(int(torch.floor(i * size_h)) + y1, 0), height)
            bottom = min(max(int(torch.ceil((i + 1) * size_h)) + y1, 0), height)
            for j in range(ow):
                left = min(max(int(torch.floor(j * size_w)) + x1, 0), width)
                right = min(max(int(torch.ceil((j + 1) * size_w)) + x1, 0), width)
                if top < bottom and left < right:
                    out[k, :, i, j] = features[int(rois[k, 0]), :, top:bottom, left:right].amax(dim=(1, 2))
    return out


def ap(scores, true_positive, num_gt):
    if len(scores) == 0 or num_gt == 0:
        return 0.0
    hits = true_positive[scores.argsort(descending=True)].double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    envelope = precision.flip(0).cummax(0).values.flip(0)
    return float((hits * envelope).sum() / num_gt)


STUDENT = {"box_iou": iou, "encode_boxes": encode, "decode_boxes": decode, "nms": greedy_nms,
           "roi_pool": loop_roi_pool, "average_precision": ap}


def test_every_exercise_is_listed_in_notebook_order():
    assert exercise_names(LECTURE) == REFERENCE


@pytest.mark.parametrize("name", REFERENCE)
def test_student_versions_pass_and_course_lib_agrees_with_the_oracles(name, unwatched):
    result = check(name, STUDENT[name])
    assert result.passed and result.points == result.max_points, result.message
    for seed in (None, 987, 20240601):
        assert unwatched(name, getattr(detection, name), seed).passed, name


@pytest.mark.parametrize("name", REFERENCE)
def test_hidden_cases_pass_too(name):
    for seed in (987, 20240601):
        result = check(name, STUDENT[name], seed=seed)
        assert result.passed, result.message


@pytest.mark.parametrize("name,forbidden", [
    ("box_iou", torchvision.ops.box_iou), ("box_iou", detection.box_iou), ("nms", torchvision.ops.nms),
    ("roi_pool", torchvision.ops.roi_pool), ("encode_boxes", detection.encode_boxes),
    ("average_precision", detection.average_precision),
])
def test_calling_what_the_text_forbids_is_refused(name, forbidden):
    result = check(name, forbidden)
    assert not result.passed and result.points == 0
    assert "which this exercise asks you not to use" in result.message, result.message


def test_encode_and_decode_through_torchvision_box_coder_are_refused():
    from torchvision.models.detection._utils import BoxCoder

    result = check("encode_boxes", lambda gt, proposals, weights=(1.0, 1.0, 1.0, 1.0): BoxCoder(weights).encode_single(gt, proposals))
    assert not result.passed and "torchvision.models.detection._utils" in result.message


@pytest.mark.parametrize("name,key,case", [
    ("nms", ">= threshold", "IoU exactly 0.5"),
    ("roi_pool", "floored corners", "lecture example"),
    ("roi_pool", "integer-division bins", "lecture example"),
    ("roi_pool", "halves to even", "halves round away from zero"),
    ("roi_pool", "floor(|x| + 0.5)", "a hair below 0.5"),
    ("roi_pool", "exact bin edges", "57-cell RoI in 7 bins"),
    ("average_precision", "no envelope", "lecture example"),
    ("decode_boxes", "no clamp", "clamped"),
    ("decode_boxes", "proposals' dtype", "float32 deltas, float64 proposals"),
])
def test_the_named_mistakes_fail_on_the_cases_built_for_them(name, key, case, assert_mistake_fails_on):
    assert_mistake_fails_on(name, key, case)


@pytest.mark.parametrize("bins,failing", [
    ("exact", ["57-cell RoI in 7 bins on a float32 map", "29-cell RoI in 7 bins on a float64 map"]),
    ("size first, in Python floats", ["57-cell RoI in 7 bins on a float32 map"]),
])
def test_roi_pool_bin_edges_are_checked_in_the_features_dtype(bins, failing):
    """What the text states about bin edges is what the cases check: exact fractions fail both bin-edge
    cases, the text's recipe in float64 only the float32 one."""
    def python_floats(features, rois, output_size, spatial_scale=1.0):
        oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
        _, channels, height, width = features.shape
        out = features.new_zeros(len(rois), channels, oh, ow)

        def snap(v):  # halves away from zero, tested on the exact fraction
            whole = math.trunc(v)
            return whole + (math.copysign(1, v) if abs(v - whole) >= 0.5 else 0)

        def edges(i, span, n):
            if bins == "exact":
                return (i * span) // n, -((-(i + 1) * span) // n)
            return math.floor(i * (span / n)), math.ceil((i + 1) * (span / n))

        for k, (b, *corners) in enumerate(rois.tolist()):
            x1, y1, x2, y2 = (int(snap(v * spatial_scale)) for v in corners)
            span_w, span_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
            for i in range(oh):
                top, bottom = (min(max(v + y1, 0), height) for v in edges(i, span_h, oh))
                for j in range(ow):
                    left, right = (min(max(v + x1, 0), width) for v in edges(j, span_w, ow))
                    if top < bottom and left < right:
                        out[k, :, i, j] = features[int(b), :, top:bottom, left:right].amax(dim=(1, 2))
        return out

    result = check("roi_pool", python_floats)
    failed = [label for label, ok, _ in result.cases if not ok]
    assert len(failed) == len(failing) and all(any(f in label for label in failed) for f in failing), failed


@pytest.mark.parametrize("name", ["box_iou", "encode_boxes", "decode_boxes", "roi_pool"])
def test_a_wrong_dtype_is_said_first(name):
    def fn(*args, **kwargs):
        right = STUDENT[name](*args, **kwargs)
        return right.float() if right.dtype == torch.float64 else right.double()

    result = check(name, fn)
    assert not result.passed
    assert result.message.splitlines()[0].startswith("Right values, wrong dtype on all"), result.message
    assert WRONG_DTYPE in result.message


def test_texts_announce_what_the_cases_use():
    forms = {name: get_exercise(name).forms for name in REFERENCE}
    for name in ("encode_boxes", "decode_boxes"):
        assert "empty tensor" in forms[name]["gt" if name == "encode_boxes" else "deltas"]  # K = 0
    labels = [case.label for case in get_exercise("decode_boxes").cases(*case_generator())]
    assert any("float64 deltas, float32 proposals" in label for label in labels)
    assert forms["roi_pool"]["output_size"] == ("int", "(int, int)")


def test_worked_examples_hold_exactly():
    assert _voc_average_precision(torch.linspace(1, 0, 5), torch.tensor([1, 0, 0, 1, 1]).bool(), 3) == pytest.approx(11 / 15)
    features, rois, size = roi_example()
    assert torch.equal(loop_roi_pool(features, rois, size), torchvision.ops.roi_pool(features, rois, size))
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]])
    assert torchvision.ops.box_iou(boxes[:1], boxes[1:]).item() == 0.5


@pytest.mark.parametrize("n", [1, 7, 40])
def test_voc_oracle_equals_an_exhaustive_definition(n):
    # AP = sum over hits of (best precision at any rank at or below it) / num_gt
    g = torch.Generator().manual_seed(n)
    scores = torch.randperm(n, generator=g).float()
    hits = torch.rand(n, generator=g) < 0.5
    num_gt = int(hits.sum()) + 2
    order = scores.argsort(descending=True)
    ranked = hits[order].tolist()
    precision = [sum(ranked[: r + 1]) / (r + 1) for r in range(n)]
    expected = sum(max(precision[r:]) for r in range(n) if ranked[r]) / num_gt
    assert _voc_average_precision(scores, hits, num_gt) == pytest.approx(expected)


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize(
    "answer",
    [None, Liar(), "boxes", torch.zeros(1, 1, 1), lambda right: torch.full_like(right, float("nan")),
     lambda right: right.to(torch.int32), lambda right: [right.tolist()],
     lambda right: (_ for _ in ()).throw(RuntimeError("boom"))],
    ids=["none", "liar", "str", "wrong-shape", "nan", "int32", "list", "raises"],
)
def test_odd_answers_are_explained_not_crashing(name, answer):
    def fn(*args, **kwargs):
        if callable(answer):
            right = torch.as_tensor(STUDENT[name](*args, **kwargs))
            return answer(right.double() if right.dtype == torch.bool else right)
        return answer

    result = check(name, fn)
    assert not result.passed and result.message
    assert "expected" in result.message or "raised" in result.message


@pytest.mark.parametrize("answer", [lambda v: v, lambda v: torch.tensor(v), lambda v: torch.tensor(v, dtype=torch.float32)])
def test_average_precision_accepts_a_float_or_a_0d_tensor(answer):
    result = check("average_precision", lambda *a: answer(ap(*a)))
    assert result.passed, result.message


def test_average_precision_rejects_what_the_text_does_not_allow():
    result = check("average_precision", lambda *a: torch.tensor([ap(*a)]))
    assert not result.passed and "a Python float or a 0-d tensor" in result.message and "shape [1]" in result.message
    assert not check("average_precision", lambda *a: True).passed
    assert not check("average_precision", lambda *a: 1).passed


def test_hidden_seed_keeps_the_worked_examples_first(monkeypatch):
    exercise = get_exercise("roi_pool")
    public = exercise.cases(*case_generator())
    monkeypatch.setenv("COURSE_GRADING_SEED", "4242")
    secret = exercise.cases(*case_generator())
    assert [c.label for c in public[:8]] == [c.label for c in secret[:8]]
    assert [c.label for c in public[8:]] != [c.label for c in secret[8:]]


def test_cases_are_plain_data():
    from course_lib.grading import serialize

    for name in REFERENCE:
        for case in get_exercise(name).cases(*case_generator()):
            assert isinstance(case, Case)
            assert serialize.loads(serialize.dumps([case.args, case.kwargs])) is not None
