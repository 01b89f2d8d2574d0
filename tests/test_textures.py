"""course_lib.data.textures: real photo crops, deterministic, split by region, no network."""
import socket

import pytest
import torch
from torchvision.ops import roi_align

from course_lib.data import textures
from course_lib.data.textures import CLASSES, TILE, take_per_class, texture_crops, texture_sources, texture_split


@pytest.fixture(scope="module")
def crops():
    return texture_crops(n_train=7, n_test=5, size=32, seed=3)


def test_shapes_dtypes_ranges_and_labels(crops):
    x_train, y_train, x_test, y_test = crops
    assert len(CLASSES) == 10
    assert x_train.shape == (70, 3, 32, 32) and x_test.shape == (50, 3, 32, 32)
    assert x_train.dtype == x_test.dtype == torch.float32
    assert y_train.dtype == y_test.dtype == torch.int64
    assert torch.equal(y_train, torch.arange(10).repeat_interleave(7)) and torch.equal(y_test, torch.arange(10).repeat_interleave(5))
    for x in (x_train, x_test):
        assert x.min() >= 0 and x.max() <= 1
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey in three channels
    # Real photos, not constant images: every crop has some contrast.
    assert (x_train[:, 0].flatten(1).std(1) > 0.005).all()


def test_deterministic_per_seed():
    a = texture_crops(n_train=4, n_test=3, size=24, seed=5)
    b = texture_crops(n_train=4, n_test=3, size=24, seed=5)
    c = texture_crops(n_train=4, n_test=3, size=24, seed=6)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    split_a, split_c = texture_split(5), texture_split(6)
    assert all(torch.equal(split_a[name], texture_split(5)[name]) for name in CLASSES)
    assert any(not torch.equal(split_a[name], split_c[name]) for name in CLASSES)


def test_split_is_a_quarter_of_the_tiles_and_covers_the_photos():
    sources, split = texture_sources(), texture_split(0)
    assert list(sources) == list(split) == list(CLASSES)
    for name in CLASSES:
        rows, cols = split[name].shape
        height, width = sources[name].shape
        assert (rows, cols) == (height // TILE, width // TILE) and rows * cols >= 20, name
        assert int(split[name].sum()) == max(1, round(0.25 * rows * cols)), name
        assert 0 < int(split[name].sum()) < rows * cols


def _crop_tiles(n_train, n_test, seed):
    """Recompute, with the module's own box sampler, which tile each crop of texture_crops comes from."""
    split = texture_split(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    result = {}
    for name, test in split.items():
        cols = test.shape[1]
        for part, count, tiles in (("train", n_train, (~test).flatten().nonzero().flatten()),
                                   ("test", n_test, test.flatten().nonzero().flatten())):
            boxes = textures._crop_boxes(tiles, cols, count, generator)
            result[name, part] = boxes
    return split, result


def test_train_and_test_crops_come_from_disjoint_regions():
    n_train, n_test, seed = 9, 6, 2
    split, boxes = _crop_tiles(n_train, n_test, seed)
    for name in CLASSES:
        test = split[name]
        for part, want_test in (("train", False), ("test", True)):
            b = boxes[name, part]
            # every crop lies inside one tile ...
            col, row = (b[:, 0] // TILE).long(), (b[:, 1] // TILE).long()
            assert torch.all(b[:, 2] <= (col + 1) * TILE + 1e-4) and torch.all(b[:, 3] <= (row + 1) * TILE + 1e-4), name
            assert torch.all(b[:, 2] - b[:, 0] >= 0.7 * TILE - 1e-4), name
            # ... of its own set: no pixel of a test crop is in a training crop
            assert torch.all(test[row, col] == want_test), (name, part)
    # And those boxes are the crops texture_crops returns (the sampler above is the real one).
    x_train, _, x_test, _ = texture_crops(n_train=n_train, n_test=n_test, size=16, seed=seed)
    source = texture_sources()["stars"][None, None]
    k = CLASSES.index("stars")
    b = boxes["stars", "test"]
    again = roi_align(source, torch.cat([torch.zeros(len(b), 1), b], 1), (16, 16), sampling_ratio=-1, aligned=True)
    assert torch.allclose(again[:, 0].clamp(0, 1), x_test[k * n_test : (k + 1) * n_test, 0], atol=1e-6)


def test_first_crops_use_different_tiles():
    split, boxes = _crop_tiles(12, 3, 0)
    for name in CLASSES:
        b = boxes[name, "train"]
        tiles = (b[:, 1] // TILE).long() * split[name].shape[1] + (b[:, 0] // TILE).long()
        assert len(set(tiles.tolist())) == 12, name


def test_loads_without_network(monkeypatch):
    textures._prepared.cache_clear()

    def refuse(*args, **kwargs):
        raise AssertionError("textures tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    x_train, _, _, _ = texture_crops(n_train=2, n_test=1, size=16)
    assert x_train.shape == (20, 3, 16, 16)


def test_take_per_class_is_balanced_nested_and_seeded():
    labels = torch.arange(4).repeat_interleave(10)[torch.randperm(40, generator=torch.Generator().manual_seed(0))]
    picks = take_per_class(labels, 3, seed=1)
    assert picks.dtype == torch.int64 and len(picks) == 12 and len(set(picks.tolist())) == 12
    assert torch.equal(labels[picks], torch.arange(4).repeat_interleave(3))
    assert torch.equal(picks, take_per_class(labels, 3, seed=1))
    assert not torch.equal(picks, take_per_class(labels, 3, seed=2))
    more = take_per_class(labels, 6, seed=1)  # more labels with the same seed: a superset
    assert set(picks.tolist()) <= set(more.tolist())


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="n_train"):
        texture_crops(n_train=0)
    with pytest.raises(ValueError, match="size"):
        texture_crops(size=2.5)
    with pytest.raises(ValueError, match="seed"):
        texture_split(-1)
    with pytest.raises(ValueError, match="per_class must be at most 2"):
        take_per_class(torch.tensor([0, 0, 1, 1]), 3)
    with pytest.raises(ValueError, match="labels"):
        take_per_class(torch.tensor([0.0, 1.0]), 1)
