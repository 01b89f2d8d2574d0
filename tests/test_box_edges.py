"""The box operations equal torchvision's at the edges their contract covers, on generated cases:

- ``box_iou`` and ``box_area`` on dtypes whose products overflow (float16, bfloat16, int8, int16,
  uint8): torchvision widens them (float32, int32) before multiplying, and so must we;
- ``nms`` when an IoU and the threshold are within rounding of each other: the IoU of integer boxes is
  an exact fraction, and choosing that fraction as the threshold puts a pair right at the edge of
  "IoU > threshold" (torchvision's CPU kernel compares the float32 IoU with the threshold in float64);
- ``roi_pool`` with corners a hair below (or at) a half after scaling, and spans whose bins' edges
  float32 arithmetic moves (a 57-cell span in 7 bins).
"""
import math

import pytest
import torch
import torchvision

from course_lib.detection import box_area, box_iou, nms, nms_naive, roi_pool


def integer_boxes(gen, n, high, dtype):
    """``[n, 4]`` boxes with integer corners in ``[0, high]``, at least one pixel wide and tall."""
    xy = torch.randint(0, high, (n, 2), generator=gen)
    wh = 1 + (torch.rand(n, 2, generator=gen) * (high - xy)).long()
    return torch.cat([xy, (xy + wh).clamp(max=high)], dim=1).to(dtype)


# --- box_iou and box_area: no overflow, as torchvision ----------------------------------------------

@pytest.mark.parametrize("dtype,high", [
    (torch.float16, 2000), (torch.bfloat16, 2000), (torch.int8, 127), (torch.int16, 30000),
    (torch.int32, 40000), (torch.int64, 10**6), (torch.float32, 10**4), (torch.float64, 10**6),
])
def test_box_iou_and_area_equal_torchvision_on_dtypes_that_overflow(dtype, high):
    gen = torch.Generator().manual_seed(high)
    for _ in range(20):
        a, b = integer_boxes(gen, 17, high, dtype), integer_boxes(gen, 9, high, dtype)
        for got, expected in [(box_iou(a, b), torchvision.ops.box_iou(a, b)), (box_area(a), torchvision.ops.box_area(a))]:
            assert got.dtype == expected.dtype and torch.equal(got, expected), (dtype, a, b)
        assert torch.isfinite(box_iou(a, b)).all()


def test_uint8_boxes_do_not_wrap_around():
    # torchvision subtracts uint8 corners before widening, so crossed corners wrap (its IoU can be
    # negative); widened first, the answer is torchvision's on the same boxes in int16.
    gen = torch.Generator().manual_seed(8)
    for _ in range(20):
        a, b = integer_boxes(gen, 11, 255, torch.uint8), integer_boxes(gen, 13, 255, torch.uint8)
        assert torch.equal(box_iou(a, b), torchvision.ops.box_iou(a.short(), b.short()))
        assert torch.equal(box_area(a), torchvision.ops.box_area(a))
    apart = torch.tensor([[0, 0, 10, 10]], dtype=torch.uint8), torch.tensor([[20, 20, 30, 30]], dtype=torch.uint8)
    assert box_iou(*apart).item() == 0.0


def test_half_precision_boxes_of_a_few_hundred_pixels():
    boxes = torch.tensor([[0.0, 0.0, 300.0, 300.0], [100.0, 0.0, 400.0, 300.0]], dtype=torch.float16)
    assert box_area(boxes).tolist() == [90000.0, 90000.0]  # over float16's largest value, 65504
    assert box_iou(boxes, boxes)[0, 1].item() == pytest.approx(0.5)


# --- nms: "IoU > threshold" decided as torchvision decides it ---------------------------------------

def test_nms_suppresses_where_torchvision_does_at_a_rounding_tie():
    boxes, scores = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 10.0, 1.0]]), torch.tensor([0.9, 0.8])
    # The float32 IoU is 0.100000001, just above 0.1: torchvision's CPU kernel suppresses the second box.
    assert torchvision.ops.nms(boxes, scores, 0.1).tolist() == [0]
    assert nms(boxes, scores, 0.1).tolist() == [0] and nms_naive(boxes, scores, 0.1).tolist() == [0]
    # In float64 the IoU is 0.1 exactly, not above the threshold: both boxes stay.
    assert nms(boxes.double(), scores.double(), 0.1).tolist() == [0, 1] == torchvision.ops.nms(boxes.double(), scores.double(), 0.1).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_equals_torchvision_with_thresholds_at_the_ious(dtype):
    """Thresholds equal to an IoU of the set, in float64 and in the boxes' dtype, and one step either side."""
    gen = torch.Generator().manual_seed(11)
    for trial in range(150):
        n = int(torch.randint(3, 25, (1,), generator=gen))
        boxes = integer_boxes(gen, n, 12, dtype)
        scores = torch.randperm(n, generator=gen).to(dtype) / n
        exact = box_iou(boxes.double(), boxes.double())  # fractions of small integers, in float64
        i, j = torch.randint(0, n, (2,), generator=gen).tolist()
        tie = float(exact[i, j]) if 0 < exact[i, j] < 1 else 0.5
        in_dtype = float(torch.tensor(tie, dtype=dtype))
        for threshold in {tie, in_dtype, math.nextafter(tie, 0.0), math.nextafter(tie, 1.0)}:
            expected = torchvision.ops.nms(boxes, scores, threshold)
            assert torch.equal(nms(boxes, scores, threshold), expected), (trial, boxes, threshold)
            if trial % 10 == 0:
                assert torch.equal(nms_naive(boxes, scores, threshold), expected), (trial, boxes, threshold)


# --- roi_pool: corners rounded and bins split exactly as torchvision's kernel -----------------------

def test_roi_pool_corners_a_hair_below_a_half():
    features = torch.arange(36.0).view(1, 1, 6, 6)
    below = math.nextafter(0.5, 0.0)
    for dtype in (torch.float32, torch.float64):
        hair = float(torch.tensor(below, dtype=dtype)) if dtype == torch.float64 else 0.49999997
        rois = torch.tensor([[0, hair, hair, 3 + hair, 2.5], [0, -hair, -0.5, 4.5, -hair + 4]], dtype=dtype)
        assert torch.equal(roi_pool(features.to(dtype), rois, 2), torchvision.ops.roi_pool(features.to(dtype), rois, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_roi_pool_equals_torchvision_near_half_cells_and_on_awkward_spans(dtype):
    gen = torch.Generator().manual_seed(12)
    for trial in range(40):
        scale = [1.0, 0.5, 0.25, 0.0625, 0.1, 1 / 3][trial % 6]
        height, width = int(torch.randint(4, 70, (1,), generator=gen)), int(torch.randint(4, 70, (1,), generator=gen))
        features = torch.randn(2, 3, height, width, generator=gen).to(dtype)
        # Corners that land on k + 0.5 after scaling, and one step of the dtype either side of it.
        cells = torch.randint(-3, max(height, width) + 3, (12, 4), generator=gen).double() + 0.5
        corners = (cells / scale).to(dtype)
        step = torch.randint(-1, 2, corners.shape, generator=gen)
        corners = torch.where(step > 0, torch.nextafter(corners, corners.new_tensor(math.inf)), corners)
        if dtype != torch.float16:
            corners = torch.where(step < 0, torch.nextafter(corners, corners.new_tensor(-math.inf)), corners)
        x1, x2 = torch.minimum(corners[:, 0], corners[:, 2]), torch.maximum(corners[:, 0], corners[:, 2])
        y1, y2 = torch.minimum(corners[:, 1], corners[:, 3]), torch.maximum(corners[:, 1], corners[:, 3])
        index = torch.randint(0, 2, (12,), generator=gen).to(dtype)
        rois = torch.stack([index, x1, y1, x2, y2], dim=1)
        output = [7, (7, 11), (13, 14), 1][trial % 4]
        got, expected = roi_pool(features, rois, output, scale), torchvision.ops.roi_pool(features, rois, output, scale)
        assert torch.equal(got, expected), (trial, dtype, scale)


def test_roi_pool_float32_bin_edges_of_a_57_cell_span():
    # 57 / 7 = 8.142857 in float32, and 7 times that is 57.000004: the last bin's end is ceiled to 58.
    features = torch.randn(1, 1, 60, 60, generator=torch.Generator().manual_seed(13))
    features[0, 0, 57, :] = 100.0  # the row only a bin that ends at 58 sees
    rois = torch.tensor([[0.0, 0.0, 0.0, 56.0, 56.0]])
    expected = torchvision.ops.roi_pool(features, rois, 7)
    assert (expected[0, 0, -1] == 100.0).all() and not (expected[0, 0, :-1] == 100.0).any()
    assert torch.equal(roi_pool(features, rois, 7), expected)
    assert torch.equal(roi_pool(features.double(), rois.double(), 7), torchvision.ops.roi_pool(features.double(), rois.double(), 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_equals_torchvision_on_cuda_at_rounding_ties(dtype):
    """torchvision's CUDA kernel rounds the threshold to float32 before comparing: so must we, there."""
    gen = torch.Generator().manual_seed(14)
    for trial in range(100):
        n = int(torch.randint(3, 25, (1,), generator=gen))
        boxes = integer_boxes(gen, n, 12, dtype).cuda()
        scores = (torch.randperm(n, generator=gen).to(dtype) / n).cuda()
        exact = box_iou(boxes.double(), boxes.double()).cpu()
        i, j = torch.randint(0, n, (2,), generator=gen).tolist()
        tie = float(exact[i, j]) if 0 < exact[i, j] < 1 else 0.5
        for threshold in {tie, math.nextafter(tie, 0.0), math.nextafter(tie, 1.0)}:
            assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold)), (trial, threshold)
