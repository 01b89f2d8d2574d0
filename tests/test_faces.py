"""course_lib.faces against independent oracles: torch.cdist, F.triplet_margin_loss, brute-force loops
over anchors and thresholds, and geometry for the alignment; bad arguments are named."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import faces
from course_lib.data.identities import face_images


def _cdist(x, y):
    return torch.cdist(x.double(), y.double(), compute_mode="donot_use_mm_for_euclid_dist")


# --- distances and losses -------------------------------------------------------------------------

@pytest.mark.parametrize("n,m,d,dtype", [(1, 1, 1, torch.float64), (7, 5, 3, torch.float64), (40, 33, 16, torch.float32),
                                         (0, 4, 2, torch.float32)])
def test_pairwise_distances_equal_cdist(n, m, d, dtype):
    g = torch.Generator().manual_seed(n + m)
    x, y = torch.randn(n, d, generator=g, dtype=dtype), torch.randn(m, d, generator=g, dtype=dtype)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-9}
    got = faces.pairwise_distances(x, y)
    assert got.dtype == dtype and got.shape == (n, m)
    torch.testing.assert_close(got.double(), _cdist(x, y), **tol)
    torch.testing.assert_close(faces.pairwise_distances(x, y, squared=True).double(), _cdist(x, y) ** 2, **tol)


def test_pairwise_distances_of_a_set_with_itself():
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    d = faces.pairwise_distances(x)
    assert bool((d.diagonal() == 0).all())
    torch.testing.assert_close(d, d.T)
    torch.testing.assert_close(d.double(), _cdist(x.detach(), x.detach()), rtol=1e-4, atol=1e-4)
    d.sum().backward()  # the zero diagonal must not turn the gradient into nan (sqrt'(0) = inf)
    assert bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("margin", [0.0, 0.3, 1.0, 4.0])
def test_triplet_loss_equals_torch_and_a_loop(margin):
    g = torch.Generator().manual_seed(int(margin * 10))
    a, p, n = torch.randn(3, 50, 6, generator=g, dtype=torch.float64).unbind(0)
    got = faces.triplet_loss(a, p, n, margin)
    if margin > 0:  # torch refuses a margin of 0
        torch.testing.assert_close(got, F.triplet_margin_loss(a, p, n, margin=margin, eps=0.0))
        # torch's default adds eps = 1e-6 to every difference: equal up to that
        torch.testing.assert_close(got, F.triplet_margin_loss(a, p, n, margin=margin), rtol=0, atol=1e-5)
    for squared, power in ((False, 0.5), (True, 1.0)):
        brute = sum(max(((a[i] - p[i]) ** 2).sum().item() ** power - ((a[i] - n[i]) ** 2).sum().item() ** power + margin, 0.0)
                    for i in range(50)) / 50
        assert faces.triplet_loss(a, p, n, margin, squared=squared).item() == pytest.approx(brute, rel=1e-12)


def _brute_batch_hard(embeddings, labels, margin):
    hinges = []
    for i in range(len(labels)):
        positives = [(embeddings[i] - embeddings[j]).norm().item() for j in range(len(labels)) if labels[j] == labels[i] and j != i]
        negatives = [(embeddings[i] - embeddings[j]).norm().item() for j in range(len(labels)) if labels[j] != labels[i]]
        if positives:
            hinges.append(max(max(positives) - min(negatives, default=math.inf) + margin, 0.0))
    return sum(hinges) / len(hinges) if hinges else 0.0


@pytest.mark.parametrize("seed", range(5))
def test_batch_hard_loss_equals_a_loop_over_anchors(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (24,), generator=g)
    embeddings = torch.randn(24, 5, generator=g, dtype=torch.float64) / 2
    margin = [0.1, 0.5, 1.0, 2.0, 0.0][seed]
    got = faces.batch_hard_triplet_loss(embeddings, labels, margin)
    assert got.item() == pytest.approx(_brute_batch_hard(embeddings, labels, margin), rel=1e-9, abs=1e-12)
    # the same as the triplet loss on the mined triplets
    a, p, n = faces.batch_hard_triplets(embeddings, labels)
    if (n >= 0).all():
        torch.testing.assert_close(got, faces.triplet_loss(embeddings[a], embeddings[p], embeddings[n], margin))


def test_batch_hard_triplets_are_the_hardest():
    embeddings = torch.tensor([[0.0], [1.0], [1.5], [4.0], [4.5]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    anchors, positives, negatives = faces.batch_hard_triplets(embeddings, labels)
    assert anchors.tolist() == [0, 1, 2, 3]  # the person seen once is no anchor
    assert positives.tolist() == [1, 0, 3, 2]
    assert negatives.tolist() == [2, 2, 1, 4]
    assert faces.batch_hard_triplet_loss(embeddings, labels, 1.0).item() == pytest.approx(2.0)


def test_batch_hard_edge_cases_keep_a_graph():
    x = torch.randn(4, 3, requires_grad=True)
    loss = faces.batch_hard_triplet_loss(x, torch.arange(4), 1.0)  # nobody has a positive
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    one_person = faces.batch_hard_triplet_loss(torch.randn(3, 2), torch.zeros(3, dtype=torch.int64), 1.0)
    assert one_person.item() == 0.0  # no negative: infinitely far


def test_random_triplets_are_valid_and_seeded():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    a, p, n = faces.random_triplets(labels, torch.Generator().manual_seed(0))
    assert a.tolist() == [0, 1, 2, 3, 4, 6, 7]
    assert bool((labels[p] == labels[a]).all() and (p != a).all() and (labels[n] != labels[a]).all())
    again = faces.random_triplets(labels, torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip((a, p, n), again))
    draws = torch.stack([faces.random_triplets(labels, torch.Generator().manual_seed(s))[2] for s in range(200)])
    assert set(draws[:, 0].tolist()) == {2, 3, 4, 5, 6, 7}  # every negative of anchor 0 gets drawn


# --- verification ----------------------------------------------------------------------------------

def _brute_verification(distances, same):
    best = None
    for t in sorted(set(distances.tolist())):
        correct = int(((distances <= t) == same).sum())
        if best is None or correct > best[0]:
            best = (correct, t)
    return best[0] / len(distances), best[1]


@pytest.mark.parametrize("seed", range(6))
def test_verification_accuracy_equals_a_search_over_thresholds(seed):
    g = torch.Generator().manual_seed(seed)
    count = [1, 5, 30, 100, 300, 64][seed]
    same = torch.rand(count, generator=g) < 0.5
    distances = torch.rand(count, generator=g, dtype=torch.float64) + 0.5 * (~same)
    if seed % 2:
        distances = torch.round(distances * 8) / 8  # ties
    accuracy, threshold = faces.verification_accuracy(distances, same)
    expected = _brute_verification(distances, same)
    assert accuracy.item() == pytest.approx(expected[0]) and threshold.item() == expected[1]
    assert accuracy.dtype == threshold.dtype == torch.float64


def test_verification_worked_example_takes_the_smallest_threshold():
    distances = torch.tensor([0.2, 0.5, 0.7, 0.9, 1.1, 1.4])
    same = torch.tensor([True, True, False, True, False, False])
    accuracy, threshold = faces.verification_accuracy(distances, same)
    assert accuracy.item() == pytest.approx(5 / 6) and threshold.item() == pytest.approx(0.5)


def test_roc_curve_and_tar_at_far():
    g = torch.Generator().manual_seed(3)
    same = torch.rand(200, generator=g) < 0.4
    distances = torch.round((torch.rand(200, generator=g) + 0.4 * (~same)) * 20) / 20
    far, tar, thresholds = faces.roc_curve(distances, same)
    assert far[0] == 0 and tar[0] == 0 and far[-1] == 1 and tar[-1] == 1
    assert bool((far.diff() >= 0).all() and (tar.diff() >= 0).all() and (thresholds.diff() > 0).all())
    for k in range(1, len(thresholds)):  # each point is the rates at its threshold
        accepted = distances <= thresholds[k]
        assert tar[k].item() == pytest.approx((accepted & same).sum().item() / same.sum().item())
        assert far[k].item() == pytest.approx((accepted & ~same).sum().item() / (~same).sum().item())
    for limit in (0.0, 0.01, 0.1, 0.5):
        best = max(((distances <= t) & same).sum().item() / same.sum().item()
                   for t in [-1.0] + distances.tolist() if ((distances <= t) & ~same).sum().item() / (~same).sum().item() <= limit)
        assert faces.tar_at_far(distances, same, limit).item() == pytest.approx(best)


def test_verification_pairs():
    identity = torch.tensor([5, 5, 5, 2, 2, 9, 9, 9, 9])
    first, second, same = faces.verification_pairs(identity, generator=torch.Generator().manual_seed(0))
    assert int(same.sum()) == 3 + 1 + 6 and int((~same).sum()) == 10
    assert torch.equal(identity[first] == identity[second], same) and bool((first != second).all())
    pairs = {(int(a), int(b)) for a, b, s in zip(first, second, same) if s}
    assert len(pairs) == 10  # every same-person pair exactly once
    first, _, same = faces.verification_pairs(identity, 3, torch.Generator().manual_seed(0))
    assert int((~same).sum()) == 30


# --- alignment -------------------------------------------------------------------------------------

def _blob_image(points, size, sigma=1.2):
    rows, cols = torch.meshgrid(torch.arange(size[0]) + 0.5, torch.arange(size[1]) + 0.5, indexing="ij")
    image = torch.zeros(size, dtype=torch.float64)
    for x, y in points:
        image += torch.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))
    return image, rows, cols


def _centroid(image, rows, cols, x, y, radius=4.0):
    near = ((cols - x) ** 2 + (rows - y) ** 2 <= radius**2).double() * image
    return float((near * cols).sum() / near.sum()), float((near * rows).sum() / near.sum())


@pytest.mark.parametrize("eyes,size,out", [
    ([[20.0, 30.0], [40.0, 26.0]], (64, 64), None),
    ([[30.5, 20.25], [22.0, 41.0]], (64, 48), (40, 56)),  # eyes the wrong way round: a half turn
    ([[16.0, 16.0], [24.0, 16.0]], (32, 32), (64, 64)),
])
def test_align_faces_puts_the_eyes_where_asked(eyes, size, out):
    image, _, _ = _blob_image(eyes, size)
    left, right = (0.3, 0.45), (0.7, 0.4)
    aligned = faces.align_faces(image[None, None], torch.tensor([eyes], dtype=torch.float64), left, right, size=out)[0, 0]
    height, width = aligned.shape
    assert (height, width) == (out or size)
    _, rows, cols = _blob_image([], (height, width))
    for (fx, fy) in (left, right):
        cx, cy = _centroid(aligned, rows, cols, fx * width, fy * height)
        assert abs(cx - fx * width) < 0.25 and abs(cy - fy * height) < 0.25


def test_eye_alignment_maps_the_eyes_onto_the_targets():
    eyes = torch.tensor([[[10.0, 12.0], [21.0, 15.0]], [[5.5, 30.0], [9.0, 20.0]]], dtype=torch.float64)
    theta = faces.eye_alignment(eyes, (40, 36), (24, 32), (0.25, 0.5), (0.75, 0.5))
    targets = torch.tensor([[0.25 * 32, 0.5 * 24], [0.75 * 32, 0.5 * 24]], dtype=torch.float64)
    q_out = targets / torch.tensor([32 / 2, 24 / 2], dtype=torch.float64) - 1  # normalised output coordinates
    q_in = q_out @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]
    pixels_in = (q_in + 1) * torch.tensor([36 / 2, 40 / 2], dtype=torch.float64)
    torch.testing.assert_close(pixels_in, eyes)


def test_aligned_generator_faces_have_their_eyes_at_the_targets():
    batch = face_images(4, 3, size=32, seed=0)
    aligned = faces.align_faces(batch.images, batch.eyes)
    assert aligned.shape == batch.images.shape and aligned.dtype == torch.float32
    # eyes already at the targets: alignment is the identity map
    at_targets = torch.tensor([[[0.375 * 32, 0.42 * 32], [0.625 * 32, 0.42 * 32]]]).expand(12, 2, 2)
    torch.testing.assert_close(faces.align_faces(batch.images, at_targets), batch.images, atol=1e-5, rtol=0)


# --- the embedding network and its training -----------------------------------------------------

def test_embedding_net_shapes_and_unit_length():
    net = faces.EmbeddingNet(embedding_dim=12, width=4)
    x = torch.rand(5, 3, 32, 32)
    e = faces.embed(net, x, batch_size=2)
    assert e.shape == (5, 12) and torch.allclose(e.norm(dim=1), torch.ones(5))
    classifier = faces.EmbeddingNet(embedding_dim=12, num_classes=7, width=4, image_size=48)
    assert classifier(torch.rand(2, 3, 48, 48)).shape == (2, 7)
    assert faces.embed(classifier, torch.rand(2, 3, 48, 48)).shape == (2, 12)


def test_identity_batches_hold_k_distinct_images_of_p_people():
    identity = torch.tensor([0] * 5 + [1] * 3 + [2] * 6 + [3] * 2)
    stream = faces.identity_batches(identity, 3, 3, torch.Generator().manual_seed(0))
    for _ in range(20):
        index = next(stream)
        groups = identity[index].view(3, 3)
        assert bool((groups == groups[:, :1]).all()) and len(set(groups[:, 0].tolist())) == 3
        assert 3 not in groups[:, 0].tolist()  # only two images: cannot give three
        assert len(set(index.tolist())) == 9


@pytest.mark.parametrize("mining", ["random", "batch_hard"])
def test_train_embedding_records_every_step(mining):
    torch.manual_seed(0)
    batch = face_images(8, 4, size=32)
    net = faces.EmbeddingNet(embedding_dim=8, width=4)
    history = faces.train_embedding(net, batch.images, batch.identity, mining=mining, steps=3, identities_per_batch=4,
                                    images_per_identity=2, device="cpu", progress=False)
    assert len(history["loss"]) == len(history["active"]) == 3
    assert all(0.0 <= a <= 1.0 for a in history["active"]) and all(v >= 0 for v in history["loss"])


# --- bad arguments ---------------------------------------------------------------------------------

@pytest.mark.parametrize("call,name", [
    (lambda: faces.pairwise_distances(torch.ones(3, 2, dtype=torch.int64)), "x"),
    (lambda: faces.pairwise_distances(torch.ones(3)), "x"),
    (lambda: faces.pairwise_distances(torch.ones(3, 2), torch.ones(3, 4)), "x and y"),
    (lambda: faces.pairwise_distances(torch.ones(3, 2), squared=1), "squared"),
    (lambda: faces.triplet_loss(torch.ones(3, 2), torch.ones(2, 2), torch.ones(3, 2)), "positive"),
    (lambda: faces.triplet_loss(torch.ones(3, 2), torch.ones(3, 2), torch.ones(3, 2), margin=-1.0), "margin"),
    (lambda: faces.batch_hard_triplet_loss(torch.ones(3, 2), torch.ones(3), 1.0), "labels"),
    (lambda: faces.batch_hard_triplet_loss(torch.ones(3, 2), torch.ones(4, dtype=torch.int64), 1.0), "labels"),
    (lambda: faces.verification_accuracy(torch.ones(3), torch.ones(3)), "same"),
    (lambda: faces.verification_accuracy(torch.ones(3), torch.ones(2, dtype=torch.bool)), "distances and same"),
    (lambda: faces.verification_accuracy(torch.ones(0), torch.ones(0, dtype=torch.bool)), "distances and same"),
    (lambda: faces.roc_curve(torch.ones(3), torch.ones(3, dtype=torch.bool)), "same"),
    (lambda: faces.tar_at_far(torch.ones(3), torch.tensor([True, False, True]), far=2.0), "far"),
    (lambda: faces.verification_pairs(torch.arange(5)), "identity"),
    (lambda: faces.align_faces(torch.ones(2, 3, 8, 8), torch.ones(2, 3, 2)), "eyes"),
    (lambda: faces.align_faces(torch.ones(2, 3, 8, 8), torch.ones(1, 2, 2)), "eyes"),
    (lambda: faces.align_faces(torch.ones(1, 3, 8, 8), torch.ones(1, 2, 2), left=(0.5, 0.5), right=(0.5, 0.5)), "left and right"),
    (lambda: faces.EmbeddingNet(image_size=30), "image_size"),
    (lambda: faces.EmbeddingNet(normalize=1), "normalize"),
    (lambda: faces.train_embedding(faces.EmbeddingNet(), torch.ones(4, 3, 32, 32), torch.arange(4), mining="hard"), "mining"),
])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# --- the explorer and its plain-function twin --------------------------------------------------------

def test_draw_face_neighbours_returns_the_nearest_gallery_faces():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib import widgets
    from course_lib.data.identities import frontal_views, identity_parameters, render_faces

    torch.manual_seed(0)
    net = faces.EmbeddingNet(embedding_dim=8, width=4)
    gallery = face_images(torch.arange(10, 16), 3, size=32)
    axes, neighbours, distances = widgets.draw_face_neighbours(net, 12, gallery, k=4, smile=0.5, glasses=True, turn=0.2)
    assert len(axes) == 5 and neighbours.shape == (4,) and bool((distances.diff() >= 0).all())
    # the same search by hand: the drawn query against every aligned gallery face
    query, eyes = render_faces(identity_parameters([12]), frontal_views(1, smile=0.5, glasses=True, turn=0.2), 32)
    q = faces.embed(net, faces.align_faces(query, eyes))
    g = faces.embed(net, faces.align_faces(gallery.images, gallery.eyes))
    expected = (g - q).norm(dim=1).sort()
    torch.testing.assert_close(distances, expected.values[:4], rtol=1e-4, atol=1e-5)
    assert axes[0].get_title() == "query: person 12"
    assert axes[1].title.get_color() in ("tab:green", "tab:red")
    plt.close("all")
    for bad, name in (({"k": 0}, "k"), ({"k": 40}, "k"), ({"smile": 2.0}, "smile"), ({"turn": 1.5}, "turn")):
        with pytest.raises(ValueError, match=name):
            widgets.draw_face_neighbours(net, 12, gallery, **bad)


def test_face_explorer_offers_the_people_and_attributes():
    import matplotlib

    matplotlib.use("Agg")
    from course_lib import widgets

    net = faces.EmbeddingNet(embedding_dim=8, width=4)
    explorer = widgets.face_explorer(net, face_images(torch.arange(20, 24), 2, size=32), identities=[20, 21, 22])
    controls = {child.description: child for child in explorer.widget.children if hasattr(child, "description")}
    assert list(controls["person"].options) == [20, 21, 22]
    assert {"smile", "glasses", "head turn", "tilt (rad)"} <= set(controls)
