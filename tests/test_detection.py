import math

import pytest
import skimage.measure
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from course_lib.data.shapes import shapes_scenes
from course_lib.detection import (
    RCNN,
    FastRCNN,
    SlidingWindowDetector,
    anchors,
    average_precision,
    batched_nms,
    box_area,
    box_iou,
    connected_components,
    course_backbone,
    decode_boxes,
    encode_boxes,
    evaluate_detector,
    faster_rcnn,
    match_detections,
    mean_average_precision,
    nms,
    nms_naive,
    precision_recall_curve,
    predict,
    proposal_recall,
    region_proposals,
    roi_pool,
    set_postprocessing,
    train_detector,
    training_defaults,
)

DTYPES = [torch.float32, torch.float64]


def random_boxes(n, generator, dtype=torch.float32, extent=100.0, max_size=40.0):
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * extent
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * max_size + 1.0
    return torch.cat([xy, xy + wh], dim=1)


# ---------------------------------------------------------------- IoU and box coding


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_and_area_match_torchvision(dtype):
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(13, g, dtype), random_boxes(7, g, dtype)
    assert torch.allclose(box_iou(a, b), torchvision.ops.box_iou(a, b), atol=1e-7, rtol=0)
    assert torch.equal(box_area(a), torchvision.ops.box_area(a))
    assert box_iou(a, b).shape == (13, 7) and box_iou(a, b).dtype == dtype


def test_box_iou_hand_cases():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 0.0, 1.0]]))
    assert box_iou(a, b[:0]).shape == (1, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_match_box_coder(dtype, weights):
    g = torch.Generator().manual_seed(1)
    gt, proposals = random_boxes(20, g, dtype), random_boxes(20, g, dtype)
    coder = BoxCoder(weights)
    deltas = encode_boxes(gt, proposals, weights)
    assert torch.allclose(deltas, coder.encode_single(gt, proposals), atol=1e-6, rtol=1e-6)
    class_deltas = torch.randn(20, 12, generator=g, dtype=dtype)
    expected = coder.decode_single(class_deltas, proposals)
    assert torch.allclose(decode_boxes(class_deltas, proposals, weights), expected, atol=1e-5)
    assert torch.allclose(decode_boxes(deltas, proposals, weights), gt, atol=1e-4)


def test_encode_hand_case_and_decode_clamp():
    proposal = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    gt = torch.tensor([[5.0, 0.0, 25.0, 20.0]])  # centre moves 10 right, width doubles
    assert torch.allclose(encode_boxes(gt, proposal), torch.tensor([[1.0, 0.0, math.log(2.0), 0.0]]))
    huge = torch.tensor([[0.0, 0.0, 50.0, 50.0]])
    decoded = decode_boxes(huge, proposal)
    assert torch.isfinite(decoded).all()
    assert torch.allclose(decoded, BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(huge, proposal))


# ---------------------------------------------------------------- NMS


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_matches_torchvision(threshold, dtype):
    g = torch.Generator().manual_seed(2)
    boxes = random_boxes(300, g, dtype)
    scores = torch.randperm(300, generator=g).to(dtype) / 300  # distinct
    assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


def test_nms_long_suppression_chain_and_naive():
    # Windows sliding one pixel at a time: each overlaps its neighbours, so suppression chains run
    # across several blocks of the vectorised pass.
    x = torch.arange(400, dtype=torch.float32)
    boxes = torch.stack([x, torch.zeros_like(x), x + 4, torch.full_like(x, 4)], dim=1)
    scores = torch.linspace(1, 0, 400)
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert torch.equal(nms(boxes, scores, 0.5), expected)
    assert torch.equal(nms_naive(boxes[:60], scores[:60], 0.5), torchvision.ops.nms(boxes[:60], scores[:60], 0.5))


def test_nms_keeps_iou_equal_to_threshold():
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]])  # IoU = 2 / 4 = 0.5 exactly
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]
    assert nms_naive(boxes, scores, 0.5).tolist() == [0, 1]


def test_nms_empty():
    empty = torch.zeros(0, 4)
    assert nms(empty, torch.zeros(0), 0.5).shape == (0,)
    assert nms(empty, torch.zeros(0), 0.5).dtype == torch.int64
    assert batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).shape == (0,)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_batched_nms_matches_torchvision(threshold):
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(200, g, extent=50.0)
    scores = torch.randperm(200, generator=g).float()
    labels = torch.randint(0, 4, (200,), generator=g)
    expected = torchvision.ops.batched_nms(boxes, scores, labels, threshold)
    assert torch.equal(batched_nms(boxes, scores, labels, threshold), expected)


# ---------------------------------------------------------------- RoI pooling


def random_rois(k, batch, g, height, width, dtype, scale):
    # corners in image pixels, partly outside the feature map, with .5 fractions to exercise rounding
    extent = torch.tensor([width, height], dtype=dtype) / scale
    xy = (torch.rand(k, 2, generator=g, dtype=dtype) * 1.4 - 0.2) * extent
    wh = torch.rand(k, 2, generator=g, dtype=dtype) * extent
    corners = torch.round(torch.cat([xy, xy + wh], dim=1) * 2) / 2
    index = torch.randint(0, batch, (k, 1), generator=g).to(dtype)
    return torch.cat([index, corners], dim=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size", [1, 2, (3, 5), 7])
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
def test_roi_pool_matches_torchvision(dtype, output_size, scale):
    g = torch.Generator().manual_seed(4)
    features = torch.randn(3, 4, 11, 17, generator=g, dtype=dtype)
    rois = random_rois(40, 3, g, 11, 17, dtype, scale)
    result = roi_pool(features, rois, output_size, scale)
    expected = torchvision.ops.roi_pool(features, rois, output_size, scale)
    assert result.shape == expected.shape and result.dtype == dtype
    assert torch.equal(result, expected)


def test_roi_pool_rounds_half_away_from_zero():
    features = torch.arange(20.0).reshape(1, 1, 1, 20)
    rois = torch.tensor([[0, 2.5, 0, 2.5, 0], [0, 4.5, 0, 6.5, 0]])  # round(2.5) = 3 in C++, 2 in torch.round
    assert torch.equal(roi_pool(features, rois, 1), torchvision.ops.roi_pool(features, rois, 1))
    assert roi_pool(features, rois, 1).flatten().tolist() == [3.0, 7.0]


def test_roi_pool_gradient_matches_torchvision():
    g = torch.Generator().manual_seed(5)
    features = torch.randn(2, 3, 9, 12, generator=g, dtype=torch.float64, requires_grad=True)
    rois = random_rois(25, 2, g, 9, 12, torch.float64, 1.0)
    weights = torch.randn(25, 3, 3, 2, generator=g, dtype=torch.float64)
    (ours,) = torch.autograd.grad((roi_pool(features, rois, (3, 2)) * weights).sum(), features)
    (theirs,) = torch.autograd.grad((torchvision.ops.roi_pool(features, rois, (3, 2)) * weights).sum(), features)
    assert torch.allclose(ours, theirs)


def test_roi_pool_large_map_and_empty():
    g = torch.Generator().manual_seed(6)
    features = torch.randn(2, 8, 64, 64, generator=g)
    rois = random_rois(256, 2, g, 64, 64, torch.float32, 1.0)
    assert torch.equal(roi_pool(features, rois, 7), torchvision.ops.roi_pool(features, rois, 7))
    assert roi_pool(features, rois[:0], 7).shape == (0, 8, 7, 7)


# ---------------------------------------------------------------- anchors


@pytest.mark.parametrize(
    "feature_size, image_size, sizes, ratios",
    [
        ((16, 16), (64, 64), (12, 18, 26, 36), (0.5, 1.0, 2.0)),
        ((5, 7), (40, 56), (13, 32), (0.7, 1.3)),
        ((3, 4), (48, 48), (16,), (1.0,)),
    ],
)
def test_anchors_match_anchor_generator(feature_size, image_size, sizes, ratios):
    generator = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
    image_list = ImageList(torch.zeros(1, 3, *image_size), [image_size])
    feature_map = torch.zeros(1, 8, *feature_size)
    (expected,) = generator(image_list, [feature_map])
    stride = (image_size[0] // feature_size[0], image_size[1] // feature_size[1])
    result = anchors(feature_size, stride, sizes, ratios)
    assert result.shape == (feature_size[0] * feature_size[1] * len(sizes) * len(ratios), 4)
    assert torch.equal(result, expected)


# ---------------------------------------------------------------- AP and mAP


def test_average_precision_hand_cases():
    def ap(tp, num_gt, scores=None):
        tp = torch.tensor(tp, dtype=torch.bool)
        scores = torch.linspace(1, 0.1, len(tp)) if scores is None else torch.tensor(scores)
        return float(average_precision(scores, tp, num_gt))

    assert ap([1, 1, 1], 3) == pytest.approx(1.0)
    assert ap([1, 0, 1], 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # the envelope matters: precision 1/2 at the second hit is lifted to 3/5 (the third hit's)
    assert ap([1, 0, 0, 1, 1], 3) == pytest.approx(11 / 15)
    assert ap([1, 1], 4) == pytest.approx(0.5)  # two objects never found
    assert ap([0, 0, 1], 1) == pytest.approx(1 / 3)
    assert ap([], 3) == 0.0
    assert ap([0, 0], 0) == 0.0
    # ranking is by score, not by input order
    assert ap([0, 1], 1, scores=[0.2, 0.9]) == pytest.approx(1.0)


def test_precision_recall_curve_values():
    precision, recall = precision_recall_curve(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 0, 1]), 4)
    assert torch.allclose(precision, torch.tensor([1.0, 0.5, 2 / 3]))
    assert torch.allclose(recall, torch.tensor([0.25, 0.25, 0.5]))


def test_match_detections_greedy_by_score():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # hit, but scored below the duplicate next
            [1.0, 1.0, 10.0, 10.0],  # best score: claims gt 0
            [20.0, 20.0, 26.0, 26.0],  # IoU 0.36 < 0.5: miss
            [21.0, 20.0, 30.0, 30.0],  # hit gt 1
        ]
    )
    scores = torch.tensor([0.8, 0.9, 0.7, 0.6])
    assert match_detections(boxes, scores, gt).tolist() == [False, True, False, True]
    assert match_detections(boxes, scores, gt, 0.3).tolist() == [False, True, True, False]
    labels, gt_labels = torch.tensor([1, 2, 1, 1]), torch.tensor([1, 1])
    assert match_detections(boxes, scores, gt, 0.5, labels, gt_labels).tolist() == [True, False, False, True]
    assert match_detections(boxes, scores, gt[:0]).tolist() == [False] * 4


def test_mean_average_precision_toy():
    targets = [
        {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
         "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[5.0, 5.0, 15.0, 15.0]]), "labels": torch.tensor([1])},
    ]
    perfect = [{**t, "scores": torch.linspace(1, 0.5, len(t["labels"]))} for t in targets]
    assert float(mean_average_precision(perfect, targets)) == pytest.approx(1.0)
    detections = [
        # class 1: a false positive outranks the hit in image 0; class 2 found; class 3 is not in the ground truth
        {"boxes": torch.tensor([[40.0, 40, 50, 50], [0.0, 0, 10, 10], [20.0, 20, 30, 30], [0.0, 0, 5, 5]]),
         "labels": torch.tensor([1, 1, 2, 3]), "scores": torch.tensor([0.9, 0.8, 0.7, 0.95])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)},
    ]
    mean, per_class = mean_average_precision(detections, targets, per_class=True)
    assert set(per_class) == {1, 2}
    assert float(per_class[1]) == pytest.approx(0.5 * 0.5)  # recall 1/2 at precision 1/2
    assert float(per_class[2]) == pytest.approx(1.0)
    assert float(mean) == pytest.approx(0.625)


# ---------------------------------------------------------------- proposals


def test_connected_components_match_skimage():
    g = torch.Generator().manual_seed(7)
    codes = torch.randint(0, 3, (3, 15, 22), generator=g)
    labels = connected_components(codes)
    assert labels.shape == codes.shape and labels.dtype == torch.int64
    for image, label_map in zip(codes, labels):
        reference = skimage.measure.label(image.numpy(), background=-1, connectivity=1)
        # the two labellings are the same partition: their label pairs form a one-to-one map
        pairs = set(zip(reference.ravel().tolist(), label_map.reshape(-1).tolist()))
        assert len(pairs) == reference.max() == len({ours for _, ours in pairs})
    # a label is the raster index of the region's first pixel
    flat = labels.reshape(3, -1)
    assert (flat <= torch.arange(flat.shape[1])).all() and (flat.gather(1, flat) == flat).all()


def test_region_proposals_recall_on_scenes():
    images, targets = shapes_scenes(20, seed=8)
    proposals = region_proposals(images)
    assert len(proposals) == 20
    counts = [p.shape[0] for p in proposals]
    assert max(counts) <= 300
    for p in proposals:
        assert (p[:, :2] >= 0).all() and (p[:, 2] <= 64).all() and (p[:, 3] <= 64).all()
        assert (p[:, 2:] > p[:, :2]).all()
    recall = proposal_recall(proposals, [t["boxes"] for t in targets])
    assert recall >= 0.8
    single = region_proposals(images[3])
    assert torch.equal(single, proposals[3])
    assert region_proposals(images[:4], max_proposals=5)[0].shape[0] <= 5


def test_proposal_recall_hand_case():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    proposals = torch.tensor([[0.0, 0.0, 10.0, 12.0], [40.0, 40.0, 50.0, 50.0]])
    assert float(proposal_recall(proposals, gt)) == pytest.approx(0.5)
    assert float(proposal_recall(proposals, gt, 0.9)) == 0.0
    assert float(proposal_recall([proposals, proposals], [gt, gt[:1]])) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- detectors


@pytest.fixture(scope="module")
def tiny_scenes():
    images, targets = shapes_scenes(4, seed=9)
    return images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


def test_course_backbone_stride_four():
    backbone = course_backbone(width=16, out_channels=24)
    assert backbone(torch.zeros(2, 3, 64, 48)).shape == (2, 24, 16, 12)
    assert backbone.out_channels == 24


@pytest.mark.parametrize(
    "make, loss_names",
    [
        (lambda: SlidingWindowDetector(5), {"loss_classifier"}),
        (lambda: RCNN(5), {"loss_classifier", "loss_svm", "loss_box_reg"}),
        (lambda: FastRCNN(5), {"loss_classifier", "loss_box_reg"}),
        (lambda: faster_rcnn(5), {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}),
    ],
)
def test_detectors_losses_and_detections(make, loss_names, tiny_scenes):
    images, targets = tiny_scenes
    torch.manual_seed(0)
    model = make()
    model.train()
    losses = model(list(images), targets)
    assert set(losses) == loss_names
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    detections = predict(model, images)
    assert len(detections) == 4
    for d in detections:
        k = d["boxes"].shape[0]
        assert d["boxes"].shape == (k, 4) and d["scores"].shape == (k,) and d["labels"].dtype == torch.int64
        assert k <= 20 and ((d["labels"] >= 1) & (d["labels"] <= 4)).all()
        assert (d["boxes"][:, :2] >= 0).all() and (d["boxes"][:, 2:] <= 64).all()


def test_train_and_evaluate_smoke(tiny_scenes):
    images, targets = tiny_scenes
    torch.manual_seed(0)
    model = FastRCNN(5)
    history = train_detector(model, images, targets, epochs=2, lr=1e-3, batch_size=2, progress=False)
    assert set(history) == {"loss", "loss_classifier", "loss_box_reg"} and len(history["loss"]) == 4
    result = evaluate_detector(model, images, targets)
    assert 0.0 <= result["map50"] <= 1.0 and result["seconds_per_image"] > 0


# ---------------------------------------------------------------- bad input


def test_bad_arguments_name_the_argument():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="a must"):
        box_iou(torch.zeros(3), boxes)
    with pytest.raises(ValueError, match="b must"):
        box_iou(boxes, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="weights"):
        encode_boxes(boxes, boxes, weights=(1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="deltas"):
        decode_boxes(torch.zeros(1, 3), boxes)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(boxes, torch.ones(1), 1.5)
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, torch.ones(2), 0.5)
    with pytest.raises(ValueError, match="labels"):
        batched_nms(boxes, torch.ones(1), torch.zeros(2, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="rois"):
        roi_pool(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_pool(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 0)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_pool(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 2, spatial_scale=0)
    with pytest.raises(ValueError, match="rois"):
        roi_pool(torch.zeros(1, 1, 4, 4), torch.tensor([[3.0, 0, 0, 1, 1]]), 2)
    with pytest.raises(ValueError, match="sizes"):
        anchors((4, 4), 4, sizes=())
    with pytest.raises(ValueError, match="num_gt"):
        average_precision(torch.ones(2), torch.ones(2), 1)
    with pytest.raises(ValueError, match="true_positive"):
        average_precision(torch.ones(2), torch.ones(3), 5)
    with pytest.raises(ValueError, match="codes"):
        connected_components(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="colour_levels"):
        region_proposals(torch.zeros(3, 8, 8), colour_levels=(1,))
    with pytest.raises(ValueError, match="num_classes"):
        FastRCNN(1)
    with pytest.raises(ValueError, match="epochs"):
        target = {"boxes": boxes, "labels": torch.ones(1, dtype=torch.int64)}
        train_detector(FastRCNN(5), torch.zeros(1, 3, 64, 64), [target], epochs=0)


def test_set_postprocessing_exposes_raw_detections(tiny_scenes):
    images, _ = tiny_scenes
    torch.manual_seed(0)
    for model in (FastRCNN(5), faster_rcnn(5)):
        model.eval()
        default = set_postprocessing(model, 0.0, 1.0, 1000)
        raw = predict(model, images[:1])[0]
        assert set_postprocessing(model, 0.0, 0.3, 1000) == (0.0, 1.0, 1000)
        kept = predict(model, images[:1])[0]
        set_postprocessing(model, *default)
        assert set_postprocessing(model) == default == (0.01, 0.5, 20)
        assert raw["scores"].numel() > kept["scores"].numel() > 0
        expected = batched_nms(raw["boxes"], raw["scores"], raw["labels"], 0.3)
        assert torch.allclose(kept["scores"], raw["scores"][expected])
    with pytest.raises(ValueError, match="nms_threshold"):
        set_postprocessing(FastRCNN(5), nms_threshold=2.0)
    with pytest.raises(ValueError, match="model"):
        set_postprocessing(torch.nn.Linear(2, 2), 0.5)


def test_training_defaults_follow_the_mode(monkeypatch):
    import course_lib

    monkeypatch.setattr(course_lib.settings, "fast", True)
    assert training_defaults(faster_rcnn(5)) == {"epochs": 4, "lr": 1e-3, "batch_size": 4}
    monkeypatch.setattr(course_lib.settings, "fast", False)
    assert training_defaults(RCNN(5)) == {"epochs": 6, "lr": 2e-3, "batch_size": 8}
    with pytest.raises(ValueError, match="model"):
        training_defaults(torch.nn.Linear(1, 1))
