"""Tests for course_lib.visualize, mostly on hand-built models whose answer is known in advance."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import visualize as V

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------------------------
# Hand-built models and naive oracles
# --------------------------------------------------------------------------------------------


class RegionModel(nn.Module):
    """Three classes. Class 1's logit is 0.5 * sum(w * x^2) over ``x[:, 4:8, 4:8]`` only; classes 0 and
    2 are constants. A dropout layer makes train mode visibly different from eval mode."""

    def __init__(self, channels, dtype=torch.float64, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(channels, 4, 4, generator=gen, dtype=dtype))
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        score = 0.5 * (self.weight * x[..., 4:8, 4:8].square()).sum((1, 2, 3))
        const = torch.zeros_like(score)
        return self.dropout(torch.stack([const + 0.3, score, const - 0.2], 1))


def overlaps_region(rows, cols, patch, stride):
    """[rows, cols] bool: does the occluder at (i, j) cover any pixel of rows/cols 4..7?"""
    ys = torch.arange(rows) * stride[0]
    xs = torch.arange(cols) * stride[1]
    hit_y = (ys < 8) & (ys + patch[0] > 4)
    hit_x = (xs < 8) & (xs + patch[1] > 4)
    return hit_y[:, None] & hit_x[None, :]


def occlusion_naive(model, image, target, patch, stride, fill, layer=None):
    """One forward pass per occluder position. Returns p(target) and the argmax per position, and with
    ``layer`` also its strongest channel on the clean image and that channel's total per position."""
    _, height, width = image.shape
    rows, cols = (height - patch[0]) // stride[0] + 1, (width - patch[1]) // stride[1] + 1
    p = torch.empty(rows, cols, dtype=image.dtype)
    top = torch.empty(rows, cols, dtype=torch.long)
    act = torch.empty(rows, cols, dtype=image.dtype)
    caught, strongest = [], None
    model.eval()
    if layer is not None:
        handle = layer.register_forward_hook(lambda m, i, o: caught.append(o[0].sum((1, 2))))
    with torch.no_grad():
        if layer is not None:
            model(image[None])
            strongest = int(caught.pop().argmax())
        for i in range(rows):
            for j in range(cols):
                x = image.clone()
                y0, x0 = i * stride[0], j * stride[1]
                x[:, y0 : y0 + patch[0], x0 : x0 + patch[1]] = fill
                probs = model(x[None]).softmax(-1)[0]
                p[i, j], top[i, j] = probs[target], probs.argmax()
                if layer is not None:
                    act[i, j] = caught.pop()[strongest]
    if layer is not None:
        handle.remove()
    return (p, top) if layer is None else (p, top, strongest, act)


def small_cnn(channels=3, classes=4, seed=0, dtype=torch.float32, inplace=False):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4, classes),
    )
    for module in model:
        if hasattr(module, "weight"):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.to(dtype)


def assert_no_hooks(model):
    for name, module in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(module, attr), f"{name or 'model'}.{attr} still holds {getattr(module, attr)}"


def training_flags(model):
    return [m.training for m in model.modules()]


# --------------------------------------------------------------------------------------------
# Filters and feature maps
# --------------------------------------------------------------------------------------------


def test_first_layer_filters_is_a_detached_copy_of_the_first_conv():
    model = small_cnn()
    w = V.first_layer_filters(model)
    torch.testing.assert_close(w, model[0].weight, rtol=0, atol=0)
    assert not w.requires_grad
    w.zero_()
    assert model[0].weight.abs().sum() > 0
    with pytest.raises(ValueError, match="model"):
        V.first_layer_filters(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))


@pytest.mark.parametrize("channels,dtype", [(3, torch.float32), (1, torch.float64), (2, torch.float32)])
def test_filter_grid_tiles_normalised_filters(channels, dtype):
    torch.manual_seed(1)
    weights = torch.randn(5, channels, 3, 2, dtype=dtype)
    grid = V.filter_grid(weights, ncols=3)
    tiles = weights if channels in (1, 3) else weights.flatten(0, 1)[:, None]
    n = len(tiles)
    nrows = -(-n // 3)
    assert grid.shape == (tiles.shape[1], nrows * 4 + 1, 3 * 3 + 1)
    assert grid.dtype == dtype
    for t in range(n):
        filt = weights[t if channels in (1, 3) else t // channels]
        expect = (tiles[t] - filt.min()) / (filt.max() - filt.min())
        r, c = divmod(t, 3)
        torch.testing.assert_close(grid[:, 1 + 4 * r : 4 + 4 * r, 1 + 3 * c : 3 + 3 * c], expect)
    # Separators and the empty cells of the last row hold pad_value.
    assert (grid[:, 0, :] == 1).all() and (grid[:, :, 0] == 1).all()
    if n % 3:
        assert (grid[:, -4:, 1 + 3 * (n % 3) :] == 1).all()
    raw = V.filter_grid(weights, ncols=8, normalize=False, padding=0)
    assert raw.shape[1:] == (3 * -(-n // 8), 2 * min(8, n))
    torch.testing.assert_close(raw[:, :3, :2], tiles[0])


class Nested(nn.Module):
    def __init__(self, explode=False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(5 * 3 * 4, 3))
        self.explode = explode

    def forward(self, x):
        h = self.features(x)
        if self.explode:
            raise RuntimeError("boom inside forward")
        return self.head(h)


def test_feature_maps_equal_calling_the_submodule():
    torch.manual_seed(2)
    model = Nested()
    model.train()
    images = torch.randn(3, 2, 7, 9)
    f = model.features
    with torch.no_grad():
        torch.testing.assert_close(V.feature_maps(model, "features.0", images), f[0](images))
        torch.testing.assert_close(V.feature_maps(model, "features.1", images), f[1](f[0](images)))
        torch.testing.assert_close(V.feature_maps(model, f[2], images), f(images))
        torch.testing.assert_close(V.feature_maps(model, "features", images[0]), f(images[:1])[0])
        # The forward pass stops at the layer: an input the head cannot take is fine.
        assert V.feature_maps(model, "features.2", torch.randn(2, 2, 15, 15)).shape == (2, 5, 7, 7)
    assert all(training_flags(model))
    assert_no_hooks(model)


def test_feature_maps_unknown_layer_and_exceptions_leave_no_hooks():
    model = Nested(explode=True)
    with pytest.raises(ValueError, match="'nope'.*features.0"):
        V.feature_maps(model, "nope", torch.randn(1, 2, 7, 9))
    with pytest.raises(ValueError, match="layer"):
        V.feature_maps(model, nn.ReLU(), torch.randn(1, 2, 7, 9))
    with pytest.raises(RuntimeError, match="boom"):
        V.feature_maps(model, "head.1", torch.randn(1, 2, 7, 9))
    assert all(training_flags(model))
    assert_no_hooks(model)
    with pytest.raises(ValueError, match="images"):
        V.feature_maps(model, "features.0", torch.randn(7, 9))


# --------------------------------------------------------------------------------------------
# Top patches
# --------------------------------------------------------------------------------------------


def bright_pixel_model(channels):
    """One 3x3 conv: centre tap 1, other taps 0.1, on every input channel. On a black image with one
    bright pixel the strongest unit sits exactly on that pixel."""
    conv = nn.Conv2d(channels, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(0.1)
        conv.weight[:, :, 1, 1] = 1.0
    return nn.Sequential(conv)


def zero_padded_crop(image, top, left, size):
    pad = size
    padded = F.pad(image, (pad, pad, pad, pad))
    return padded[:, top + pad : top + pad + size, left + pad : left + pad + size]


def test_top_patches_centre_on_the_bright_pixel():
    channels, height, width = 2, 9, 11
    spots = [(0, 0, 1.0), (8, 10, 5.0), (4, 3, 3.0), (2, 9, 4.0), (6, 6, 2.0)]  # (row, col, brightness)
    images = torch.zeros(len(spots), channels, height, width)
    for n, (r, c, b) in enumerate(spots):
        images[n, :, r, c] = b
    model = bright_pixel_model(channels)
    patches, scores, locations = V.top_patches(model, "0", images, channel=0, k=3, batch_size=2)
    assert patches.shape == (3, channels, 3, 3)
    order = [1, 3, 2]  # brightest first
    torch.testing.assert_close(scores, torch.tensor([channels * spots[n][2] for n in order]))
    for patch, loc, n in zip(patches, locations, order):
        r, c, b = spots[n]
        assert loc.tolist() == [n, r - 1, c - 1]
        assert (patch[:, 1, 1] == b).all()
        torch.testing.assert_close(patch, zero_padded_crop(images[n], r - 1, c - 1, 3))
    # A corner pixel: half the field lies outside the image and comes back as zeros.
    patches, _, locations = V.top_patches(model, "0", images[:1], channel=0, k=1)
    assert locations.tolist() == [[0, -1, -1]]
    assert patches[0, :, 0, :].abs().sum() == 0 and patches[0, :, :, 0].abs().sum() == 0


def test_top_patches_one_per_image_or_not():
    images = torch.zeros(2, 1, 6, 7, dtype=torch.float64)
    images[0, 0, 1, 1], images[0, 0, 4, 5], images[1, 0, 3, 3] = 9.0, 8.0, 1.0
    model = bright_pixel_model(1).double()
    _, scores, locations = V.top_patches(model, "0", images, 0, k=2)
    assert locations[:, 0].tolist() == [0, 1] and scores.tolist() == [9.0, 1.0]
    _, scores, locations = V.top_patches(model, "0", images, 0, k=2, one_per_image=False)
    assert locations.tolist() == [[0, 0, 0], [0, 3, 4]] and scores.tolist() == [9.0, 8.0]


def test_top_patches_inside_skips_fields_that_cross_the_border():
    images = torch.zeros(1, 1, 6, 7)
    images[0, 0, 0, 0], images[0, 0, 3, 3] = 9.0, 2.0  # a bright corner pixel, a dimmer one inside
    model = bright_pixel_model(1)
    _, _, locations = V.top_patches(model, "0", images, 0, k=1)
    assert locations.tolist() == [[0, -1, -1]]  # the corner unit, half its field in the padding
    # Inside the border, the unit on the dim pixel (2.0) beats the one that sees the corner at 0.1 * 9.
    patches, scores, locations = V.top_patches(model, "0", images, 0, k=2, one_per_image=False, inside=True)
    assert locations.tolist() == [[0, 2, 2], [0, 0, 0]]
    torch.testing.assert_close(scores, torch.tensor([2.0, 0.9]))
    torch.testing.assert_close(patches, torch.stack([images[0, :, 2:5, 2:5], images[0, :, 0:3, 0:3]]))
    _, _, locations = V.top_patches(model, "0", images, 0, k=1, inside=True)
    assert locations.tolist() == [[0, 2, 2]]
    with pytest.raises(ValueError, match="inside"):
        V.top_patches(model, "0", torch.rand(2, 1, 2, 2), 0, k=1, inside=True)
    with pytest.raises(ValueError, match="k must"):
        V.top_patches(model, "0", images, 0, k=21, one_per_image=False, inside=True)  # 4 x 5 units inside


@pytest.mark.parametrize(
    "layers,field",
    [
        ([nn.Conv2d(1, 2, 3, stride=2), nn.Conv2d(2, 2, 3)], 7),
        ([nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3)], 8),
        ([nn.Conv2d(1, 2, 5, padding=2, dilation=2), nn.ReLU(), nn.Conv2d(2, 2, (3, 1))], (11, 9)),
    ],
)
def test_top_patches_receptive_field_size(layers, field):
    field = field if isinstance(field, tuple) else (field, field)
    patches, _, _ = V.top_patches(nn.Sequential(*layers), str(len(layers) - 1), torch.rand(4, 1, 21, 18), 1, k=2)
    assert patches.shape == (2, 1, *field)


def test_top_patches_location_matches_the_gradient_support():
    """With positive weights and average pooling, the gradient of a unit with respect to the input is
    non-zero exactly on the unit's receptive field (cut off at the image border)."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=2, dilation=2),
        nn.AvgPool2d(2),
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Conv2d(4, 4, 3, padding="same"),
    ).double()
    for p in model.parameters():
        p.data.uniform_(0.1, 1.0)
    images = torch.rand(5, 2, 23, 19, dtype=torch.float64)
    patches, scores, locations = V.top_patches(model, model[3], images, channel=2, k=5, batch_size=3)
    assert patches.shape == (5, 2, 18, 18)  # 5 -> 6 -> 10 -> 18 pixels
    for patch, score, (n, top, left) in zip(patches, scores, locations.tolist()):
        x = images[n].clone().requires_grad_()
        act = model(x[None])[0, 2]
        torch.testing.assert_close(act.max(), score)
        (grad,) = torch.autograd.grad(act.max(), x)
        rows = grad.abs().sum((0, 2)).nonzero().flatten()
        cols = grad.abs().sum((0, 1)).nonzero().flatten()
        assert (rows.min().item(), rows.max().item()) == (max(top, 0), min(top + 17, 22))
        assert (cols.min().item(), cols.max().item()) == (max(left, 0), min(left + 17, 18))
        torch.testing.assert_close(patch, zero_padded_crop(images[n], top, left, 18))


def test_top_patches_bad_arguments():
    model = bright_pixel_model(1)
    images = torch.rand(3, 1, 5, 5)
    with pytest.raises(ValueError, match="channel"):
        V.top_patches(model, "0", images, channel=1)
    with pytest.raises(ValueError, match="k must"):
        V.top_patches(model, "0", images, channel=0, k=4)
    with pytest.raises(ValueError, match="layer"):
        V.top_patches(model, "1", images, channel=0)
    with pytest.raises(ValueError, match="images"):
        V.top_patches(model, "0", images[0], channel=0)


def test_top_activations_rank_images_by_the_total_of_the_map():
    # bright_pixel_model on one interior pixel of brightness b: the 3x3 outputs around it see it once
    # each, through the centre tap (1) or one of eight others (0.1), on every channel: total 1.8 * C * b.
    channels, brightness = 2, [1.0, 5.0, 3.0, 4.0, 2.0]
    images = torch.zeros(len(brightness), channels, 7, 8)
    for n, b in enumerate(brightness):
        images[n, :, 2 + n % 3, 3 + n % 2] = b
    model = bright_pixel_model(channels)
    maps, scores, index = V.top_activations(model, "0", images, channel=0, k=3, batch_size=2)
    assert index.tolist() == [1, 3, 2] and maps.shape == (3, 7, 8)
    torch.testing.assert_close(scores, torch.tensor([1.8 * channels * b for b in (5.0, 4.0, 3.0)]))
    with torch.no_grad():
        torch.testing.assert_close(maps, model(images)[index, 0])


def test_top_activations_equal_sorting_every_map():
    model = small_cnn(seed=4).train()
    images = torch.rand(11, 3, 10, 12)
    with torch.no_grad():
        model.eval()
        full = model[:2](images)[:, 5]  # conv then ReLU: the layer "1", channel 5
        model.train()
    order = full.sum((1, 2)).argsort(descending=True)[:4]
    maps, scores, index = V.top_activations(model, "1", images, 5, k=4, batch_size=3)
    assert index.tolist() == order.tolist()
    torch.testing.assert_close(maps, full[order])
    torch.testing.assert_close(scores, full[order].sum((1, 2)))
    assert all(training_flags(model))
    assert_no_hooks(model)


def test_top_activations_bad_arguments():
    model = small_cnn()
    images = torch.rand(3, 3, 8, 8)
    with pytest.raises(ValueError, match="k must be at most the number of images"):
        V.top_activations(model, "0", images, 0, k=4)
    with pytest.raises(ValueError, match="channel must be < 6"):
        V.top_activations(model, "0", images, 6, k=2)
    with pytest.raises(ValueError, match="feature maps"):
        V.top_activations(model, "7", images, 0, k=2)
    with pytest.raises(ValueError, match="images"):
        V.top_activations(model, "0", images[0], 0, k=2)
    with pytest.raises(ValueError, match="'nope'"):
        V.top_activations(model, "nope", images, 0, k=2)
    assert_no_hooks(model)


def test_draw_top_activations_shows_both_rankings():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib import widgets

    model = small_cnn(seed=5)
    images = torch.rand(6, 3, 12, 12)
    labels = ["cat", "dog", "cup", "sky", "sea", "car"]
    axes, patches, activations = widgets.draw_top_activations(model, "3", images, 2, k=4, labels=labels)
    assert axes.shape == (2, 4)
    expected = V.top_activations(model, "3", images, 2, k=4)
    for got, want in zip(activations, expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(patches[0], V.top_patches(model, "3", images, 2, k=4, inside=True)[0])
    assert [ax.get_title().split("\n")[0] for ax in axes[1]] == [labels[i] for i in expected[2].tolist()]
    assert [ax.get_title().split("\n")[0] for ax in axes[0]] == [labels[i] for i in patches[2][:, 0].tolist()]
    assert axes[1][0].get_title() == f"{labels[int(expected[2][0])]}\ntotal: {float(expected[1][0]):.3g}"
    plt.close("all")
    assert_no_hooks(model)


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,patch,stride,fill,dtype",
    [
        ((12, 14), 3, 1, 0.0, torch.float64),
        ((13, 11), 2, 3, 0.5, torch.float32),  # stride > patch: gaps between occluders
        ((10, 16), (4, 2), (2, 3), "channel mean", torch.float64),
    ],
)
def test_occlusion_map_changes_exactly_over_the_region(size, patch, stride, fill, dtype):
    torch.manual_seed(4)
    channels = 3
    image = torch.randn(channels, *size, dtype=dtype)
    if fill == "channel mean":
        fill = image.mean((1, 2))
    model = RegionModel(channels, dtype)
    model.train()
    p = V.occlusion_map(model, image, 1, patch, stride, fill=fill)
    patch2 = patch if isinstance(patch, tuple) else (patch, patch)
    stride2 = stride if isinstance(stride, tuple) else (stride, stride)
    oracle_fill = fill[:, None, None] if isinstance(fill, torch.Tensor) else fill
    expect, _ = occlusion_naive(model, image, 1, patch2, stride2, oracle_fill)
    torch.testing.assert_close(p, expect)
    with torch.no_grad():
        clean = model.eval()(image[None]).softmax(-1)[0]
    hit = overlaps_region(*p.shape, patch2, stride2)
    assert ((p != clean[1]) == hit).all()
    model.train()
    p_other = V.occlusion_map(model, image, 0, patch, stride, fill=fill)
    assert ((p_other != clean[0]) == hit).all()
    assert all(training_flags(model))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_occlusion_experiment_matches_a_loop_over_positions(dtype):
    torch.manual_seed(5)
    model = small_cnn(channels=2, classes=5, dtype=dtype, inplace=True)
    image = torch.rand(2, 11, 9, dtype=dtype)
    out = V.occlusion_experiment(model, image, 3, 3, 2, fill=0.2, layer="3", batch_size=7)
    p, top, strongest, act = occlusion_naive(model, image, 3, (3, 3), (2, 2), 0.2, layer=model[3])
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else {}
    torch.testing.assert_close(out["p_true"], p, **tol)
    assert (out["top_class"] == top).all()
    assert out["feature_map_index"] == strongest
    torch.testing.assert_close(out["feature_activation"], act, **tol)
    with torch.no_grad():
        torch.testing.assert_close(out["p_unoccluded"], model(image[None]).softmax(-1)[0, 3], **tol)
    assert_no_hooks(model)
    assert set(V.occlusion_experiment(model, image, 3, 3, 2)) == {"p_true", "top_class", "p_unoccluded"}


def test_draw_occlusion_puts_each_map_cell_over_its_occluder():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib import widgets

    model = RegionModel(1)
    image = torch.rand(1, 12, 14, dtype=torch.float64)
    axes, result = widgets.draw_occlusion(model, image, 1, patch_size=4, stride=2, layer="dropout", class_names="abc")
    expected = V.occlusion_experiment(model, image, 1, 4, 2, layer="dropout")
    torch.testing.assert_close(result["p_true"], expected["p_true"])
    assert len(axes) == 4 and all(ax.get_title() for ax in axes)
    # Cell (0, 0) spans the first occluder's centre (1.5, 1.5) +- stride / 2, in image pixel coordinates.
    left, right, bottom, top = axes[1].get_images()[0].get_extent()
    assert (left, top) == (0.5, 0.5) and (right, bottom) == (0.5 + 6 * 2, 0.5 + 5 * 2)
    winners = {"abc"[c] for c in expected["top_class"].unique().tolist()}  # only classes that win somewhere
    assert {t.get_text() for t in axes[2].get_legend().get_texts()} == winners
    axes, _ = widgets.draw_occlusion(model, image, 1, patch_size=4, stride=2)
    assert len(axes) == 3
    plt.close("all")
    assert_no_hooks(model)


def test_occlusion_bad_arguments():
    model = RegionModel(2)
    image = torch.rand(2, 9, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="patch_size"):
        V.occlusion_map(model, image, 1, 10, 1)
    with pytest.raises(ValueError, match="stride"):
        V.occlusion_map(model, image, 1, 3, 0)
    with pytest.raises(ValueError, match="target"):
        V.occlusion_map(model, image, 3, 3, 1)
    with pytest.raises(ValueError, match="target"):
        V.occlusion_map(model, image, -1, 3, 1)
    with pytest.raises(ValueError, match="image"):
        V.occlusion_map(model, image[None], 1, 3, 1)
    with pytest.raises(ValueError, match="fill"):
        V.occlusion_map(model, image, 1, 3, 1, fill=torch.zeros(3))
    with pytest.raises(ValueError, match="layer"):
        V.occlusion_experiment(model, image, 1, 3, 1, layer="conv9")


# --------------------------------------------------------------------------------------------
# Saliency and guided backpropagation
# --------------------------------------------------------------------------------------------


def test_saliency_is_the_analytic_gradient_inside_the_region_and_zero_outside():
    torch.manual_seed(6)
    model = RegionModel(3)
    model.train()
    image = torch.randn(3, 10, 13, dtype=torch.float64)
    s = V.saliency_map(model, image, 1)
    expect = torch.zeros(10, 13, dtype=torch.float64)
    # d/dx of 0.5 * w * x^2 is w * x; the map keeps the largest magnitude over channels.
    expect[4:8, 4:8] = (model.weight * image[:, 4:8, 4:8]).abs().amax(0)
    torch.testing.assert_close(s, expect, rtol=0, atol=0)
    assert model.weight.grad is None and all(training_flags(model))
    assert (V.saliency_map(model, image, 0) == 0).all()
    with pytest.raises(ValueError, match="target"):
        V.saliency_map(model, image, 5)
    with pytest.raises(ValueError, match="image"):
        V.saliency_map(model, image[0], 1)


def test_saliency_equals_autograd_on_a_cnn():
    torch.manual_seed(7)
    model = small_cnn(dtype=torch.float64)
    image = torch.rand(3, 8, 10, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(model(image[None])[0, 2], image)
    torch.testing.assert_close(V.saliency_map(model, image.detach(), 2), grad.abs().amax(0))
    assert all(p.grad is None for p in model.parameters())


def test_guided_backprop_by_hand_on_a_two_relu_mlp():
    torch.manual_seed(8)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(2 * 3 * 4, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(inplace=True), nn.Linear(6, 3)
    ).double()
    model.train()
    image = torch.randn(2, 3, 4, dtype=torch.float64)
    w1, w2, w3 = model[1].weight, model[3].weight, model[5].weight
    with torch.no_grad():
        z1 = w1 @ image.flatten() + model[1].bias
        z2 = w2 @ z1.relu() + model[3].bias
        r2 = (z2 > 0) * w3[1].clamp(min=0)  # guided rule: input > 0 and gradient > 0
        r1 = (z1 > 0) * (w2.T @ r2).clamp(min=0)
        expect = (w1.T @ r1).view(2, 3, 4)
    torch.testing.assert_close(V.guided_backprop(model, image, 1), expect)
    assert all(training_flags(model))
    assert_no_hooks(model)
    assert all(p.grad is None for p in model.parameters())


def test_guided_backprop_on_a_conv_with_inplace_relu():
    torch.manual_seed(9)
    conv, linear = nn.Conv2d(3, 4, 3), nn.Linear(4 * 5 * 6, 2)
    model = nn.Sequential(conv, nn.ReLU(inplace=True), nn.Flatten(), linear)
    image = torch.randn(3, 7, 8)
    x = image.clone().requires_grad_()
    z = conv(x[None])
    guided_out = (z > 0) * linear.weight[0].view(1, 4, 5, 6).clamp(min=0)
    (expect,) = torch.autograd.grad(z, x, grad_outputs=guided_out)
    got = V.guided_backprop(model, image, 0)
    torch.testing.assert_close(got, expect)
    assert_no_hooks(model)
    (plain,) = torch.autograd.grad(model(x[None])[0, 0], x)
    assert not torch.allclose(got, plain)


def test_guided_backprop_leaves_functional_relu_alone():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.relu(self.a(x.flatten(1))))

    torch.manual_seed(10)
    model = Functional()
    image = torch.randn(1, 1, 5, requires_grad=True)
    (plain,) = torch.autograd.grad(model(image[None])[0, 1], image)
    torch.testing.assert_close(V.guided_backprop(model, image.detach(), 1), plain)


# --------------------------------------------------------------------------------------------
# Gradient ascent: class visualisation and DeepDream
# --------------------------------------------------------------------------------------------


def test_total_variation_by_hand():
    x = torch.tensor([[[0.0, 1.0], [3.0, 5.0]]])
    assert V.total_variation(x).item() == (9 + 16) + (1 + 4)
    batch = torch.randn(4, 2, 5, 3, dtype=torch.float64)
    tv = V.total_variation(batch)
    assert tv.shape == (4,)
    loop = [sum(((b[:, i + 1, :] - b[:, i, :]) ** 2).sum() for i in range(4)) + sum(
        ((b[:, :, j + 1] - b[:, :, j]) ** 2).sum() for j in range(2)) for b in batch]
    torch.testing.assert_close(tv, torch.stack(loop))


def test_class_visualization_step_on_a_linear_model():
    torch.manual_seed(11)
    linear = nn.Linear(2 * 4 * 3, 5).double()
    model = nn.Sequential(nn.Flatten(), linear)
    image = torch.randn(2, 4, 3, dtype=torch.float64)
    before = image.clone()
    lr, l2 = 0.3, 0.05
    new = V.class_visualization_step(model, image, 4, lr, l2=l2)
    with torch.no_grad():
        g = linear.weight[4].view(2, 4, 3) - 2 * l2 * image  # d/dx (w.x + b - l2 |x|^2)
        expect = image + lr * g / (g.abs().mean() + 1e-8)
    torch.testing.assert_close(new, expect)
    assert torch.equal(image, before) and not new.requires_grad and linear.weight.grad is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_class_visualization_step_equals_autograd_reference(dtype):
    model = small_cnn(dtype=dtype, seed=12)
    model.train()
    image = torch.rand(3, 6, 10, dtype=dtype)
    x = image.clone().requires_grad_()
    objective = model.eval()(x[None])[0, 1] - 0.01 * (x * x).sum()
    (g,) = torch.autograd.grad(objective, x)
    model.train()
    got = V.class_visualization_step(model, image, 1, 0.5, l2=0.01)
    torch.testing.assert_close(got, x.detach() + 0.5 * g / (g.abs().mean() + 1e-8))
    assert all(training_flags(model))
    with pytest.raises(ValueError, match="lr"):
        V.class_visualization_step(model, image, 1, 0.0)
    with pytest.raises(ValueError, match="target"):
        V.class_visualization_step(model, image, 4, 0.1)


def test_class_visualization_raises_the_target_score():
    # Random weights, with the head scaled up so that, as in a trained network, the logit's gradient
    # is strong against the prior (an untrained head's tiny gradient loses to any penalty).
    model = small_cnn(seed=13)
    with torch.no_grad():
        model[-1].weight *= 10
    model.train()
    image, history = V.class_visualization(model, 2, (3, 16, 16), steps=30, l2=1e-2, tv=1e-2)
    assert image.shape == (3, 16, 16) and history.shape == (30,)
    with torch.no_grad():
        final = model.eval()(image[None])[0, 2].item()
    assert final >= history[0].item() + 5, (history[0].item(), final)
    again, _ = V.class_visualization(model, 2, (3, 16, 16), steps=30, l2=1e-2, tv=1e-2)
    assert torch.equal(image, again)
    model.train()
    start = torch.rand(3, 16, 16)
    clamped, _ = V.class_visualization(model, 2, (3, 16, 16), steps=5, init=start, value_range=(0, 1))
    assert clamped.min() >= 0 and clamped.max() <= 1 and all(training_flags(model))
    with pytest.raises(ValueError, match="init"):
        V.class_visualization(model, 2, (3, 8, 8), steps=1, init=start)
    with pytest.raises(ValueError, match="shape"):
        V.class_visualization(model, 2, (16, 16), steps=1)
    assert_no_hooks(model)


def test_deep_dream_amplifies_the_layer_over_octaves():
    torch.manual_seed(14)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
        nn.Flatten(), nn.Linear(6 * 20 * 24, 3),  # the head only fits the full-size octave
    )
    model.train()
    image = torch.rand(3, 20, 24)
    dream = V.deep_dream(model, image, "2", steps=5, lr=0.05, octaves=3, octave_scale=1.4)
    assert dream.shape == image.shape and not dream.requires_grad
    before, after = (V.feature_maps(model, "2", x).square().mean() for x in (image, dream))
    assert after > 1.5 * before
    assert all(training_flags(model))
    assert_no_hooks(model)
    with pytest.raises(ValueError, match="octave_scale"):
        V.deep_dream(model, image, "2", steps=1, lr=0.1, octave_scale=0.5)


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_stay_on_the_input_device(device):
    model = small_cnn(seed=15).to(device)
    image = torch.rand(3, 8, 8, device=device)
    outputs = [
        V.occlusion_map(model, image, 1, 3, 2),
        V.saliency_map(model, image, 1),
        V.guided_backprop(model, image, 1),
        V.class_visualization_step(model, image, 1, 0.1),
        V.class_visualization(model, 1, (3, 8, 8), steps=2)[0],
        V.deep_dream(model, image, "3", steps=1, lr=0.1, octaves=2),
        V.top_patches(model, "0", image[None].repeat(2, 1, 1, 1), 0, k=2)[0],
        V.top_activations(model, "0", image[None].repeat(2, 1, 1, 1), 0, k=2)[0],
        V.filter_grid(V.first_layer_filters(model)),
    ]
    assert all(out.device == image.device for out in outputs)


# --------------------------------------------------------------------------------------------
# Figure layout (course_lib.plot.layout)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height", [3.6, 4.0, 4.2, 4.4, 4.6, 5.4])
def test_plot_layout_keeps_the_figure_title_clear_of_the_axes_titles(height):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib import plot

    # Four square images with two-line titles under a figure title: at some heights matplotlib's default
    # constrained layout lets the titles touch (e.g. 14 x 4 inches); the course's layout never does.
    fig, axes = plt.subplots(1, 4, figsize=(14, height), layout=plot.layout())
    for ax in axes:
        plot.show_image(torch.rand(24, 24), "two 3x3\nformula 5, measured 5", ax=ax)
    fig.suptitle("Which input pixels reach one output unit")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bottom = fig._suptitle.get_window_extent(renderer).y0
    assert all(bottom - ax.title.get_window_extent(renderer).y1 >= 4 for ax in axes)
    plt.close(fig)
