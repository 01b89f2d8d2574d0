"""Lecture 06's drawing helpers and explorer (widgets.draw_boxes, draw_detections_filtered,
detection_explorer) and bench rows (box_iou, nms, roi_pool against torchvision.ops)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
import torchvision
from matplotlib.patches import Rectangle

from course_lib import bench, widgets
from course_lib.data.shapes import CLASS_NAMES, shapes_scenes
from course_lib.detection import FastRCNN, predict, set_postprocessing


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


@pytest.mark.parametrize("quick", [True, False])
def test_bench_detection_rows_agree_with_torchvision(quick):
    rows = list(bench._detection_rows(torch.device("cpu"), quick))
    assert [r.name for r in rows] == (["box_iou", "nms", "roi_pool"] if quick else ["box_iou", "nms", "nms", "roi_pool", "roi_pool"])
    with torch.no_grad():
        for row in rows[:3] if not quick else rows:
            ours, theirs = row.ours(), row.reference()
            assert torch.allclose(ours.to(theirs.dtype), theirs) if row.name == "box_iou" else torch.equal(ours, theirs)
