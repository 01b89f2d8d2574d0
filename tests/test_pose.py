import math

import pytest
import torch

from course_lib import pose
from course_lib.data.figures import JOINTS, stick_figures
from course_lib.segmentation import UNet


def disk_loop(keypoints, height, width, radius):
    flat = keypoints.double().reshape(-1, 2).tolist()
    out = torch.zeros(len(flat), height, width, dtype=torch.float64)
    for k, (x, y) in enumerate(flat):
        for row in range(height):
            for col in range(width):
                out[k, row, col] = float((col - x) ** 2 + (row - y) ** 2 <= radius**2)
    return out.reshape(*keypoints.shape[:-1], height, width)


@pytest.mark.parametrize("seed", range(4))
def test_disk_heatmaps_equal_a_pixel_loop(seed):
    g = torch.Generator().manual_seed(seed)
    height, width = 7 + seed, 11 - seed
    for dtype in (torch.float32, torch.float64):
        kp = torch.round((torch.rand(2, 3, 2, generator=g, dtype=torch.float64) * 14 - 2) * 4) / 4  # some outside
        radius = [0.0, 1.0, 1.5, 2.5][seed]
        got = pose.disk_heatmaps(kp.to(dtype), height, width, radius)
        assert got.shape == (2, 3, height, width) and got.dtype == dtype
        assert torch.equal(got.double(), disk_loop(kp, height, width, radius))


def test_disk_rim_is_included_and_axes_are_x_then_y():
    maps = pose.disk_heatmaps(torch.tensor([[3.0, 1.0]]), 4, 6, 2)[0]
    assert maps[1, 5] == 1 and maps[1, 1] == 1 and maps[3, 3] == 1  # exactly 2 away: on the rim
    assert maps[1, 3] == 1 and maps[3, 1] == 0 and maps[0, 5] == 0  # (x=3, y=1) is column 3, row 1
    assert int(maps.sum()) == 12  # the 13-pixel disk of radius 2, less its one pixel in row -1
    # a 3-4-5 triangle: distance exactly 5
    assert pose.disk_heatmaps(torch.tensor([[0.0, 0.0]]), 6, 6, 5.0)[0, 4, 3] == 1


def test_gaussian_heatmaps():
    kp = torch.tensor([[[2.0, 3.0]]])
    maps = pose.gaussian_heatmaps(kp, 5, 6, 1.5)
    assert maps.shape == (1, 1, 5, 6)
    assert maps[0, 0, 3, 2] == 1
    assert math.isclose(float(maps[0, 0, 3, 4]), math.exp(-4 / (2 * 1.5**2)), rel_tol=1e-6)


def test_decode_round_trip_is_exact_for_integer_joints_inside_the_image():
    g = torch.Generator().manual_seed(0)
    for radius in (0.0, 1.0, 2.0, 3.5):
        kp = torch.randint(4, 28, (5, 14, 2), generator=g).float()
        back = pose.decode_heatmaps(pose.disk_heatmaps(kp, 32, 32, radius))
        assert torch.equal(back, kp), radius


def test_decode_round_trip_of_sub_pixel_joints_is_within_half_a_pixel():
    g = torch.Generator().manual_seed(1)
    kp = 8 + torch.rand(500, 2, generator=g, dtype=torch.float64) * 16
    for radius in (0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0):
        back = pose.decode_heatmaps(pose.disk_heatmaps(kp, 32, 32, radius))
        error = (back - kp).abs()
        assert error.max() < 0.5, (radius, float(error.max()))
        if radius >= 3:  # big disks: the centroid of their pixel centres is close to the joint
            assert error.mean() < 0.1


def test_decoders_on_peaked_flat_and_tied_maps():
    maps = torch.zeros(3, 6, 8)
    maps[0, 4, 1] = 1.0  # one peak at x = 1, y = 4
    maps[1, 2, 3:6] = 5.0  # a plateau: x = 3..5 in row 2
    maps[2] += torch.arange(48.0).view(6, 8)  # increasing: the last pixel is the only maximum
    centre = pose.decode_heatmaps(maps)
    assert centre.tolist() == [[1.0, 4.0], [4.0, 2.0], [7.0, 5.0]]
    first = pose.decode_argmax(maps)
    assert first.tolist() == [[1.0, 4.0], [3.0, 2.0], [7.0, 5.0]]
    flat = torch.zeros(1, 5, 7)
    assert pose.decode_heatmaps(flat).tolist() == [[3.0, 2.0]]  # every pixel maximal: the image centre
    # soft-argmax of a very sharp map is its peak; of a flat map the image centre
    sharp = pose.soft_argmax(maps[:1] * 100)
    assert torch.allclose(sharp, torch.tensor([[1.0, 4.0]]), atol=1e-4)
    assert torch.allclose(pose.soft_argmax(flat), torch.tensor([[3.0, 2.0]]))


def test_decode_on_disk_of_argmax_is_r_above():
    disk = pose.disk_heatmaps(torch.tensor([[10.0, 9.0]]), 20, 20, 3.0)
    assert pose.decode_argmax(disk).tolist() == [[10.0, 6.0]]
    assert pose.decode_heatmaps(disk).tolist() == [[10.0, 9.0]]


def pck_brute(pred, gt, threshold, normalizer, visible):
    correct = total = 0
    for n in range(pred.shape[0]):
        size = float(normalizer[n]) if isinstance(normalizer, torch.Tensor) else normalizer
        for k in range(pred.shape[1]):
            if visible is None or visible[n, k]:
                total += 1
                d = math.hypot(*(pred[n, k] - gt[n, k]).tolist())
                correct += d <= threshold * size
    return correct / total


@pytest.mark.parametrize("seed", range(3))
def test_pck_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(12, 14, 2, generator=g, dtype=torch.float64) * 64
    sizes = 5 + 30 * torch.rand(12, generator=g, dtype=torch.float64)
    pred = gt + torch.randn(12, 14, 2, generator=g, dtype=torch.float64) * 4
    visible = torch.rand(12, 14, generator=g) < 0.8
    for threshold in (0.0, 0.1, 0.2, 0.5):
        for normalizer, seen in ((sizes, visible), (17.5, None), (sizes, None)):
            got = pose.pck(pred, gt, threshold, normalizer, seen)
            assert got.dim() == 0 and got.dtype == torch.float64
            assert math.isclose(float(got), pck_brute(pred, gt, threshold, normalizer, seen), abs_tol=1e-12)
    assert pose.pck(pred.float(), gt.float(), 0.2, torch.tensor(10.0), visible).dtype == torch.float32


def test_pck_curve_matches_pck_per_joint():
    g = torch.Generator().manual_seed(5)
    gt = torch.rand(30, 4, 2, generator=g) * 64
    pred = gt + torch.randn(30, 4, 2, generator=g) * 3
    sizes = 10 + 10 * torch.rand(30, generator=g)
    visible = torch.rand(30, 4, generator=g) < 0.7
    thresholds = torch.linspace(0, 0.5, 6)
    curve = pose.pck_curve(pred, gt, thresholds, sizes, visible)
    assert curve.shape == (6, 4)
    for t, threshold in enumerate(thresholds.tolist()):
        for k in range(4):
            expected = pose.pck(pred[:, k : k + 1], gt[:, k : k + 1], threshold, sizes, visible[:, k : k + 1])
            assert torch.isclose(curve[t, k], expected)
    assert (curve[1:] >= curve[:-1]).all()


def test_torso_size_is_neck_to_mid_hip():
    _, kp, _ = stick_figures(4, seed=0)
    mid_hip = (kp[:, JOINTS.index("left_hip")] + kp[:, JOINTS.index("right_hip")]) / 2
    assert torch.allclose(pose.torso_size(kp), (kp[:, JOINTS.index("neck")] - mid_hip).norm(dim=-1))
    assert pose.torso_size(kp).min() >= 0.2 * 64 * 0.999


def test_heatmap_loss_weights_positive_pixels():
    logits = torch.zeros(1, 1, 2, 2)
    targets = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    plain = pose.heatmap_loss(logits, targets)
    weighted = pose.heatmap_loss(logits, targets, pos_weight=3.0)
    assert math.isclose(float(plain), math.log(2), rel_tol=1e-6)  # every pixel costs log 2 at logit 0
    assert math.isclose(float(weighted), math.log(2) * (3 + 3) / 4, rel_tol=1e-6)


def test_networks_output_shapes_and_a_short_training_run_lowers_the_loss():
    images, kp, _ = stick_figures(16, size=32, seed=4)
    regressor = pose.CoordinateRegressor(len(JOINTS), size=32, width=4, hidden=16)
    out = regressor(images)
    assert out.shape == (16, 14, 2) and torch.allclose(out, torch.full_like(out, 15.5))  # untrained: the centre
    net = UNet(3, len(JOINTS), width=4, depth=2)
    torch.manual_seed(0)
    history = pose.train_keypoints(net, images, kp, lambda o, t: pose.heatmap_loss(o, t, 50.0),
                                   targets=lambda k: pose.disk_heatmaps(k, 32, 32, 2.0), epochs=4, lr=1e-2,
                                   batch_size=8, device="cpu", progress=False)
    assert len(history["loss"]) == 4 and history["loss"][-1] < history["loss"][0]
    assert not net.training


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: pose.disk_heatmaps(torch.zeros(3), 4, 4, 1.0), "keypoints"),
        (lambda: pose.disk_heatmaps(torch.zeros(1, 2), 0, 4, 1.0), "height"),
        (lambda: pose.disk_heatmaps(torch.zeros(1, 2), 4, 4.5, 1.0), "width"),
        (lambda: pose.disk_heatmaps(torch.zeros(1, 2), 4, 4, -1.0), "radius"),
        (lambda: pose.disk_heatmaps(torch.zeros(1, 2, dtype=torch.long), 4, 4, 1.0), "keypoints"),
        (lambda: pose.gaussian_heatmaps(torch.zeros(1, 2), 4, 4, 0.0), "sigma"),
        (lambda: pose.decode_heatmaps(torch.zeros(4, 4)), "heatmaps"),
        (lambda: pose.soft_argmax(torch.zeros(1, 4, 4), beta=0), "beta"),
        (lambda: pose.pck(torch.zeros(2, 3, 2), torch.zeros(2, 4, 2), 0.2, 1.0), "pred and gt"),
        (lambda: pose.pck(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), 0.2, torch.ones(3)), "normalizer"),
        (lambda: pose.pck(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), 0.2, 0.0), "normalizer"),
        (lambda: pose.pck(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), -0.1, 1.0), "threshold"),
        (lambda: pose.pck(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), 0.2, 1.0, torch.ones(2, 3)), "visible"),
        (lambda: pose.torso_size(torch.zeros(2, 5, 2)), "keypoints"),
        (lambda: pose.heatmap_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), pos_weight=0), "pos_weight"),
        (lambda: pose.CoordinateRegressor(size=40), "size"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_decode_predictions_reads_logits_three_ways():
    logits = torch.full((1, 2, 6, 8), -8.0)
    logits[0, 0, 2, 5] = 3.0  # one peak at (5, 2)
    logits[0, 1, 4, 1:4] = 9.0  # three pixels the network is sure about, around (2, 4)
    logits[0, 1, 4, 2] = 9.5
    assert pose.decode_predictions(logits, "argmax").tolist() == [[[5.0, 2.0], [2.0, 4.0]]]
    assert pose.decode_predictions(logits, "centre").tolist() == [[[5.0, 2.0], [2.0, 4.0]]]
    logits[0, 1, 4, 2] = 8.0  # no longer the highest: argmax takes the plateau's first pixel, centre its middle
    assert pose.decode_predictions(logits, "argmax")[0, 1].tolist() == [1.0, 4.0]
    assert pose.decode_predictions(logits, "centre")[0, 1].tolist() == [2.0, 4.0]
    assert torch.allclose(pose.decode_predictions(logits, "soft-argmax"), pose.soft_argmax(logits))
    with pytest.raises(ValueError, match="decoder"):
        pose.decode_predictions(logits, "median")


def test_drawing_helpers_and_explorer():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib import widgets

    images, kp, visible = stick_figures(2, seed=5)
    ax = widgets.draw_skeleton(images[0], kp[0], visible[0], title="t")
    from course_lib.data.figures import SKELETON

    assert len(ax.lines) == len(SKELETON) and len(ax.collections) == len(JOINTS) and ax.get_title() == "t"
    assert ax.lines[0].get_xydata().tolist() == kp[0, list(SKELETON[0])].tolist()
    logits = torch.full((len(JOINTS), 64, 64), -5.0)
    x, y = kp[0, 3].round().long().tolist()
    logits[3, y, x] = 5.0
    axes = widgets.draw_pose_heatmap(images[0], kp[0], 3, 2.0, logits, "argmax", visible[0])
    error = float((kp[0, 3] - torch.tensor([float(x), float(y)])).norm())
    assert len(axes) == 3 and f"{error:.2f} px off" in axes[2].get_title()
    assert "disk target, r = 2" in axes[1].get_title()
    assert len(widgets.draw_pose_heatmap(images[1], kp[1], 0, 3.0)) == 2  # no prediction: two panels
    with pytest.raises(ValueError, match="joint"):
        widgets.draw_pose_heatmap(images[0], kp[0], len(JOINTS), 2.0)
    plt.close("all")
    pytest.importorskip("ipywidgets")
    widgets.pose_explorer(images, kp, visible, logits[None].expand(2, -1, -1, -1))
    plt.close("all")
