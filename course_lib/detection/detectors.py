"""Four detectors, each fixing its predecessor's main problem, small enough to train on a CPU.

* :class:`SlidingWindowDetector`: classify every window of a few sizes on a grid, keep the best
  (NMS). Hundreds of CNN passes per image, and boxes only as good as the grid.
* :class:`RCNN`: classify only ~50 *region proposals* per image: warp each to a fixed size, run the CNN
  on it, score it with one linear SVM per class and refine its box with a class-specific regressor.
  Three objectives trained separately, and one CNN pass per proposal.
* :class:`FastRCNN`: run the CNN once per image and cut each proposal out of the *feature map* with
  RoI pooling; one joint loss (classification + box regression). The proposals are still external.
* :func:`faster_rcnn`: a region proposal network on anchors shares the backbone and proposes the
  boxes itself; torchvision's ``FasterRCNN`` with the same small backbone, four losses.

All four share one backbone design (:func:`course_backbone`), the torchvision calling convention
(``model(images, targets)`` returns a dict of losses in training mode, ``model(images)`` a list of
``{"boxes", "labels", "scores"}`` dicts in eval mode) and ``num_classes`` *including* the background,
as torchvision (5 for the four shapes). :func:`train_detector`, :func:`predict` and
:func:`evaluate_detector` therefore work for all of them, with tuned defaults
(:func:`training_defaults`) for fast and full mode.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, roi_align

from ..progress import Progress
from ..runtime import settings
from ..validate import positive_int, tensor_rank
from .boxes import _threshold, batched_nms, box_iou, decode_boxes, encode_boxes
from .metrics import mean_average_precision
from .proposals import region_proposals

__all__ = [
    "course_backbone",
    "SlidingWindowDetector",
    "RCNN",
    "FastRCNN",
    "faster_rcnn",
    "set_postprocessing",
    "training_defaults",
    "train_detector",
    "predict",
    "evaluate_detector",
]

# Box regression targets are scaled by these weights (torchvision's choice for the box head) so the
# four offsets have similar spread.
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def course_backbone(width: int = 32, out_channels: int = 64) -> nn.Sequential:
    """A small convolutional backbone with stride 4: ``[N, 3, H, W]`` -> ``[N, out_channels, H/4, W/4]``.

    Five 3x3 conv + batch-norm + ReLU layers (two with stride 2); receptive field 21 pixels, about
    30 million multiply-adds for a 64 x 64 image. ``out_channels`` is stored as an attribute, which
    torchvision's ``FasterRCNN`` reads.
    """
    positive_int("width", width)
    positive_int("out_channels", out_channels)

    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    half = max(width // 2, 1)
    layers = (
        block(3, half, 1) + block(half, width, 2) + block(width, width, 1)
        + block(width, out_channels, 2) + block(out_channels, out_channels, 1)
    )
    backbone = nn.Sequential(*layers)
    backbone.out_channels = out_channels
    backbone.stride = 4
    return backbone


def _image_batch(images) -> torch.Tensor:
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images must hold at least one image, got an empty list")
        images = torch.stack(list(images))
    tensor_rank("images", images, 4)
    if images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    return images


def _check_targets(targets, n):
    if not isinstance(targets, (list, tuple)) or len(targets) != n:
        raise ValueError(
            f"targets must be a list of {n} dicts with 'boxes' and 'labels', got {type(targets).__name__}"
        )


def _rois(boxes_per_image) -> torch.Tensor:
    """``[K, 5]`` rows (image index, x1, y1, x2, y2) from a list of per-image boxes."""
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes_per_image)])


def _label_boxes(boxes, gt_boxes, gt_labels, foreground_iou, background_iou):
    """Class ``[K]`` (0 = background, -1 = ignored) and best ground-truth box ``[K, 4]`` of each box."""
    if gt_boxes.shape[0] == 0:
        return torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device), torch.zeros_like(boxes)
    best_iou, best = box_iou(boxes, gt_boxes).max(dim=1)
    labels = gt_labels[best].clone()
    labels[best_iou < foreground_iou] = -1
    labels[best_iou < background_iou] = 0
    return labels, gt_boxes[best]


def _sample(labels, count, positive_fraction):
    """Indices of at most ``count`` labelled boxes, at most ``positive_fraction`` of them objects."""
    positive = torch.nonzero(labels > 0).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    positive = positive[torch.randperm(positive.numel(), device=labels.device)[: int(count * positive_fraction)]]
    negative = negative[torch.randperm(negative.numel(), device=labels.device)[: count - positive.numel()]]
    return torch.cat([positive, negative])


def _training_rois(proposals, targets, count, positive_fraction, foreground_iou=0.5, background_iou=0.5):
    """Per image: proposals plus the ground-truth boxes, labelled by overlap and subsampled.

    Returns the ``[K, 5]`` RoIs, their labels ``[K]`` and matched ground-truth boxes ``[K, 4]``.
    """
    chosen, labels, matched = [], [], []
    for boxes, target in zip(proposals, targets):
        gt_boxes = target["boxes"].to(boxes)
        boxes = torch.cat([boxes, gt_boxes])
        label, gt = _label_boxes(boxes, gt_boxes, target["labels"], foreground_iou, background_iou)
        keep = _sample(label, count, positive_fraction)
        chosen.append(boxes[keep])
        labels.append(label[keep])
        matched.append(gt[keep])
    return _rois(chosen), torch.cat(labels), torch.cat(matched)


def _class_deltas(deltas, labels):
    """The ``[K, 4]`` deltas of each box's own class from class-specific deltas ``[K, 4 * (C - 1)]``."""
    per_class = deltas.reshape(len(deltas), deltas.shape[1] // 4, 4)
    return per_class[torch.arange(deltas.shape[0], device=deltas.device), labels - 1]


def _detections(boxes, scores, image_size, score_threshold, nms_threshold, max_detections):
    """One image's detections from per-class boxes ``[K, C - 1, 4]`` and scores ``[K, C - 1]``.

    Clip to the image, drop low scores and degenerate boxes, NMS within each class, keep the best.
    """
    labels = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(scores).reshape(-1)
    boxes = torchvision.ops.clip_boxes_to_image(boxes.reshape(-1, 4), image_size)
    scores = scores.reshape(-1)
    ok = torchvision.ops.remove_small_boxes(boxes, 1.0)  # indices of boxes at least 1 pixel wide and tall
    ok = ok[scores[ok] > score_threshold]
    boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
    keep = batched_nms(boxes, scores, labels, nms_threshold)[:max_detections]
    return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}


class _Detector(nn.Module):
    """Shared post-processing settings of the course detectors."""

    def __init__(self, num_classes, score_threshold=0.01, nms_threshold=0.5, max_detections=20):
        super().__init__()
        if positive_int("num_classes", num_classes) < 2:
            raise ValueError(f"num_classes counts the background too, so it must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_detections = max_detections

    def _finish(self, boxes, scores, image_size):
        return _detections(
            boxes, scores, image_size, self.score_threshold, self.nms_threshold, self.max_detections
        )


class _PatchClassifier(nn.Module):
    """The backbone on one warped patch, then a small MLP: ``[K, 3, p, p]`` -> features ``[K, hidden]``.

    ``pooled`` (the last conv features max-pooled to 3x3, R-CNN's "pool5") is returned as well.
    """

    def __init__(self, hidden=128):
        super().__init__()
        self.backbone = course_backbone()
        self.pool = nn.AdaptiveMaxPool2d(3)
        self.pooled_dim = self.backbone.out_channels * 9
        self.hidden = hidden
        self.fc = nn.Sequential(nn.Linear(self.pooled_dim, hidden), nn.ReLU(inplace=True))

    def forward(self, patches):
        pooled = self.pool(self.backbone(patches)).flatten(1)
        return pooled, self.fc(pooled)


def _on_crops(network, images, rois, size, chunk=1024):
    """Warp each RoI ``[K, 5]`` of ``images`` to a ``size x size`` patch (bilinear sampling) and run
    ``network`` on the patches, ``chunk`` at a time so memory stays bounded; outputs are concatenated."""
    outputs = [network(roi_align(images, part, size, 1.0, 2, True)) for part in rois.split(chunk)]
    return tuple(torch.cat(parts) for parts in zip(*outputs))


class SlidingWindowDetector(_Detector):
    """Classify every square window of ``window_sizes`` pixels, ``window_step`` of its size apart.

    Each window is warped to ``patch_size`` pixels and classified into background or one of the
    classes by a small CNN; a window's score for a class is that class's softmax probability, and
    NMS removes the many overlapping windows that fire on one object. No box regression: a box is
    exactly a window of the grid.

    Training (``model(images, targets)``): windows overlapping an object with IoU >= 0.5 (and the object's
    own box) are that object's class, all other windows are background; each image contributes
    ``windows_per_image`` of them, a quarter objects. Loss: ``{"loss_classifier"}``.
    """

    def __init__(
        self,
        num_classes,
        window_sizes=(12, 16, 24, 32),
        window_step=1 / 3,
        patch_size=16,
        windows_per_image=32,
        **kwargs,
    ):
        super().__init__(num_classes, **kwargs)
        self.window_sizes = tuple(window_sizes)
        self.window_step = window_step
        self.patch_size = patch_size
        self.windows_per_image = windows_per_image
        self.classifier = _PatchClassifier()
        self.head = nn.Linear(self.classifier.hidden, num_classes)

    def _logits(self, patches):
        return (self.head(self.classifier(patches)[1]),)

    def windows(self, height: int, width: int, device=None) -> torch.Tensor:
        """All windows ``[W, 4]`` for an image of ``height x width``; each size covers the image edge to edge."""
        boxes = []
        for size in self.window_sizes:
            stride = max(1, round(size * self.window_step))

            def starts(extent):
                count = -(-(extent - size) // stride) + 1  # ceil, so the last window touches the edge
                return torch.linspace(0, extent - size, count, device=device).round()

            ys, xs = torch.meshgrid(starts(height), starts(width), indexing="ij")
            corner = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
            boxes.append(torch.cat([corner, corner + size], dim=1))
        return torch.cat(boxes)

    def forward(self, images, targets=None):
        images = _image_batch(images)
        n, _, height, width = images.shape
        windows = self.windows(height, width, images.device)
        if self.training:
            _check_targets(targets, n)
            # A window that half-covers an object is background: otherwise it could outscore the
            # well-placed window and survive NMS as a poorly localised detection.
            rois, labels, _ = _training_rois([windows] * n, targets, self.windows_per_image, 0.25, 0.5, 0.5)
            (logits,) = _on_crops(self._logits, images, rois, self.patch_size)
            return {"loss_classifier": F.cross_entropy(logits, labels)}
        (logits,) = _on_crops(self._logits, images, _rois([windows] * n), self.patch_size)
        probabilities = logits.softmax(dim=1)[:, 1:].reshape(n, windows.shape[0], -1)
        boxes = windows[:, None, :].expand(-1, self.num_classes - 1, -1)
        return [self._finish(boxes, p, (height, width)) for p in probabilities]


class _ProposalDetector(_Detector):
    """A detector that scores external region proposals (R-CNN, Fast R-CNN).

    ``model(images, targets=None, proposals=None)``: ``proposals`` is a list of ``[P, 4]`` boxes per image;
    when omitted, :func:`~course_lib.detection.region_proposals` computes them.
    """

    needs_proposals = True

    def __init__(self, num_classes, rois_per_image, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.rois_per_image = rois_per_image

    def forward(self, images, targets=None, proposals=None):
        images = _image_batch(images)
        if proposals is None:
            proposals = region_proposals(images)
        if self.training:
            _check_targets(targets, len(images))
            rois, labels, matched = _training_rois(proposals, targets, self.rois_per_image, 0.25)
            return self.losses(images, rois, labels, matched)
        rois = _rois(proposals)
        scores, boxes = self.score_boxes(images, rois)
        n, _, height, width = images.shape
        image_of = rois[:, 0].long()
        return [self._finish(boxes[image_of == i], scores[image_of == i], (height, width)) for i in range(n)]


class RCNN(_ProposalDetector):
    """R-CNN: warp each proposal (plus ``context`` of its size on every side) to ``crop_size`` pixels,
    run the CNN on every crop, score it with one linear SVM per class, refine its box per class.

    Training (``model(images, targets, proposals)``) samples ``rois_per_image`` proposals per image (a
    quarter objects, IoU >= 0.5) and returns three losses that, as in the paper, train three separate
    things: ``loss_classifier`` fine-tunes the CNN with a softmax (log loss); ``loss_svm`` trains the
    SVMs (one-vs-rest hinge loss plus an L2 penalty) on the CNN's "fc7" features; ``loss_box_reg``
    trains the box regressors (squared loss on :func:`encode_boxes` targets) on its "pool5" features.
    The SVMs and regressors see *detached* features, so their losses never change the CNN: the
    post-hoc objectives of R-CNN, trained in the same loop instead of from features cached on disk.
    Scores are ``sigmoid(svm margin)``.
    """

    def __init__(self, num_classes, crop_size=24, context=0.1, rois_per_image=16, svm_l2=1e-3, **kwargs):
        super().__init__(num_classes, rois_per_image, **kwargs)
        self.crop_size = crop_size
        self.context = context
        self.svm_l2 = svm_l2
        self.cnn = _PatchClassifier()
        self.softmax = nn.Linear(self.cnn.hidden, num_classes)
        self.svm = nn.Linear(self.cnn.hidden, num_classes - 1)
        self.box_regressor = nn.Linear(self.cnn.pooled_dim, 4 * (num_classes - 1))

    def context_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """The regions R-CNN actually crops: each box ``[K, 4]`` (x1, y1, x2, y2) grown by ``context``
        of its width and height on every side (the paper also warps a margin of context with each
        proposal). ``[K, 4]``; parts outside the image are read as zeros."""
        x1, y1, x2, y2 = boxes.unbind(1)
        pad_x, pad_y = self.context * (x2 - x1), self.context * (y2 - y1)
        return torch.stack([x1 - pad_x, y1 - pad_y, x2 + pad_x, y2 + pad_y], dim=1)

    def _with_context(self, rois):
        return torch.cat([rois[:, :1], self.context_boxes(rois[:, 1:])], dim=1)

    def warp(self, images: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """The crops ``[K, C, crop_size, crop_size]`` the CNN sees for ``rois`` ``[K, 5]`` (image index,
        x1, y1, x2, y2) of ``images`` ``[N, C, H, W]``: each box with its context, warped bilinearly to
        the CNN's fixed input size whatever its shape."""
        return roi_align(images, self._with_context(rois), self.crop_size, 1.0, 2, True)

    def _features(self, images, rois):
        return _on_crops(self.cnn, images, self._with_context(rois), self.crop_size)

    def losses(self, images, rois, labels, matched):
        pooled, fc7 = self._features(images, rois)
        loss_classifier = F.cross_entropy(self.softmax(fc7), labels)
        margins = self.svm(fc7.detach())
        sign = torch.where(labels[:, None] == torch.arange(1, self.num_classes, device=labels.device), 1.0, -1.0)
        loss_svm = F.relu(1 - sign * margins).mean() + self.svm_l2 * self.svm.weight.square().sum()
        positive = labels > 0
        deltas = _class_deltas(self.box_regressor(pooled.detach())[positive], labels[positive])
        target = encode_boxes(matched[positive], rois[positive, 1:], BOX_WEIGHTS)
        loss_box_reg = F.mse_loss(deltas, target, reduction="sum") / max(1, labels.numel())
        return {"loss_classifier": loss_classifier, "loss_svm": loss_svm, "loss_box_reg": loss_box_reg}

    def score_boxes(self, images, rois):
        pooled, fc7 = self._features(images, rois)
        boxes = decode_boxes(self.box_regressor(pooled), rois[:, 1:], BOX_WEIGHTS)
        return torch.sigmoid(self.svm(fc7)), boxes.reshape(len(rois), self.num_classes - 1, 4)


class FastRCNN(_ProposalDetector):
    """Fast R-CNN: the backbone runs once per image; RoI pooling cuts each proposal out of the feature
    map as ``output_size x output_size`` cells; two fully connected layers feed a softmax classifier and
    class-specific box regressors.

    Training returns ``loss_classifier`` (cross-entropy) and ``loss_box_reg`` (smooth L1 on the true
    class's offsets, for object RoIs), optimised jointly, end to end through RoI pooling into the
    backbone. ``pool`` is the RoI pooling function: ``torchvision.ops.roi_pool`` by default (its backward
    pass is faster); :func:`course_lib.detection.roi_pool` gives the same numbers.
    """

    def __init__(
        self, num_classes, output_size=7, hidden=256, rois_per_image=64, pool=torchvision.ops.roi_pool, **kwargs
    ):
        super().__init__(num_classes, rois_per_image, **kwargs)
        self.backbone = course_backbone()
        self.output_size = output_size
        self.pool = pool
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.backbone.out_channels * output_size**2, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(hidden, num_classes)
        self.box_regressor = nn.Linear(hidden, 4 * (num_classes - 1))

    def _heads(self, images, rois):
        features = self.backbone(images)
        pooled = self.pool(features, rois, self.output_size, 1.0 / self.backbone.stride)
        hidden = self.head(pooled)
        return self.classifier(hidden), self.box_regressor(hidden)

    def losses(self, images, rois, labels, matched):
        logits, deltas = self._heads(images, rois)
        positive = labels > 0
        target = encode_boxes(matched[positive], rois[positive, 1:], BOX_WEIGHTS)
        predicted = _class_deltas(deltas[positive], labels[positive])
        box_loss = F.smooth_l1_loss(predicted, target, beta=1 / 9, reduction="sum") / max(1, labels.numel())
        return {"loss_classifier": F.cross_entropy(logits, labels), "loss_box_reg": box_loss}

    def score_boxes(self, images, rois):
        logits, deltas = self._heads(images, rois)
        boxes = decode_boxes(deltas, rois[:, 1:], BOX_WEIGHTS)
        return logits.softmax(dim=1)[:, 1:], boxes.reshape(len(rois), self.num_classes - 1, 4)


def faster_rcnn(
    num_classes: int,
    image_size: int = 64,
    anchor_sizes=(12, 18, 26, 36),
    aspect_ratios=(0.5, 1.0, 2.0),
    backbone: nn.Module | None = None,
    **kwargs,
) -> FasterRCNN:
    """torchvision's ``FasterRCNN`` sized for small synthetic scenes, with :func:`course_backbone`.

    One stride-4 feature map; anchors of ``anchor_sizes`` pixels x ``aspect_ratios`` (12 per cell) cover
    the shapes' 10-32 pixel boxes; images keep their ``image_size`` (torchvision would otherwise resize
    them to 800 pixels); RoIAlign to 7x7 and a 256-unit two-layer head; sampling and proposal counts
    scaled down for a handful of objects per image. ``num_classes`` includes the background. In
    training mode the model returns the four losses ``loss_objectness``, ``loss_rpn_box_reg`` (the
    RPN) and ``loss_classifier``, ``loss_box_reg`` (the detection head). ``kwargs`` override any
    ``FasterRCNN`` argument.
    """
    positive_int("num_classes", num_classes)
    positive_int("image_size", image_size)
    backbone = backbone if backbone is not None else course_backbone()
    representation = 256
    settings_ = dict(
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        rpn_anchor_generator=AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),)),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=5, sampling_ratio=1),
        box_head=TwoMLPHead(backbone.out_channels * 5 * 5, representation),
        box_predictor=FastRCNNPredictor(representation, num_classes),
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=150,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=32,
        box_score_thresh=0.01,
        box_detections_per_img=20,
    )
    settings_.update(kwargs)
    return FasterRCNN(backbone, **settings_)


def set_postprocessing(model: nn.Module, score_threshold=None, nms_threshold=None, max_detections=None) -> tuple:
    """Change how any of the four detectors turns raw scores into detections (``None`` keeps a setting).

    ``score_threshold``: drop detections scoring at most this; ``nms_threshold``: the IoU above which
    NMS suppresses a lower-scoring box of the same class (1.0 switches NMS off); ``max_detections``: per
    image. ``set_postprocessing(model, 0.0, 1.0, 1000)`` exposes the raw detections. Returns the
    previous ``(score_threshold, nms_threshold, max_detections)``, so ``set_postprocessing(model, *old)``
    restores them.
    """
    if isinstance(model, FasterRCNN):  # torchvision keeps these settings in the RoI heads
        target, names = model.roi_heads, ("score_thresh", "nms_thresh", "detections_per_img")
    elif isinstance(model, _Detector):
        target, names = model, ("score_threshold", "nms_threshold", "max_detections")
    else:
        raise ValueError(f"model must be one of the course detectors, got {type(model).__name__}")
    previous = tuple(getattr(target, name) for name in names)
    if score_threshold is not None:
        setattr(target, names[0], _threshold("score_threshold", score_threshold))
    if nms_threshold is not None:
        setattr(target, names[1], _threshold("nms_threshold", nms_threshold))
    if max_detections is not None:
        setattr(target, names[2], positive_int("max_detections", max_detections))
    return previous


# Tuned on shapes scenes (64 x 64, 1 to 4 objects); every detector gets the same epochs and batches.
_LEARNING_RATES = {"SlidingWindowDetector": 1e-3, "RCNN": 2e-3, "FastRCNN": 1e-3, "FasterRCNN": 1e-3}


def training_defaults(model: nn.Module) -> dict:
    """``epochs``, ``lr`` and ``batch_size`` tuned for ``model``'s kind in the current mode (fast/full).

    Fast mode: 4 epochs in batches of 4, tuned for 200 training scenes (each detector trains in under
    10 s of one CPU core). Full mode: 6 epochs in batches of 8, tuned for 1000 scenes (about a minute
    each; every detector but the sliding windows then reaches mAP@0.5 above 0.95 on held-out scenes).
    """
    kind = type(model).__name__
    if kind not in _LEARNING_RATES:
        raise ValueError(f"model must be one of the course detectors {sorted(_LEARNING_RATES)}, got {kind}")
    return {"epochs": settings.pick(4, 6), "lr": _LEARNING_RATES[kind], "batch_size": settings.pick(4, 8)}


def _check_data(images, targets):
    images = _image_batch(images)
    _check_targets(targets, len(images))
    return images


def train_detector(
    model: nn.Module,
    images,
    targets,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    proposals=None,
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """Train any of the four detectors; returns the history ``{loss name: [value per step]}``.

    ``images`` ``[N, 3, H, W]`` and ``targets`` (torchvision format) are the training scenes; omitted
    ``epochs``, ``lr``, ``batch_size`` come from :func:`training_defaults`. AdamW with a short warm-up
    and cosine decay; the batches are shuffled by a generator seeded with ``seed``. For R-CNN and Fast
    R-CNN the region proposals of all images are computed once up front unless given.
    """
    images = _check_data(images, targets)
    defaults = training_defaults(model)
    epochs = positive_int("epochs", epochs if epochs is not None else defaults["epochs"])
    batch_size = positive_int("batch_size", batch_size if batch_size is not None else defaults["batch_size"])
    lr = lr if lr is not None else defaults["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if getattr(model, "needs_proposals", False) and proposals is None:
        proposals = region_proposals(images)

    n = images.shape[0]
    steps = epochs * -(-n // batch_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {}
    model.train()
    bar = Progress(total=steps, desc=type(model).__name__, unit="steps", enabled=progress)
    for _ in range(epochs):
        for batch in torch.randperm(n, generator=generator).split(batch_size):
            batch_targets = [{key: targets[i][key] for key in ("boxes", "labels")} for i in batch.tolist()]
            extra = {"proposals": [proposals[i] for i in batch.tolist()]} if proposals is not None else {}
            losses = model(list(images[batch.to(images.device)]), batch_targets, **extra)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            for name, value in {"loss": loss, **losses}.items():
                history.setdefault(name, []).append(value.detach().item())
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
            bar.update()
    bar.close()
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, images, batch_size: int = 64, proposals=None) -> list[dict]:
    """Detections of ``model`` on ``images`` ``[N, 3, H, W]``: one ``{"boxes", "labels", "scores"}`` per image.

    Puts the model in eval mode. R-CNN and Fast R-CNN compute region proposals unless ``proposals``
    (a list of ``[P, 4]``) is given.
    """
    images = _image_batch(images)
    positive_int("batch_size", batch_size)
    model.eval()
    needs = getattr(model, "needs_proposals", False)
    detections = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        if needs:
            given = proposals[start : start + batch_size] if proposals is not None else region_proposals(batch)
            detections += model(list(batch), proposals=given)
        else:
            detections += model(list(batch))
    return detections


def evaluate_detector(model: nn.Module, images, targets, iou_threshold: float = 0.5, batch_size: int = 64) -> dict:
    """mAP and speed of ``model`` on held-out scenes.

    Returns ``{"map50": float, "ap_per_class": {label: float}, "seconds_per_image": float,
    "detections": list}``. The time covers the whole pipeline, region proposals included (as a
    detector would run in practice), measured as wall-clock time over all images.
    """
    images = _check_data(images, targets)
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    start = time.perf_counter()
    detections = predict(model, images, batch_size=batch_size)
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    seconds = (time.perf_counter() - start) / images.shape[0]
    mean, per_class = mean_average_precision(detections, targets, iou_threshold, per_class=True)
    return {
        "map50": float(mean),
        "ap_per_class": {c: float(ap) for c, ap in per_class.items()},
        "seconds_per_image": seconds,
        "detections": detections,
    }
