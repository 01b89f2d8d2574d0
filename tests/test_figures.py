import pytest
import torch

from course_lib.data.figures import FLIP_PAIRS, JOINTS, PARTS, SIDE, SKELETON, stick_figures


@pytest.fixture(scope="module")
def drawn():
    return stick_figures(96, size=(64, 80), seed=3, parts=True)


@pytest.fixture(scope="module")
def figures(drawn):
    return drawn[:3]


def _inside(keypoints, height, width):
    rounded = torch.round(keypoints)
    return (rounded[..., 0] >= 0) & (rounded[..., 0] < width) & (rounded[..., 1] >= 0) & (rounded[..., 1] < height)


def test_format_and_ranges(figures):
    images, keypoints, visible = figures
    assert images.shape == (96, 3, 64, 80) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert keypoints.shape == (96, len(JOINTS), 2) and keypoints.dtype == torch.float32
    assert visible.shape == (96, len(JOINTS)) and visible.dtype == torch.bool
    assert len(JOINTS) == 14 and len(set(JOINTS)) == 14


def test_skeleton_and_pairs_are_consistent():
    assert all(0 <= a < len(JOINTS) and 0 <= b < len(JOINTS) and a != b for a, b in SKELETON)
    assert len(set(map(frozenset, SKELETON))) == len(SKELETON)
    # every joint is on some bone, and the bones connect all joints (a tree plus the torso's loop)
    reached, frontier = {0}, [0]
    while frontier:
        j = frontier.pop()
        for a, b in SKELETON:
            for u, v in ((a, b), (b, a)):
                if u == j and v not in reached:
                    reached.add(v)
                    frontier.append(v)
    assert reached == set(range(len(JOINTS)))
    for left, right in FLIP_PAIRS:
        assert JOINTS[left].replace("left_", "") == JOINTS[right].replace("right_", "")
        assert SIDE[left] == 1 and SIDE[right] == -1
    assert SIDE[JOINTS.index("head")] == SIDE[JOINTS.index("neck")] == 0


def test_deterministic_for_a_seed():
    a = stick_figures(5, seed=11)
    b = stick_figures(5, seed=11)
    c = stick_figures(5, seed=12)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_visibility_follows_the_image_border(figures):
    images, keypoints, visible = figures
    inside = _inside(keypoints, *images.shape[-2:])
    assert not (visible & ~inside).any(), "a joint outside the image is marked visible"
    # the generator shows both kinds of hard case, but most joints are visible
    assert (~inside).any(), "no joint outside the image in 96 figures"
    assert (inside & ~visible).any(), "no occluded joint in 96 figures"
    assert visible.float().mean() > 0.9


def test_keypoints_lie_inside_their_drawn_parts(drawn):
    images, keypoints, visible, part_map = drawn
    height, width = images.shape[-2:]
    col = torch.round(keypoints[..., 0]).long().clamp(0, width - 1)
    row = torch.round(keypoints[..., 1]).long().clamp(0, height - 1)
    under = part_map[torch.arange(len(images))[:, None], row, col]  # [N, K] part on top at each joint
    own = torch.tensor([[JOINTS[k] in joints for _, joints in PARTS] for k in range(len(JOINTS))])
    is_own = own[torch.arange(len(JOINTS)), under.clamp(min=0)] & (under >= 0)
    assert torch.equal(visible, is_own & _inside(keypoints, height, width))
    occluded = ~visible & _inside(keypoints, height, width)
    assert (under[occluded] >= 0).all(), "an occluded joint must be covered by some other part"


def test_the_figure_is_drawn_along_its_skeleton(drawn):
    # an independent check of the drawing: the middle of every limb bone is painted by some part, and
    # the pixels far from every bone and from the head are background (the torso's bones are its edges)
    images, keypoints, _, part_map = drawn
    torso_joints = {JOINTS.index(name) for name in PARTS[0][1]}
    height, width = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    for n in range(24):
        kp = keypoints[n]
        torso = float((kp[JOINTS.index("neck")] - (kp[JOINTS.index("left_hip")] + kp[JOINTS.index("right_hip")]) / 2).norm())
        nearest = torch.full((height, width), float("inf"))
        for a, b in SKELETON:
            middle = torch.round((kp[a] + kp[b]) / 2).long()
            on_image = 0 <= middle[0] < width and 0 <= middle[1] < height
            if on_image and not {a, b} <= torso_joints:
                assert part_map[n, middle[1], middle[0]] >= 0, (n, JOINTS[a], JOINTS[b])
            for t in torch.linspace(0, 1, 41):
                point = kp[a] + t * (kp[b] - kp[a])
                nearest = torch.minimum(nearest, torch.hypot(xs - point[0], ys - point[1]))
        far = nearest > 0.5 * torso + 1.5  # beyond half a limb, the torso's half-width and the head
        assert (part_map[n][far] == -1).all(), n


def test_each_part_is_painted_in_one_flat_colour(drawn):
    # Parts are flat colours plus a little pixel noise: the spread of a part's pixels is the noise's.
    images, _, _, part_map = drawn
    spreads = []
    for image, parts in zip(images[:16], part_map[:16]):
        for p in parts.unique().tolist():
            pixels = image[:, parts == p]
            if p >= 0 and pixels.shape[1] >= 10:
                spreads.append(float(pixels.std(dim=1).max()))
    assert len(spreads) > 100 and torch.tensor(spreads).median() < 0.05


def test_left_limbs_are_lighter_than_right_limbs(figures):
    images, keypoints, visible = figures
    height, width = images.shape[-2:]
    n = torch.arange(len(images))

    def colour_at(point):
        col = torch.round(point[:, 0]).long().clamp(0, width - 1)
        row = torch.round(point[:, 1]).long().clamp(0, height - 1)
        return images.permute(0, 2, 3, 1)[n, row, col].mean(-1)

    # midpoints of the forearms and shins: lighter on the left (+0.25) than on the right (-0.25)
    lighter = []
    for part in ("elbow", "knee"):
        end = {"elbow": "wrist", "knee": "ankle"}[part]
        mids = {side: (keypoints[:, JOINTS.index(f"{side}_{part}")] + keypoints[:, JOINTS.index(f"{side}_{end}")]) / 2
                for side in ("left", "right")}
        lighter.append(colour_at(mids["left"]) > colour_at(mids["right"]))
    assert torch.stack(lighter).float().mean() > 0.8


def test_figures_are_front_facing_on_average(figures):
    _, keypoints, _ = figures
    # the figure's left shoulder and hip are on the image's right (it faces the viewer)
    for part in ("shoulder", "hip"):
        left, right = keypoints[:, JOINTS.index(f"left_{part}")], keypoints[:, JOINTS.index(f"right_{part}")]
        assert (left[:, 0] > right[:, 0]).all()


def test_device_and_bad_arguments():
    images, keypoints, visible = stick_figures(3, seed=0, device="cpu")
    assert images.device.type == keypoints.device.type == visible.device.type == "cpu"
    if torch.cuda.is_available():
        on_gpu = stick_figures(3, seed=0, device="cuda")
        assert all(t.device.type == "cuda" for t in on_gpu)
        assert torch.equal(on_gpu[1].cpu(), keypoints) and torch.equal(on_gpu[2].cpu(), visible)
        assert (on_gpu[0].cpu() - images).abs().max() < 1e-4
    for kwargs, word in [({"n": 0}, "n"), ({"n": 2, "size": 16}, "size"), ({"n": 2, "seed": -1}, "seed")]:
        with pytest.raises(ValueError, match=word):
            stick_figures(**kwargs)
