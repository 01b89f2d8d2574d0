"""Graders of lecture 07: a student's straightforward versions pass; the classic mistakes (weights reshaped
channels-last, a missing bias, ``(size - 1) * stride`` without the kernel term or with ``+ 2 * padding``, an
off-centre bilinear kernel, mIoU averaging absent classes, counting ignored pixels or averaging per image)
fail with a message that names the failing case and the mistake; odd answers are explained, not crashing;
calling course_lib's own versions is refused."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import segmentation
from course_lib.grading import check, exercise_names
from course_lib.grading.core import Case, case_generator, get_exercise
from course_lib.grading.segmentation import LECTURE, _iou_oracle, background_example, fc_example
from odd_answers import Liar

REFERENCE = ["fc_to_conv", "conv_transpose_output_size", "bilinear_kernel", "mean_iou"]


# --- what a student might write, with switches for the usual mistakes -----------------------------

def fc_to_conv(linear, in_channels, kernel_size, *, channels_last=False, bias=True):
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    out = linear.out_features
    conv = nn.Conv2d(in_channels, out, (kh, kw), bias=bias and linear.bias is not None,
                     dtype=linear.weight.dtype, device=linear.weight.device)
    if channels_last:
        weight = linear.weight.view(out, kh, kw, in_channels).permute(0, 3, 1, 2)
    else:
        weight = linear.weight.view(out, in_channels, kh, kw)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if conv.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def transposed_size(size, kernel, stride=1, padding=0, output_padding=0, dilation=1, *, kernel_term=True, plus_padding=False):
    reach = dilation * (kernel - 1) if kernel_term else 0
    return (size - 1) * stride + (2 if plus_padding else -2) * padding + reach + output_padding + 1


def bilinear(channels, factor, *, centre="(k - 1) / 2"):
    k = 2 * factor - factor % 2
    c = (k - 1) / 2 if centre == "(k - 1) / 2" else k // 2
    taps = 1 - (torch.arange(k, dtype=torch.float32) - c).abs() / factor
    weight = torch.zeros(channels, channels, k, k)
    for i in range(channels):
        weight[i, i] = taps[:, None] * taps[None, :]
    return weight


def miou(pred, target, num_classes, ignore_index=None, *, absent=None, count_ignored=False, per_image=False):
    if per_image and pred.dim() == 3:
        return sum(miou(p, t, num_classes, ignore_index) for p, t in zip(pred, target)) / len(pred)
    if ignore_index is not None and not count_ignored:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    scores = []
    for c in range(num_classes):
        inter = ((pred == c) & (target == c)).sum().item()
        union = ((pred == c) | (target == c)).sum().item()
        if union:
            scores.append(inter / union)
        elif absent is not None:
            scores.append(absent)
    return torch.tensor(sum(scores) / len(scores))


STUDENT = {"fc_to_conv": fc_to_conv, "conv_transpose_output_size": transposed_size, "bilinear_kernel": bilinear, "mean_iou": miou}


def wrong(name, **switches):
    return lambda *args, **kwargs: STUDENT[name](*args, **kwargs, **switches)


# the list of plausible wrong versions, and the mistake each must be diagnosed as
WRONG = {
    "fc_to_conv": [(wrong("fc_to_conv", channels_last=True), "channels last"), (wrong("fc_to_conv", bias=False), "no bias")],
    "conv_transpose_output_size": [(wrong("conv_transpose_output_size", kernel_term=False), "no kernel term"),
                                   (wrong("conv_transpose_output_size", plus_padding=True), "plus padding")],
    "bilinear_kernel": [(wrong("bilinear_kernel", centre="k // 2"), "off-centre")],
    "mean_iou": [(wrong("mean_iou", absent=0.0), "absent as 0"), (wrong("mean_iou", absent=1.0), "absent as 1"),
                 (wrong("mean_iou", count_ignored=True), "ignored pixels counted"), (wrong("mean_iou", per_image=True), "per image")],
}


def test_every_exercise_has_wrong_answers_listed():
    assert exercise_names(LECTURE) == REFERENCE  # notebook order
    assert set(WRONG) == set(REFERENCE)


@pytest.mark.parametrize("name", REFERENCE)
def test_student_versions_pass_on_public_and_hidden_cases(name):
    for seed in (None, 987, 20240601):
        result = check(name, STUDENT[name], seed=seed)
        assert result.passed and result.points == result.max_points, result.message


@pytest.mark.parametrize("name,index", [(n, i) for n, fns in WRONG.items() for i in range(len(fns))])
def test_wrong_versions_fail_with_a_named_case_and_mistake(name, index, assert_rejected):
    fn, key = WRONG[name][index]
    result = assert_rejected(name, fn)
    assert result.diagnosis == key, result.message
    mistake = next(m for m in get_exercise(name).mistakes if m.key == key)
    assert mistake.message in result.message and "lecture 07, section" in mistake.message


def test_the_worked_examples_catch_their_mistakes(assert_rejected):
    assert "lecture example" in assert_rejected("mean_iou", WRONG["mean_iou"][0][0]).message  # class 2 nowhere
    assert "ignore_index" in assert_rejected("mean_iou", WRONG["mean_iou"][2][0]).message
    assert "two images" in assert_rejected("mean_iou", WRONG["mean_iou"][3][0]).message
    assert "lecture example" in assert_rejected("fc_to_conv", WRONG["fc_to_conv"][0][0]).message
    assert "FCN's 2x upsampler" in assert_rejected("conv_transpose_output_size", WRONG["conv_transpose_output_size"][0][0]).message
    assert "factor=2" in assert_rejected("bilinear_kernel", WRONG["bilinear_kernel"][0][0]).message


@pytest.mark.parametrize("name", REFERENCE)
def test_course_lib_itself_is_refused(name):
    result = check(name, getattr(segmentation, name))
    assert not result.passed and "asks you not to use" in result.message, result.message


def test_worked_examples_hold():
    weight, bias, x = fc_example()
    conv = fc_to_conv(nn.Linear(8, 1), 2, 2)
    with torch.no_grad():
        conv.weight.copy_(weight.view(1, 2, 2, 2))
        conv.bias.copy_(bias)
        # window at (0, 0): channel 0 holds 0, 1, 3, 4 and channel 1 holds 9, 10, 12, 13
        assert conv(x)[0, 0, 0, 0].item() == 1 * 0 + 2 * 1 + 3 * 3 + 4 * 4 + 5 * 9 + 6 * 10 + 7 * 12 + 8 * 13 + 0.5
    pred, target = background_example()
    assert (pred == target).float().mean().item() == 60 / 64
    assert _iou_oracle(Case((pred, target, 2))) == pytest.approx(60 / 64 / 2)
    exercise = get_exercise("mean_iou")
    for case in exercise.cases(*case_generator()):
        if case.expected is not None:  # hand-worked values agree with the loop oracle
            assert exercise.oracle(case) == pytest.approx(case.expected), case.label
    assert get_exercise("conv_transpose_output_size").oracle(Case((8, 4), {"stride": 2, "padding": 1})) == 16


def test_bilinear_oracle_is_the_interpolation_it_claims():
    image = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    up = F.conv_transpose2d(image, bilinear(2, 2).double(), stride=2, padding=1)
    reference = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], reference[..., 2:-2, 2:-2])


ODD = [None, Liar(), "scores", lambda right: (_ for _ in ()).throw(RuntimeError("boom"))]


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize("answer", ODD, ids=["none", "liar", "str", "raises"])
def test_odd_answers_are_explained_not_crashing(name, answer):
    def fn(*args, **kwargs):
        return answer(None) if callable(answer) else answer

    result = check(name, fn)
    assert not result.passed and result.message
    assert "expected" in result.message or "raised" in result.message or "must return" in result.message


@pytest.mark.parametrize("answer,words", [
    (lambda *a: nn.Linear(1, 1), "must return a torch.nn.Conv2d"),
    (lambda linear, c, k: fc_to_conv(linear.float(), c, k), "wrong dtype"),
])
def test_fc_to_conv_odd_modules(answer, words):
    result = check("fc_to_conv", answer)
    assert not result.passed and words in result.message, result.message


@pytest.mark.parametrize("answer,words", [
    (lambda c, f: bilinear(c, f).double(), "wrong dtype"),
    (lambda c, f: bilinear(c, f)[:, :, :-1], "kernel shape"),
    (lambda c, f: bilinear(c, f).tolist(), "must return a tensor"),
    (lambda c, f: torch.full_like(bilinear(c, f), float("nan")), "differ"),
])
def test_bilinear_kernel_odd_answers(answer, words):
    result = check("bilinear_kernel", answer)
    assert not result.passed and words in result.message, result.message


@pytest.mark.parametrize("answer", [lambda v: float(v), lambda v: v.double(), lambda v: v.reshape(1)])
def test_mean_iou_accepts_a_float_or_a_one_element_tensor(answer):
    result = check("mean_iou", lambda *a, **k: answer(miou(*a, **k)))
    assert result.passed, result.message


def test_mean_iou_odd_numbers_fail():
    assert not check("mean_iou", lambda *a, **k: float("nan")).passed
    assert not check("mean_iou", lambda *a, **k: torch.tensor([0.5, 0.5])).passed
    assert not check("conv_transpose_output_size", lambda *a, **k: 16.0).passed


def test_hidden_seed_keeps_the_worked_examples_first(monkeypatch):
    for name in REFERENCE:
        exercise = get_exercise(name)
        public = exercise.cases(*case_generator())
        monkeypatch.setenv("COURSE_GRADING_SEED", "4242")
        secret = exercise.cases(*case_generator())
        monkeypatch.delenv("COURSE_GRADING_SEED")
        worked = [c.label for c in public if c.label.startswith("lecture example")]
        assert worked and [c.label for c in secret[: len(worked)]] == worked
        assert [c.label for c in public] != [c.label for c in secret]


def test_cases_are_plain_data():
    from course_lib.grading import serialize

    for name in REFERENCE:
        for case in get_exercise(name).cases(*case_generator()):
            assert serialize.loads(serialize.dumps([case.args, case.kwargs])) is not None
