"""course_lib.segmentation against independent oracles: brute-force loops over pixels and windows,
``nn.ConvTranspose2d``'s own output shapes, ``F.interpolate``, hand-worked values."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.segmentation import (
    FCN,
    PatchClassifier,
    UNet,
    bilinear_kernel,
    bilinear_upsampler,
    boundary_band,
    conv_transpose_output_size,
    fc_to_conv,
    iou_per_class,
    mean_iou,
    multiply_adds,
    pixel_accuracy,
    segmentation_confusion,
    segmentation_scores,
    sliding_window_scores,
    sliding_window_scores_naive,
)


# ---------------------------------------------------------------- mean IoU

def brute_force_iou(pred, target, num_classes, ignore_index=None):
    """Per-class (intersection, union) by visiting every pixel in Python."""
    inter, union = [0] * num_classes, [0] * num_classes
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
        if ignore_index is not None and t == ignore_index:
            continue
        for c in range(num_classes):
            inter[c] += p == c and t == c
            union[c] += p == c or t == c
    return inter, union


def random_labels(g, shape, num_classes, ignore_index=None, dtype=torch.int64):
    target = torch.randint(0, num_classes, shape, generator=g)
    pred = torch.where(torch.rand(shape, generator=g) < 0.4, torch.randint(0, num_classes, shape, generator=g), target)
    if ignore_index is not None:
        target = torch.where(torch.rand(shape, generator=g) < 0.2, torch.full_like(target, ignore_index), target)
    return pred.to(dtype), target.to(dtype)


@pytest.mark.parametrize("shape,num_classes,ignore_index", [((7, 9), 3, None), ((3, 5, 6), 6, 255), ((2, 4, 4), 2, -1),
                                                             ((1, 11, 3), 7, None), ((4, 6, 5), 5, 0)])
def test_mean_iou_matches_a_pixel_loop(shape, num_classes, ignore_index):
    g = torch.Generator().manual_seed(num_classes)
    for dtype in (torch.int64, torch.int32, torch.uint8):
        pred, target = random_labels(g, shape, num_classes, None if ignore_index == -1 and dtype == torch.uint8 else ignore_index, dtype)
        ignore = None if ignore_index == -1 and dtype == torch.uint8 else ignore_index
        inter, union = brute_force_iou(pred, target, num_classes, ignore)
        ious = [i / u for i, u in zip(inter, union) if u]
        got = mean_iou(pred, target, num_classes, ignore)
        assert got.dim() == 0 and got.dtype == torch.float32
        assert float(got) == pytest.approx(sum(ious) / len(ious), rel=1e-6)
        per_class = iou_per_class(pred, target, num_classes, ignore)
        for c in range(num_classes):
            if union[c]:
                assert float(per_class[c]) == pytest.approx(inter[c] / union[c], rel=1e-6)
            else:
                assert math.isnan(float(per_class[c]))


def test_mean_iou_worked_examples():
    t = torch.tensor
    assert float(mean_iou(t([[0, 1], [1, 1]]), t([[0, 0], [1, 1]]), 3)) == pytest.approx(7 / 12)
    target = torch.zeros(8, 8, dtype=torch.int64)
    target[3:5, 2:4] = 1
    background = torch.zeros_like(target)
    assert float(pixel_accuracy(background, target)) == pytest.approx(60 / 64)
    assert float(mean_iou(background, target, 2)) == pytest.approx(60 / 64 / 2)
    # accumulated over images, not averaged per image
    pred = t([[[1, 1], [1, 1]], [[0, 0], [0, 0]]])
    truth = t([[[1, 1], [1, 1]], [[0, 0], [0, 2]]])
    assert float(mean_iou(pred, truth, 3)) == pytest.approx((3 / 4 + 1 + 0) / 3)
    # every pixel ignored: nothing to average
    assert math.isnan(float(mean_iou(t([[1, 0]]), t([[255, 255]]), 2, ignore_index=255)))


def test_confusion_rows_are_truth_and_ignored_pixels_vanish():
    t = torch.tensor
    counts = segmentation_confusion(t([[0, 1, 1]]), t([[0, 0, 255]]), 2, ignore_index=255)
    assert counts.tolist() == [[1, 1], [0, 0]]
    assert float(pixel_accuracy(t([[0, 1, 1]]), t([[0, 0, 255]]), ignore_index=255)) == pytest.approx(0.5)


def test_boundary_band_matches_a_neighbourhood_loop():
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 3, (2, 5, 6), generator=g).repeat_interleave(2, 1).repeat_interleave(2, 2)
    for width in (0, 1, 2):
        band = boundary_band(target, width)
        for n in range(2):
            for y in range(10):
                for x in range(12):
                    window = target[n, max(0, y - width): y + width + 1, max(0, x - width): x + width + 1]
                    assert bool(band[n, y, x]) == (window.unique().numel() > 1), (width, n, y, x)


def test_segmentation_scores_boundary_counts_only_the_band():
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    target[0, 2:6, 2:6] = 1
    pred = target.clone()
    pred[0, 0, 0] = 1  # wrong, but far from the boundary
    scores = segmentation_scores(pred, target, 2, band_width=1)
    assert scores["boundary_miou"] == pytest.approx(1.0)
    assert scores["miou"] < 1.0
    assert scores["pixel_accuracy"] == pytest.approx(63 / 64)


@pytest.mark.parametrize("call,match", [
    (lambda: mean_iou(torch.zeros(2, 2), torch.zeros(2, 2), 2), "pred must hold integer"),
    (lambda: mean_iou(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 2), "same shape"),
    (lambda: mean_iou(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 3), 2), "target labels must lie in 0..1"),
    (lambda: mean_iou(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[2, 255]]), 2, 255), "or be ignore_index=255"),
    (lambda: mean_iou(torch.tensor([[0, 2]]), torch.tensor([[0, 255]]), 2, 255), "pred labels must lie in 0..1"),
    (lambda: mean_iou(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), 0), "num_classes"),
    (lambda: mean_iou(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 2), "pred must be 2-D or 3-D"),
    (lambda: mean_iou(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), 2, ignore_index=1.5), "ignore_index"),
    (lambda: boundary_band(torch.zeros(2, 2, dtype=torch.long), -1), "width"),
])
def test_metrics_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- fully connected = convolution

def window_loop(linear, x, kh, kw):
    rows, cols = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = torch.zeros(x.shape[0], linear.out_features, rows, cols, dtype=x.dtype)
    for i in range(rows):
        for j in range(cols):
            out[:, :, i, j] = linear(x[:, :, i:i + kh, j:j + kw].flatten(1))
    return out


@pytest.mark.parametrize("channels,kernel,out,bias,dtype", [(1, 3, 2, True, torch.float64), (4, (2, 3), 5, True, torch.float32),
                                                            (3, 1, 4, False, torch.float64), (2, 4, 1, True, torch.float64)])
def test_fc_to_conv_equals_the_linear_layer_on_every_window(channels, kernel, out, bias, dtype):
    torch.manual_seed(0)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    linear = nn.Linear(channels * kh * kw, out, bias=bias, dtype=dtype)
    conv = fc_to_conv(linear, channels, kernel)
    assert isinstance(conv, nn.Conv2d) and conv.weight.dtype == dtype and (conv.bias is None) == (not bias)
    x = torch.randn(2, channels, kh + 3, kw + 2, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), window_loop(linear, x, kh, kw))
        # on exactly one window it is the classifier itself
        torch.testing.assert_close(conv(x[..., :kh, :kw]).flatten(1), linear(x[..., :kh, :kw].flatten(1)))


def test_fc_to_conv_copies_the_weights():
    linear = nn.Linear(8, 2)
    conv = fc_to_conv(linear, 2, 2)
    with torch.no_grad():
        conv.weight.zero_()
    assert linear.weight.abs().sum() > 0


@pytest.mark.parametrize("call,match", [
    (lambda: fc_to_conv(nn.Conv2d(1, 1, 1), 1, 1), "linear must be a torch.nn.Linear"),
    (lambda: fc_to_conv(nn.Linear(8, 2), 3, 2), "in_features=8"),
    (lambda: fc_to_conv(nn.Linear(8, 2), 0, 2), "in_channels"),
    (lambda: fc_to_conv(nn.Linear(8, 2), 2, (2, 0)), "kernel_size"),
])
def test_fc_to_conv_rejects_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fully_convolutional_patch_classifier_equals_the_sliding_window_loop():
    torch.manual_seed(1)
    classifier = PatchClassifier(in_channels=1, num_classes=2, width=4, hidden=8, window=25).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in classifier.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    image = torch.rand(1, 45, 38)
    fcn = classifier.fully_convolutional()
    with torch.no_grad():
        heatmap = fcn(image[None])[0]
    loop = sliding_window_scores_naive(classifier, image, 25, stride=4)
    batched = sliding_window_scores(classifier, image, 25, stride=4, batch_size=7)
    assert heatmap.shape == loop.shape == (2, (45 - 25) // 4 + 1, (38 - 25) // 4 + 1)
    torch.testing.assert_close(heatmap, loop, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched, loop, atol=1e-5, rtol=1e-5)
    assert not fcn.training and isinstance(fcn[1], nn.Conv2d) and fcn[1].kernel_size == (4, 4) and fcn[3].kernel_size == (1, 1)


def test_patch_classifier_shapes_and_errors():
    model = PatchClassifier(in_channels=3, num_classes=5, window=17)
    assert model(torch.zeros(2, 3, 17, 17)).shape == (2, 5) and model.feature_size == 2
    with pytest.raises(ValueError, match="fully_convolutional"):
        model(torch.zeros(1, 3, 20, 20))
    for window in (9, 16, 24):
        with pytest.raises(ValueError, match="window"):
            PatchClassifier(window=window)


def test_sliding_window_scores_reject_bad_arguments():
    with pytest.raises(ValueError, match="classifier"):
        sliding_window_scores("net", torch.zeros(1, 8, 8), 3)
    with pytest.raises(ValueError, match="image must be 3-D"):
        sliding_window_scores(nn.Identity(), torch.zeros(8, 8), 3)
    with pytest.raises(ValueError, match="kernel"):
        sliding_window_scores(nn.Identity(), torch.zeros(1, 8, 8), 9)


def test_multiply_adds_counts_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.ConvTranspose2d(4, 2, 2, stride=2), nn.Flatten(), nn.Linear(2 * 12 * 12, 5))
    # conv: 4 x 6 x 6 outputs x 27 taps; transposed: 4 x 6 x 6 inputs stamp 2 x 2 x 2; linear: 288 x 5
    assert multiply_adds(model.train(), torch.zeros(2, 3, 8, 8)) == 4 * 36 * 27 + 4 * 36 * 8 + 288 * 5
    assert model.training


# ---------------------------------------------------------------- transposed convolution

def test_conv_transpose_output_size_matches_torch_everywhere():
    checked = 0
    for size in (1, 2, 5, 8):
        for kernel in (1, 2, 3, 4, 7):
            for stride in (1, 2, 3):
                for padding in (0, 1, 3):
                    for dilation in (1, 2):
                        for output_padding in range(max(stride, dilation)):
                            layer = nn.ConvTranspose2d(1, 1, kernel, stride, padding, output_padding, dilation=dilation)
                            try:
                                expected = layer(torch.zeros(1, 1, size, size)).shape[-1]
                            except RuntimeError:
                                expected = 0
                            if expected == 0:  # torch refuses, or (with output_padding) returns an empty map
                                with pytest.raises(ValueError, match="padding"):
                                    conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation)
                                continue
                            assert conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation) == expected
                            checked += 1
    assert checked > 500


@pytest.mark.parametrize("kwargs,match", [({"size": 0}, "size"), ({"stride": 0}, "stride"), ({"padding": -1}, "padding"),
                                          ({"output_padding": 2, "stride": 2}, "output_padding"), ({"kernel": 2.0}, "kernel")])
def test_conv_transpose_output_size_rejects_bad_arguments(kwargs, match):
    arguments = {"size": 4, "kernel": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        conv_transpose_output_size(**arguments)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 8])
def test_bilinear_kernel_upsamples_like_interpolate_in_the_interior(factor):
    g = torch.Generator().manual_seed(factor)
    x = torch.randn(2, 3, 7, 6, generator=g)
    weight = bilinear_kernel(3, factor)
    size = 2 * factor - factor % 2
    assert weight.shape == (3, 3, size, size) and weight.dtype == torch.float32
    assert weight[0, 1].abs().sum() == 0 and weight[2, 2].max() <= 1.0
    up = F.conv_transpose2d(x, weight, stride=factor, padding=(size - factor) // 2)
    reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert up.shape == reference.shape
    m = factor
    torch.testing.assert_close(up[..., m:-m, m:-m], reference[..., m:-m, m:-m], atol=1e-5, rtol=1e-5)
    layer = bilinear_upsampler(3, factor, trainable=False)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), up)
    assert not layer.weight.requires_grad


def test_bilinear_kernel_worked_example():
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(1, 2)[0, 0], taps[:, None] * taps[None, :])
    with pytest.raises(ValueError, match="factor"):
        bilinear_kernel(2, 0)


# ---------------------------------------------------------------- models

@pytest.mark.parametrize("skips", [0, 1, 2])
def test_fcn_output_shape_and_starting_point(skips):
    torch.manual_seed(0)
    model = FCN(5, skips=skips, pretrained=False).eval()
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 5, 64, 80)
        # the skip score layers start at zero, so training starts from the coarse scores, upsampled bilinearly
        expected = model.score[0](model.encoder(x)[-1])
        for factor in [2] * skips + [16 // 2**skips]:
            expected = F.interpolate(expected, scale_factor=factor, mode="bilinear", align_corners=False)
    m = 24
    torch.testing.assert_close(out[..., m:-m, m:-m], expected[..., m:-m, m:-m], atol=1e-4, rtol=1e-4)
    assert len(model.score) == len(model.up) + 1 == skips + 1


def test_fcn_pretrained_encoder_holds_imagenet_weights():
    from course_lib import transfer

    model = FCN(3, skips=2, pretrained=True)
    reference = transfer.pretrained("mobilenet_v2", quiet=True).features[0][0].weight
    torch.testing.assert_close(model.encoder.stages[0][0][0].weight, reference)



@pytest.mark.parametrize("call,match", [(lambda: FCN(5, skips=3, pretrained=False), "skips"),
                                        (lambda: FCN(5, pretrained="yes"), "pretrained"),
                                        (lambda: FCN(5, pretrained=False)(torch.zeros(1, 3, 40, 40)), "divisible by 16"),
                                        (lambda: UNet(3, 2, 8, 3)(torch.zeros(1, 3, 20, 20)), "divisible by 8"),
                                        (lambda: UNet(width=0), "width")])
def test_models_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unet_output_shape():
    assert UNet(3, 5, 4, 2)(torch.zeros(2, 3, 16, 12)).shape == (2, 5, 16, 12)



# ---------------------------------------------------------------- the explorer's plain function

def test_draw_segmentation_reports_the_scene_iou_and_rejects_bad_arguments():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib import widgets

    image = torch.rand(3, 8, 8)
    target = torch.zeros(8, 8, dtype=torch.int64)
    target[2:5, 2:5] = 1
    pred = target.clone()
    pred[0, 0] = 2
    axes, iou = widgets.draw_segmentation(image, pred, target, ("background", "circle", "square", "star"), opacity=0.4)
    assert len(axes) == 2
    assert iou[:3].tolist() == pytest.approx([54 / 55, 1.0, 0.0]) and math.isnan(float(iou[3]))
    axes, iou = widgets.draw_segmentation(image, pred)
    assert len(axes) == 1 and iou is None
    for kwargs, match in [({"opacity": 1.5}, "opacity"), ({"target": target[:4]}, "target")]:
        with pytest.raises(ValueError, match=match):
            widgets.draw_segmentation(image, pred, **kwargs)
    with pytest.raises(ValueError, match="pred"):
        widgets.draw_segmentation(image, pred[:4])
    plt.close("all")
