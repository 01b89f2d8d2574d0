"""Graders of lecture 06: course_lib and a student's straightforward versions pass; the classic
mistakes (``+ 1`` in widths, ``>=`` in NMS, floored RoI corners, non-overlapping RoI bins, AP without
the precision envelope, ...) fail with a message that names the failing case; odd answers are
explained, not crashing."""
import math

import pytest
import torch
import torchvision

from course_lib import detection
from course_lib.grading import check, exercise_names
from course_lib.grading.core import Case, case_generator, get_exercise
from course_lib.grading.detection import LECTURE, _voc_average_precision, roi_example
from odd_answers import Liar

REFERENCE = ["box_iou", "encode_boxes", "decode_boxes", "nms", "roi_pool", "average_precision"]


# --- what a student might write, with switches for the usual mistakes -----------------------------

def iou(a, b, *, plus_one=False, no_clamp=False, union="sum-inter"):
    extra = 1.0 if plus_one else 0.0
    area_a = (a[:, 2] - a[:, 0] + extra) * (a[:, 3] - a[:, 1] + extra)
    area_b = (b[:, 2] - b[:, 0] + extra) * (b[:, 3] - b[:, 1] + extra)
    wh = torch.min(a[:, None, 2:], b[:, 2:]) - torch.max(a[:, None, :2], b[:, :2]) + extra
    if not no_clamp:
        wh = wh.clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    if union == "sum-inter":
        return inter / (area_a[:, None] + area_b - inter)
    if union == "sum":
        return inter / (area_a[:, None] + area_b)
    return inter / torch.min(area_a[:, None], area_b)  # intersection over the smaller box


def centres(boxes, extra=0.0):
    w, h = boxes[:, 2] - boxes[:, 0] + extra, boxes[:, 3] - boxes[:, 1] + extra
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode(gt, proposals, weights=(1.0, 1.0, 1.0, 1.0), *, plus_one=False, flip_log=False, by_gt=False,
           ignore_weights=False, corners=False):
    wx, wy, ww, wh = (1.0, 1.0, 1.0, 1.0) if ignore_weights else weights
    extra = 1.0 if plus_one else 0.0
    px, py, pw, ph = centres(proposals, extra)
    gx, gy, gw, gh = centres(gt, extra)
    if corners:
        px, py, gx, gy = proposals[:, 0], proposals[:, 1], gt[:, 0], gt[:, 1]
    sw, sh = (gw, gh) if by_gt else (pw, ph)
    tw, th = (torch.log(pw / gw), torch.log(ph / gh)) if flip_log else (torch.log(gw / pw), torch.log(gh / ph))
    return torch.stack([wx * (gx - px) / sw, wy * (gy - py) / sh, ww * tw, wh * th], dim=1)


def decode(deltas, proposals, weights=(1.0, 1.0, 1.0, 1.0), *, clamp=True, plus_one=False, multiply=False,
           centre_format=False, first_class=False):
    if first_class:
        deltas = deltas[:, :4]
    wx, wy, ww, wh = weights
    if multiply:
        wx, wy, ww, wh = 1 / wx, 1 / wy, 1 / ww, 1 / wh
    px, py, pw, ph = (c[:, None] for c in centres(proposals.to(deltas.dtype), 1.0 if plus_one else 0.0))
    dw, dh = deltas[:, 2::4] / ww, deltas[:, 3::4] / wh
    if clamp:
        dw, dh = dw.clamp(max=math.log(1000 / 16)), dh.clamp(max=math.log(1000 / 16))
    cx, cy = deltas[:, 0::4] / wx * pw + px, deltas[:, 1::4] / wy * ph + py
    w, h = torch.exp(dw) * pw, torch.exp(dh) * ph
    parts = [cx, cy, w, h] if centre_format else [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    return torch.stack(parts, dim=2).flatten(1)


def greedy_nms(boxes, scores, iou_threshold, *, greater_equal=False, all_higher=False, input_order=False,
               plus_one=False):
    """The textbook loop: keep the best remaining box, drop those that overlap it too much."""
    order = list(range(len(scores))) if input_order else scores.argsort(descending=True).tolist()
    overlaps = iou(boxes, boxes, plus_one=plus_one)
    keep, dropped = [], set()
    for rank, i in enumerate(order):
        if all_higher:  # suppressed by any higher-scoring box, kept or not
            beaten = any(overlaps[j, i] > iou_threshold for j in order[:rank])
        else:
            beaten = i in dropped
        if beaten:
            continue
        keep.append(i)
        for j in order[rank + 1:]:
            if overlaps[i, j] >= iou_threshold if greater_equal else overlaps[i, j] > iou_threshold:
                dropped.add(j)
    return torch.tensor(keep, dtype=torch.int64)


def loop_roi_pool(features, rois, output_size, spatial_scale=1.0, *, corner="round", bins="floor-ceil",
                  plus_one=True, use_scale=True, empty=0.0, reduce="max"):
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    _, channels, height, width = features.shape
    out = features.new_zeros(len(rois), channels, oh, ow)
    scale = spatial_scale if use_scale else 1.0
    snap = {"round": lambda v: math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5),
            "floor": math.floor, "even": lambda v: int(torch.tensor(v).round())}[corner]
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (snap(v * scale) for v in (x1, y1, x2, y2))
        rw, rh = max(x2 - x1 + plus_one, 1), max(y2 - y1 + plus_one, 1)
        for i in range(oh):
            for j in range(ow):
                if bins == "floor-ceil":
                    h0, h1 = math.floor(i * rh / oh), math.ceil((i + 1) * rh / oh)
                    w0, w1 = math.floor(j * rw / ow), math.ceil((j + 1) * rw / ow)
                else:  # plain integer division: bins that never share a row or column
                    h0, h1 = i * rh // oh, (i + 1) * rh // oh
                    w0, w1 = j * rw // ow, (j + 1) * rw // ow
                h0, h1 = min(max(h0 + y1, 0), height), min(max(h1 + y1, 0), height)
                w0, w1 = min(max(w0 + x1, 0), width), min(max(w1 + x1, 0), width)
                region = features[int(b), :, h0:h1, w0:w1]
                if region.numel() == 0:
                    out[k, :, i, j] = empty
                else:
                    out[k, :, i, j] = region.amax((1, 2)) if reduce == "max" else region.mean((1, 2))
    return out


def ap(scores, true_positive, num_gt, *, envelope="right", ranked=True, denominator="num_gt", points=None):
    order = scores.argsort(descending=True, stable=True) if ranked else torch.arange(len(scores))
    hits = true_positive[order].double()
    if hits.numel() == 0 or num_gt == 0:
        return 0.0
    found = hits.cumsum(0)
    precision = found / torch.arange(1, len(hits) + 1)
    recall = found / (num_gt if denominator == "num_gt" else max(float(hits.sum()), 1.0))
    if envelope == "right":
        precision = precision.flip(0).cummax(0).values.flip(0)
    elif envelope == "left":
        precision = precision.cummax(0).values
    if points:  # the old VOC2007 11-point interpolation
        return sum(float(precision[recall >= t].max()) if (recall >= t).any() else 0.0
                   for t in torch.linspace(0, 1, points).tolist()) / points
    return float((torch.diff(recall, prepend=recall.new_zeros(1)) * precision).sum())


STUDENT = {"box_iou": iou, "encode_boxes": encode, "decode_boxes": decode, "nms": greedy_nms,
           "roi_pool": loop_roi_pool, "average_precision": ap}


def wrong(name, **switches):
    return lambda *args, **kwargs: STUDENT[name](*args, **kwargs, **switches)


WRONG = {
    "box_iou": [wrong("box_iou", plus_one=True), wrong("box_iou", no_clamp=True),
                wrong("box_iou", union="sum"), wrong("box_iou", union="min")],
    "encode_boxes": [wrong("encode_boxes", plus_one=True), wrong("encode_boxes", flip_log=True),
                     wrong("encode_boxes", by_gt=True), wrong("encode_boxes", ignore_weights=True),
                     wrong("encode_boxes", corners=True)],
    "decode_boxes": [wrong("decode_boxes", clamp=False), wrong("decode_boxes", plus_one=True),
                     wrong("decode_boxes", multiply=True), wrong("decode_boxes", centre_format=True),
                     wrong("decode_boxes", first_class=True)],
    "nms": [wrong("nms", greater_equal=True), wrong("nms", all_higher=True), wrong("nms", input_order=True),
            wrong("nms", plus_one=True)],
    "roi_pool": [wrong("roi_pool", corner="floor"), wrong("roi_pool", bins="integer-division"),
                 wrong("roi_pool", plus_one=False), wrong("roi_pool", use_scale=False),
                 wrong("roi_pool", corner="even"), wrong("roi_pool", empty=-math.inf),
                 wrong("roi_pool", reduce="mean")],
    "average_precision": [wrong("average_precision", envelope=None), wrong("average_precision", envelope="left"),
                          wrong("average_precision", ranked=False), wrong("average_precision", denominator="hits"),
                          wrong("average_precision", points=11)],
}


def test_every_exercise_has_wrong_answers_listed():
    assert exercise_names(LECTURE) == REFERENCE  # notebook order
    assert set(WRONG) == set(REFERENCE)


@pytest.mark.parametrize("name", REFERENCE)
def test_course_lib_and_student_versions_pass(name):
    result = check(name, getattr(detection, name))
    assert result.passed and result.points == result.max_points, result.message
    result = check(name, STUDENT[name])
    assert result.passed, result.message


@pytest.mark.parametrize("name", REFERENCE)
def test_hidden_cases_pass_too(name):
    for seed in (987, 20240601):
        result = check(name, getattr(detection, name), seed=seed)
        assert result.passed, result.message


@pytest.mark.parametrize("name,index", [(n, i) for n, fns in WRONG.items() for i in range(len(fns))])
def test_wrong_answers_fail_with_a_named_case(name, index, assert_rejected):
    assert_rejected(name, WRONG[name][index])


def test_the_named_mistakes_fail_on_the_cases_built_for_them(assert_rejected):
    # >= in NMS: the IoU-exactly-0.5 case; floored corners and integer-division bins: the worked example.
    assert "IoU exactly 0.5" in assert_rejected("nms", WRONG["nms"][0]).message
    assert "lecture example" in assert_rejected("roi_pool", WRONG["roi_pool"][0]).message
    assert "lecture example" in assert_rejected("roi_pool", WRONG["roi_pool"][1]).message
    assert "lecture example" in assert_rejected("average_precision", WRONG["average_precision"][0]).message
    assert "clamped" in assert_rejected("decode_boxes", WRONG["decode_boxes"][0]).message


def test_worked_examples_hold_exactly():
    assert _voc_average_precision(torch.linspace(1, 0, 5), torch.tensor([1, 0, 0, 1, 1]).bool(), 3) == pytest.approx(11 / 15)
    features, rois, size = roi_example()
    expected = torchvision.ops.roi_pool(features, rois, size)
    assert torch.equal(loop_roi_pool(features, rois, size), expected)
    for mistake in ({"corner": "floor"}, {"bins": "integer-division"}, {"plus_one": False}):
        assert not torch.equal(loop_roi_pool(features, rois, size, **mistake), expected), mistake
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]])
    assert detection.box_iou(boxes[:1], boxes[1:]).item() == 0.5


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
            right = torch.as_tensor(getattr(detection, name)(*args, **kwargs))
            return answer(right.double() if right.dtype == torch.bool else right)
        return answer

    result = check(name, fn)
    assert not result.passed and result.message
    assert "expected" in result.message or "raised" in result.message


@pytest.mark.parametrize("answer", [lambda v: float(v), lambda v: v, lambda v: v.reshape(1), lambda v: v.float()])
def test_average_precision_accepts_a_float_or_a_one_element_tensor(answer):
    result = check("average_precision", lambda *a: answer(detection.average_precision(*a)))
    assert result.passed, result.message


def test_average_precision_constant_answers_fail():
    assert not check("average_precision", lambda *a: True).passed
    assert not check("average_precision", lambda *a: 1).passed



def test_hidden_seed_keeps_the_worked_examples_first(monkeypatch):
    exercise = get_exercise("roi_pool")
    public = exercise.cases(*case_generator())
    monkeypatch.setenv("COURSE_GRADING_SEED", "4242")
    secret = exercise.cases(*case_generator())
    assert [c.label for c in public[:3]] == [c.label for c in secret[:3]]
    assert [c.label for c in public[3:]] != [c.label for c in secret[3:]]


def test_cases_are_plain_data():
    from course_lib.grading import serialize

    for name in REFERENCE:
        for case in get_exercise(name).cases(*case_generator()):
            assert isinstance(case, Case)
            assert serialize.loads(serialize.dumps([case.args, case.kwargs])) is not None
