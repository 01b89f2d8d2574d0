"""Bundled data and the shared training loop."""
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion

from course_lib import data, train


def test_digits_split_is_seeded_and_complete():
    x_train, y_train, x_test, y_test = data.digits(seed=3)
    assert x_train.shape[1:] == (1, 8, 8) and len(x_train) + len(x_test) == 1797
    assert 0 <= float(x_train.min()) and float(x_train.max()) <= 1
    assert set(y_train.tolist()) == set(range(10))
    again = data.digits(seed=3)
    assert torch.equal(x_test, again[2])
    assert data.digits(size=32)[0].shape[1:] == (1, 32, 32)
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits(test_fraction=1.5)


def test_photos_and_faces():
    img = data.photo("chelsea", size=(30, 40))
    assert img.shape == (3, 30, 40) and img.dtype == torch.float32
    assert data.photo("camera").shape[0] == 1 and data.photo("coffee", grey=True).shape[0] == 1
    with pytest.raises(ValueError, match="name"):
        data.photo("nonexistent")
    x, y = data.lfw_patches()
    assert x.shape == (200, 1, 25, 25) and int(y.sum()) == 100


def test_fit_learns_digits_and_records_history():
    x_train, y_train, x_test, y_test = data.digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    history = train.fit(model, (x_train, y_train), (x_test, y_test), epochs=8, lr=3e-3, device="cpu", progress=False)
    assert history.epochs == 8 and len(history.val_acc) == 8
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_acc[-1] > 0.9
    scores = train.evaluate(model, (x_test, y_test))
    assert abs(scores["accuracy"] - history.val_acc[-1]) < 1e-9
    assert "epochs" in history.summary()


def test_fit_is_seeded():
    x, y = data.digits()[:2]
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        runs.append(train.fit(model, (x, y), epochs=2, device="cpu", progress=False, seed=5).train_loss)
    assert runs[0] == runs[1]


def test_confusion_matrix_matches_sklearn():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randint(0, 4, (200,), generator=gen), torch.randint(0, 4, (200,), generator=gen)
    assert train.confusion_matrix(pred, target, 4).tolist() == sk_confusion(target, pred, labels=range(4)).tolist()


@pytest.mark.parametrize("kwargs,argument", [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"optimizer": "rmsprop"}, "optimizer"), ({"batch_size": 0}, "batch_size")])
def test_fit_rejects_bad_arguments(kwargs, argument):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=argument):
        train.fit(model, (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)), device="cpu", progress=False, **kwargs)


def test_fit_and_evaluate_count_pixels_for_per_pixel_labels():
    """A segmenter's labels are [N, H, W]: accuracy is the share of correct pixels, never above 1."""
    import torch

    from course_lib import train

    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4)
    y = (x[:, 0] > 0).long()  # a per-pixel label a 1x1 convolution can learn
    model = torch.nn.Conv2d(3, 2, 1)
    history = train.fit(model, (x, y), epochs=2, batch_size=3, progress=False, device="cpu")
    assert 0.0 <= history.train_acc[-1] <= 1.0
    scores = train.evaluate(model, (x, y))
    with torch.no_grad():
        logits = model(x)
    assert abs(scores["accuracy"] - float((logits.argmax(1) == y).float().mean())) < 1e-6
    assert abs(scores["loss"] - float(torch.nn.functional.cross_entropy(logits, y))) < 1e-5


def test_evaluate_and_predict_restore_each_modules_own_mode():
    """A frozen BatchNorm kept in eval mode while the rest trains stays in eval mode after evaluating."""
    import torch

    from course_lib import train

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x, y = torch.randn(4, 1, 5, 5), torch.tensor([0, 1, 2, 0])
    model(x)
    model.train()
    model[1].eval()
    train.evaluate(model, (x, y))
    train.predict(model, x)
    with train.evaluating(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model] == [True, False, True, True] and model.training
