import numpy as np
import pytest
import torch
import torchvision

from course_lib.data.shapes import CLASS_NAMES, masks_to_boxes, semantic_masks, shapes_scenes


@pytest.fixture(scope="module")
def scenes():
    return shapes_scenes(24, size=(48, 80), max_objects=4, seed=3)


def test_format_and_ranges(scenes):
    images, targets = scenes
    assert images.shape == (24, 3, 48, 80) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert len(targets) == 24
    for t in targets:
        k = t["labels"].shape[0]
        assert 1 <= k <= 4
        assert t["boxes"].shape == (k, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64 and t["labels"].min() >= 1 and t["labels"].max() <= 4
        assert t["masks"].shape == (k, 48, 80) and t["masks"].dtype == torch.uint8


def test_all_classes_and_counts_occur():
    _, targets = shapes_scenes(64, seed=0)
    labels = torch.cat([t["labels"] for t in targets])
    assert set(labels.tolist()) == {1, 2, 3, 4}
    assert {len(t["labels"]) for t in targets} == {1, 2, 3, 4}
    assert CLASS_NAMES[0] == "background" and len(CLASS_NAMES) == 5


def test_deterministic_for_a_seed():
    a_images, a_targets = shapes_scenes(6, seed=11)
    b_images, b_targets = shapes_scenes(6, seed=11)
    c_images, _ = shapes_scenes(6, seed=12)
    assert torch.equal(a_images, b_images)
    for a, b in zip(a_targets, b_targets):
        for key in ("boxes", "labels", "masks"):
            assert torch.equal(a[key], b[key])
    assert not torch.equal(a_images, c_images)


def test_boxes_are_tight_boxes_of_masks_and_inside(scenes):
    images, targets = scenes
    height, width = images.shape[-2:]
    for t in targets:
        for box, mask in zip(t["boxes"], t["masks"]):
            ys, xs = np.nonzero(mask.numpy())
            assert len(xs) > 20
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert (t["boxes"][:, :2] >= 1).all()
        assert (t["boxes"][:, 2] <= width - 1).all() and (t["boxes"][:, 3] <= height - 1).all()


def test_objects_never_overlap(scenes):
    _, targets = scenes
    for t in targets:
        assert t["masks"].sum(dim=0).max() <= 1


def test_objects_are_drawn_in_their_masks():
    # An object's pixels differ from the background colour by at least 0.25 per channel before the
    # texture, clutter and noise; on average over the mask the contrast must remain clearly visible.
    images, targets = shapes_scenes(8, seed=5)
    for image, t in zip(images, targets):
        for mask in t["masks"].bool():
            ring = torch.nn.functional.max_pool2d(mask[None, None].float(), 5, 1, 2)[0, 0].bool() & ~mask
            inside = image[:, mask].mean(dim=1)
            around = image[:, ring].mean(dim=1)
            assert (inside - around).abs().max() > 0.1


def test_classes_subset_relabels():
    _, targets = shapes_scenes(10, classes=("star", "circle"), seed=2)
    labels = torch.cat([t["labels"] for t in targets])
    assert set(labels.tolist()) <= {1, 2}


def test_masks_to_boxes_matches_torchvision_plus_one():
    masks = torch.zeros(3, 9, 7, dtype=torch.bool)
    masks[0, 2:5, 1:4] = True
    masks[1, 8, 6] = True
    masks[2, 0:9:3, 2:6:2] = True
    expected = torchvision.ops.masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(masks_to_boxes(masks), expected)
    assert torch.equal(masks_to_boxes(torch.zeros(1, 4, 4)), torch.zeros(1, 4))


def test_semantic_masks_later_objects_win():
    masks = torch.zeros(3, 5, 6, dtype=torch.uint8)
    masks[0, :3, :3] = 1
    masks[1, 1:4, 1:4] = 1
    masks[2, 4, 5] = 1
    targets = [
        {"masks": masks[:2], "labels": torch.tensor([2, 3])},
        {"masks": masks[2:], "labels": torch.tensor([4])},
        {"masks": masks[:0], "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    expected = torch.zeros(3, 5, 6, dtype=torch.int64)
    expected[0][masks[0].bool()] = 2
    expected[0][masks[1].bool()] = 3
    expected[1, 4, 5] = 4
    result = semantic_masks(targets, (5, 6))
    assert result.dtype == torch.int64 and torch.equal(result, expected)


def test_semantic_masks_of_scenes(scenes):
    images, targets = scenes
    labels = semantic_masks(targets, images.shape[-2:])
    for label_map, t in zip(labels, targets):
        painted = torch.zeros_like(label_map)
        for mask, label in zip(t["masks"].bool(), t["labels"]):
            painted[mask] = label
        assert torch.equal(label_map, painted)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n=0), "n"),
        (dict(n=2, size=16), "size"),
        (dict(n=2, max_objects=0), "max_objects"),
        (dict(n=2, max_objects=20), "max_objects"),
        (dict(n=2, seed=-1), "seed"),
        (dict(n=2, classes=("hexagon",)), "classes"),
        (dict(n=2, classes="circle"), "classes"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        shapes_scenes(**kwargs)


def test_semantic_masks_bad_arguments():
    with pytest.raises(ValueError, match="targets"):
        semantic_masks([{"masks": torch.zeros(1, 4, 4)}], 4)
    with pytest.raises(ValueError, match="size"):
        semantic_masks([], 0)
