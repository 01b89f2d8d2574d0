"""The synthetic identities of lecture 09: shapes and labels, one face per identity whatever else is
drawn, eye positions that match the drawing, attributes that change the right part of the face, and a
verification task that raw pixels do not solve."""
import pytest
import torch

from course_lib import faces
from course_lib.data.identities import (
    IDENTITY_PARAMETERS, FaceImages, face_images, frontal_views, identity_parameters, random_views, render_faces,
)


def test_shapes_dtypes_and_labels():
    batch = face_images(5, per_identity=3, size=32, seed=0)
    assert isinstance(batch, FaceImages) and len(batch) == 15
    assert batch.images.shape == (15, 3, 32, 32) and batch.images.dtype == torch.float32
    assert float(batch.images.min()) >= 0.0 and float(batch.images.max()) <= 1.0
    assert batch.identity.dtype == torch.int64 and batch.identity.tolist() == [i for i in range(5) for _ in range(3)]
    assert batch.smiling.dtype == torch.bool and batch.glasses.dtype == torch.bool
    assert batch.eyes.shape == (15, 2, 2) and batch.eyes.dtype == torch.float32
    assert bool((batch.eyes[:, 0, 0] < batch.eyes[:, 1, 0]).all())  # the image's left eye first
    assert face_images([3, 10], per_identity=2, size=(40, 24)).images.shape == (4, 3, 40, 24)
    part = batch[batch.identity == 2]
    assert len(part) == 3 and torch.equal(part.images, batch.images[6:9])


def test_same_call_same_images_and_new_view_seed_new_images():
    a = face_images(4, 2, seed=3, view_seed=1)
    b = face_images(4, 2, seed=3, view_seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.eyes, b.eyes) and torch.equal(a.smiling, b.smiling)
    c = face_images(4, 2, seed=3, view_seed=2)
    assert not torch.allclose(a.images, c.images)


def test_an_identity_is_the_same_face_whatever_else_is_drawn():
    many = identity_parameters(12, seed=5)
    few = identity_parameters([7, 2], seed=5)
    for name in IDENTITY_PARAMETERS:
        assert torch.equal(few[name], many[name][[7, 2]]), name
    other_seed = identity_parameters([7, 2], seed=6)
    assert not torch.equal(other_seed["face_width"], few["face_width"])
    # rendered under the same frontal view, identity 7 looks the same in both draws
    image_few, _ = render_faces({k: v[:1] for k, v in few.items()}, frontal_views(1), 32)
    image_many, _ = render_faces({k: v[7:8] for k, v in many.items()}, frontal_views(1), 32)
    assert torch.equal(image_few, image_many)


def test_thousands_of_identities_with_parameters_in_range():
    params = identity_parameters(3000, seed=0)
    assert all(len(v) == 3000 for v in params.values())
    assert float(params["face_width"].min()) >= 0.5 and float(params["face_width"].max()) <= 0.66
    assert len(torch.unique(params["eye_spacing"])) == 3000  # no two identities share a draw


def _dark_centroid(image, x, y, radius):
    """Centroid of the pixels at most halfway between the darkest and the lightest of a disk around (x, y)
    (all of them when the disk lies inside the iris)."""
    grey = image.mean(0)
    rows, cols = torch.meshgrid(torch.arange(grey.shape[0]) + 0.5, torch.arange(grey.shape[1]) + 0.5, indexing="ij")
    window = (cols - x) ** 2 + (rows - y) ** 2 <= radius**2
    values = grey[window]
    dark = window & (grey <= (values.min() + values.max()) / 2)
    return float(cols[dark].mean()), float(rows[dark].mean())


def test_eye_positions_are_the_centres_of_the_drawn_irises():
    n, size = 12, 128
    params = identity_parameters(n, seed=1)
    views = random_views(n, torch.Generator().manual_seed(0), glasses=False)
    views["noise"].zero_()
    views["side_light"].zero_()
    images, eyes = render_faces(params, views, size)
    for k in range(n):
        radius = 0.85 * float(params["eye_size"][k] * views["scale"][k]) * size / 2  # inside the white of the eye
        for e in range(2):
            x, y = eyes[k, e].tolist()
            cx, cy = _dark_centroid(images[k], x, y, radius)
            assert abs(cx - x) < 0.6 and abs(cy - y) < 0.6, (k, e, (x, y), (cx, cy))


def test_attributes_change_the_right_part_of_the_face():
    params = identity_parameters([4])
    neutral, eyes = render_faces(params, frontal_views(1), 64)
    smiling, _ = render_faces(params, frontal_views(1, smile=1.0), 64)
    glasses, _ = render_faces(params, frontal_views(1, glasses=True), 64)
    eye_row = int(eyes[0, 0, 1])
    smile_change = (smiling - neutral).abs().sum(1)[0]
    glasses_change = (glasses - neutral).abs().sum(1)[0]
    assert float(smile_change.sum()) > 5 and float(glasses_change.sum()) > 5
    # the smile changes the mouth, well below the eyes; glasses change the eye region
    assert float(smile_change[: eye_row + 3].sum()) == 0.0
    assert float(glasses_change[eye_row - 8 : eye_row + 9].sum()) > 0.9 * float(glasses_change.sum())
    forced = face_images(3, 4, smiling=True, glasses=torch.tensor([True, False] * 6))
    assert bool(forced.smiling.all()) and forced.glasses.tolist() == [True, False] * 6


def test_the_task_is_hard_for_pixels_and_easy_for_frontal_views():
    # Raw pixels barely verify: nuisances move pixels as much as identity does.
    test = face_images(torch.arange(500, 560), per_identity=4, seed=0)
    first, second, same = faces.verification_pairs(test.identity, generator=torch.Generator().manual_seed(0))
    pixels = faces.pair_distances(test.images.flatten(1), first, second)
    accuracy, _ = faces.verification_accuracy(pixels, same)
    assert 0.5 <= float(accuracy) < 0.7
    # Without nuisances, two images of one identity are identical and two identities are not.
    params = identity_parameters(20)
    images, _ = render_faces(params, frontal_views(20), 32)
    distances = faces.pairwise_distances(images.flatten(1))
    assert float(distances[~torch.eye(20, dtype=torch.bool)].min()) > 1.0


@pytest.mark.parametrize("kwargs,name", [
    ({"identities": 0}, "identities"), ({"identities": [-1, 2]}, "identities"), ({"identities": [[1, 2]]}, "identities"),
    ({"identities": 2, "per_identity": 0}, "per_identity"), ({"identities": 2, "size": 8}, "size"),
    ({"identities": 2, "seed": -1}, "seed"), ({"identities": 2, "view_seed": 1.5}, "view_seed"),
    ({"identities": 2, "smiling": torch.tensor([True])}, "smiling"), ({"identities": 2, "glasses": "yes"}, "glasses"),
])
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        face_images(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_drawn_on_the_gpu_like_on_the_cpu():
    cpu = face_images(6, 2, seed=2)
    gpu = face_images(6, 2, seed=2, device="cuda")
    assert gpu.images.device.type == "cuda" and gpu.eyes.device.type == "cuda"
    assert torch.allclose(gpu.images.cpu(), cpu.images, atol=1e-4)
    assert torch.allclose(gpu.eyes.cpu(), cpu.eyes, atol=1e-4)
