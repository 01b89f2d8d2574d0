"""Lecture 06's drawing helpers and explorer (widgets.draw_boxes, draw_detections_filtered,
opening_threshold, detection_explorer), R-CNN's warped crops as its figure shows them, and bench rows
(box_iou, nms, roi_pool against torchvision.ops)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
import torchvision
from matplotlib.patches import Rectangle

from course_lib import bench, widgets
from course_lib.data.shapes import CLASS_NAMES, shapes_scenes
from course_lib.detection import RCNN, FastRCNN, predict, set_postprocessing


def rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_draw_boxes_outlines_pixels_and_names_classes():
    image = torch.rand(3, 20, 30)
    boxes = torch.tensor([[2.0, 3.0, 12.0, 8.0], [0.0, 0.0, 30.0, 20.0]])
    ax = widgets.draw_boxes(image, boxes, torch.tensor([1, 4]), torch.tensor([0.9, 0.25]), CLASS_NAMES, title="t")
    first, second = rectangles(ax)
    # a box [x1, x2) covers pixels x1 .. x2 - 1, drawn centred on integers: its outline starts half a pixel before
    assert first.get_xy() == (1.5, 2.5) and first.get_width() == 10.0 and first.get_height() == 5.0
    assert second.get_xy() == (-0.5, -0.5)
    assert [t.get_text() for t in ax.texts] == ["circle 0.90", "star 0.25"]
    assert ax.get_title() == "t" and ax.get_xlabel() == "x (pixels)"
    widgets.draw_boxes(None, boxes[:1], ax=ax, colour="white", text=False)  # adds to the drawn image
    assert len(rectangles(ax)) == 3 and len(ax.texts) == 2
    plt.close("all")


def test_draw_detections_filtered_thresholds_then_suppresses_per_class():
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(60, 2, generator=g) * 40
    raw = {"boxes": torch.cat([corner, corner + 8 + torch.rand(60, 2, generator=g) * 16], dim=1),
           "scores": torch.rand(60, generator=g), "labels": torch.randint(1, 5, (60,), generator=g)}
    ax, kept = widgets.draw_detections_filtered(torch.rand(3, 64, 64), raw, 0.3, 0.4, CLASS_NAMES)
    above = torch.nonzero(raw["scores"] > 0.3).flatten()
    expected = above[torchvision.ops.batched_nms(raw["boxes"][above], raw["scores"][above], raw["labels"][above], 0.4)]
    assert torch.equal(kept, expected)
    assert len(rectangles(ax)) == len(kept)
    assert f"{len(kept)} of 60 raw boxes kept" in ax.get_title()
    _, everything = widgets.draw_detections_filtered(torch.rand(3, 64, 64), raw, 0.0, 1.0)
    assert len(everything) == 60  # no threshold, no NMS
    plt.close("all")


def test_detection_explorer_restores_the_model_settings():
    pytest.importorskip("ipywidgets")
    images, targets = shapes_scenes(1, seed=3)
    torch.manual_seed(0)
    model = FastRCNN(5).eval()
    before = predict(model, images)[0]
    widgets.detection_explorer(model, images[0], CLASS_NAMES, targets[0]["boxes"])
    assert set_postprocessing(model) == (0.01, 0.5, 20)
    assert torch.equal(predict(model, images)[0]["scores"], before["scores"])
    plt.close("all")


def test_opening_threshold_is_half_the_top_score_capped():
    assert widgets.opening_threshold(torch.tensor([0.1, 0.37, 0.2])) == 0.18  # half of 0.37, rounded down
    assert widgets.opening_threshold(torch.tensor([0.99, 0.5])) == 0.49
    assert widgets.opening_threshold(torch.tensor([1.0, 0.5])) == 0.5
    assert widgets.opening_threshold(torch.tensor([0.9]), cap=0.3) == 0.3
    assert widgets.opening_threshold(torch.empty(0)) == 0.0
    scores = torch.rand(400, generator=torch.Generator().manual_seed(1)) * 0.05  # an undertrained detector
    assert (scores > widgets.opening_threshold(scores)).any()


def test_detection_explorer_opens_on_boxes():
    pytest.importorskip("ipywidgets")
    images, targets = shapes_scenes(1, seed=4)
    torch.manual_seed(1)
    model = FastRCNN(5).eval()  # untrained: every score is low
    previous = set_postprocessing(model, 0.0, 1.0, 1000)
    raw = predict(model, images)[0]
    set_postprocessing(model, *previous)
    explorer = widgets.detection_explorer(model, images[0], CLASS_NAMES)
    sliders = {child.description: child.value for child in explorer.widget.children if hasattr(child, "value")}
    assert sliders["score >"] == pytest.approx(widgets.opening_threshold(raw["scores"]))
    assert (raw["scores"] > sliders["score >"]).any() and sliders["NMS IoU"] == 0.5
    explorer = widgets.detection_explorer(model, images[0], CLASS_NAMES, score_threshold=0.25, nms_threshold=0.7)
    sliders = {child.description: child.value for child in explorer.widget.children if hasattr(child, "value")}
    assert (sliders["score >"], sliders["NMS IoU"]) == (0.25, 0.7)
    plt.close("all")


def test_rcnn_warps_each_box_with_its_context():
    torch.manual_seed(0)
    model = RCNN(5, crop_size=8, context=0.25)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 28.0], [0.0, 0.0, 4.0, 64.0]])
    # 20 x 8 grows by 5 and 2 on each side; 4 x 64 by 1 and 16
    expected = torch.tensor([[5.0, 18.0, 35.0, 30.0], [-1.0, -16.0, 5.0, 80.0]])
    torch.testing.assert_close(model.context_boxes(boxes), expected)
    images = torch.rand(2, 3, 64, 64)
    rois = torch.cat([torch.tensor([[1.0], [0.0]]), boxes], dim=1)
    crops = model.warp(images, rois)
    reference = torchvision.ops.roi_align(images, torch.cat([rois[:, :1], expected], dim=1), 8, 1.0, 2, True)
    assert crops.shape == (2, 3, 8, 8)
    torch.testing.assert_close(crops, reference)
    # the CNN scores exactly these crops
    with torch.no_grad():
        _, fc7 = model.cnn(crops)
        torch.testing.assert_close(model.score_boxes(images, rois)[0], torch.sigmoid(model.svm(fc7)))


@pytest.mark.parametrize("quick", [True, False])
def test_bench_detection_rows_agree_with_torchvision(quick):
    rows = list(bench._detection_rows(torch.device("cpu"), quick))
    assert [r.name for r in rows] == (["box_iou", "nms", "roi_pool"] if quick else ["box_iou", "nms", "nms", "roi_pool", "roi_pool"])
    with torch.no_grad():
        for row in rows[:3] if not quick else rows:
            ours, theirs = row.ours(), row.reference()
            assert torch.allclose(ours.to(theirs.dtype), theirs) if row.name == "box_iou" else torch.equal(ours, theirs)
