"""Exercises of lecture 05 (transfer learning): freezing by name, a new head, BatchNorm in a frozen
network, and one training step of a linear probe.

A case cannot carry a model (cases are plain data that travel into a student's kernel), so the model
exercises carry a *spec*, a dict such as ``{"arch": "resnet18", "classes": 1000, "device": "meta",
"dtype": "float32", "frozen": ()}``, and :func:`_build` makes the model from it, the same way for the
student's run and for the oracle. Big torchvision models live on the ``meta`` device (shapes, no
memory, no initialisation time): freezing and modes need no numbers, and a new head that is not created
on the model's device shows up in the head's report. Small models (and one MobileNetV2) live on the CPU,
where the values of a new head and a forward pass are checked too.

The oracles are independent of the code they check: torchvision's and torch's own models, the
qualified names of ``named_parameters()`` with ``str.startswith``, a table of where each architecture
keeps its output layer (written out by hand below), and autograd with ``torch.optim.SGD``.
"""
from __future__ import annotations

import copy
import functools
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .core import Case, Exercise, Mistake, compare_tensor, rand_dtype, rand_int, register

LECTURE = "05_transfer_learning"
FREEZE_SECTION = "(lecture 05, section 'Freezing by name')"
HEAD_SECTION = "(lecture 05, section 'A new head')"
BN_SECTION = "(lecture 05, section 'BatchNorm in a frozen network')"
PROBE_SECTION = "(lecture 05, section 'A linear probe, one step at a time')"
LIBRARY = "course_lib.transfer"  # what the model exercises rebuild


# --- the models the specs describe ---------------------------------------------------------------

def _bn_head(classes: int) -> nn.Module:
    """A tiny CNN with BatchNorm in both its convolutional and its fully connected part, and dropout."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1), bn=nn.BatchNorm2d(4), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2),
        flatten=nn.Flatten(), fc1=nn.Linear(16, 8), bn1=nn.BatchNorm1d(8), relu1=nn.ReLU(), drop=nn.Dropout(0.5),
        fc2=nn.Linear(8, classes),
    ))


def _no_bias(classes: int) -> nn.Module:
    """Two linear layers; the output layer has no bias."""
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), hidden=nn.Linear(3 * 8 * 8, 6), relu=nn.ReLU(),
                                     out=nn.Linear(6, classes, bias=False)))


def _course(builder: str, *args, **kwargs):
    from .. import architectures

    return getattr(architectures, builder)(*args, **kwargs)


# arch: (builder(classes), input shape of one image, where its output layer lives)
ARCHS = {
    "mobilenet_v2": (lambda k: torchvision.models.mobilenet_v2(num_classes=k), (3, 32, 32), "classifier.1"),
    "resnet18": (lambda k: torchvision.models.resnet18(num_classes=k), (3, 32, 32), "fc"),
    "alexnet": (lambda k: torchvision.models.alexnet(num_classes=k), (3, 64, 64), "classifier.6"),
    "vgg11": (lambda k: torchvision.models.vgg11(num_classes=k), (3, 32, 32), "classifier.6"),
    "course lenet5": (lambda k: _course("lenet5", k), (1, 32, 32), "fc3"),
    "course small_resnet": (lambda k: _course("small_resnet", 2, width=8, num_classes=k, in_channels=3), (3, 8, 8), "fc"),
    "course googlenet": (lambda k: _course("googlenet", k, aux_logits=True), (3, 32, 32), "fc"),
    "bn head": (_bn_head, (3, 8, 8), "fc2"),
    "no-bias head": (_no_bias, (3, 8, 8), "out"),
}
BIG = ("mobilenet_v2", "resnet18", "alexnet", "vgg11", "course googlenet")  # built on the meta device in random cases
RANDOM_ARCHS = ("mobilenet_v2", "course lenet5", "course small_resnet", "bn head", "no-bias head")


@functools.lru_cache(maxsize=16)
def _template(arch: str, classes: int, seed: int, device: str, dtype: str) -> nn.Module:
    torch.manual_seed(seed)
    with torch.device(device):
        model = ARCHS[arch][0](classes)
    return model.to(getattr(torch, dtype))


def _build(spec: dict, device: str | None = None) -> nn.Module:
    """The model ``spec`` describes: its architecture for ``spec["classes"]`` outputs, in ``spec["dtype"]``
    on ``spec["device"]``, weights from ``spec["seed"]``, parameters frozen unless their name starts with
    one of ``spec["trainable"]`` (all trainable when the spec has no ``"trainable"``), in training mode
    unless ``spec["mode"] == "eval"``. A copy of a cached template: building a torchvision model takes
    longer than copying one, and every case is built for the student's run and for the oracle."""
    model = copy.deepcopy(_template(spec["arch"], spec.get("classes", 10), spec.get("seed", 0),
                                    device or spec.get("device", "cpu"), spec.get("dtype", "float32")))
    if "trainable" in spec:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(tuple(spec["trainable"])))
    return model.train(spec.get("mode", "train") != "eval")


def _describe(spec: dict) -> str:
    parts = [spec["arch"] + (f" ({spec['classes']} classes)" if "classes" in spec else "")]
    if spec.get("device", "cpu") != "cpu":
        parts.append(f"on {spec['device']}")
    if spec.get("dtype", "float32") != "float32":
        parts.append(spec["dtype"])
    if "trainable" in spec:
        parts.append(f"arrives with only {list(spec['trainable'])} trainable" if spec["trainable"] else "arrives all frozen")
    if spec.get("mode") == "eval":
        parts.append("in eval mode (as pretrained() returns it)")
    return ", ".join(parts)


def _random_spec(gen, archs=RANDOM_ARCHS) -> dict:
    arch = archs[rand_int(gen, 0, len(archs) - 1)]
    spec = {"arch": arch, "classes": rand_int(gen, 2, 12), "seed": rand_int(gen, 0, 9999)}
    if arch in BIG:
        spec["device"] = "meta"
    elif rand_int(gen, 0, 1):
        spec["dtype"] = "float64"
    return spec


def _top_names(spec: dict) -> list[str]:
    model = _template(spec["arch"], spec.get("classes", 10), spec.get("seed", 0), "meta", "float32")
    return [name for name, module in model.named_children() if any(True for _ in module.parameters())]


def _model_argument(case: Case) -> nn.Module:
    """What the student's function receives as ``model`` (on the meta device: for the contract's form)."""
    return _build(case.args[0], device="meta")


# --- freeze -------------------------------------------------------------------------------------

def _freeze_cases(gen, hidden):
    worked = [
        ({"arch": "mobilenet_v2", "classes": 1000, "device": "meta"}, (), "nothing trainable: a fixed feature extractor"),
        ({"arch": "mobilenet_v2", "classes": 1000, "device": "meta"}, ("classifier",), "only the classifier (the lecture's linear probe)"),
        ({"arch": "mobilenet_v2", "classes": 1000, "device": "meta"}, ("features.14", "features.15", "features.16", "features.17", "features.18", "classifier"),
         "the last stage and the classifier (the lecture's 'higher layers')"),
        ({"arch": "resnet18", "classes": 1000, "device": "meta", "trainable": ("layer4",)}, ("layer4", "fc"),
         "layer4 and fc of a model that arrives with only layer4 trainable: fc must be unfrozen"),
        ({"arch": "resnet18", "classes": 1000, "device": "meta"}, ("conv1", "fc"),
         "'conv1' is a prefix of the stem only, though every block has a 'conv1' inside its name"),
        ({"arch": "alexnet", "classes": 1000, "device": "meta"}, ["classifier.6"], "only the last of AlexNet's three Linear layers (a list)"),
        ({"arch": "bn head", "classes": 3, "trainable": ("fc2",)}, ["fc1", "bn1"], "a model whose fc2 was trainable before"),
    ]
    cases = [Case((spec, trainable), label=f"{_describe(spec)}; trainable={trainable!r}: {why}") for spec, trainable, why in worked]
    while len(cases) < 11:
        spec = _random_spec(gen)
        names = _top_names(spec)
        chosen = [names[i] for i in range(len(names)) if rand_int(gen, 0, 2) == 0]
        if rand_int(gen, 0, 1):
            spec["trainable"] = tuple(names[i] for i in range(len(names)) if rand_int(gen, 0, 1))
        trainable = tuple(chosen) if rand_int(gen, 0, 1) else list(chosen)
        cases.append(Case((spec, trainable), label=f"{_describe(spec)}; trainable={trainable!r}"))
    return cases


def _freeze_summary(model: nn.Module) -> tuple[list, int]:
    names = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    return names, sum(p.numel() for p in model.parameters() if p.requires_grad)


def _freeze_run(fn, case):
    spec, trainable = case.args
    model = _build(spec)
    result = fn(model, type(trainable)(trainable))
    names, count = _freeze_summary(model)
    return {"returns the model": result is model, "trainable count": count, "trainable names": names}


def _freeze_oracle(case):
    spec, trainable = case.args
    model = _build(spec)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(name.startswith(prefix) for prefix in trainable))
    names, count = _freeze_summary(model)
    return {"returns the model": True, "trainable count": count, "trainable names": names}


def _compare_names(what_true: str, what_false: str):
    def compare(expected: list, got: list) -> str | None:
        missing = [n for n in expected if n not in set(got)]
        extra = [n for n in got if n not in set(expected)]
        if not missing and not extra:
            return None
        parts = []
        if missing:
            parts.append(f"expected {len(missing)} more to be {what_true} (first: {missing[0]!r})")
        if extra:
            parts.append(f"expected {len(extra)} to be {what_false} (first: {extra[0]!r})")
        return "; ".join(parts)

    return compare


def _compare_report(**parts):
    """Compare two run reports (dicts) key by key; ``parts`` gives a compare for each key."""

    def compare(expected: dict, got: dict) -> str | None:
        for key, check in parts.items():
            reason = check(expected[key], got[key])
            if reason is not None:
                return f"{key}: {reason}"
        return None

    return compare


def _same(expected, got) -> str | None:
    return None if expected == got else f"expected {expected!r}, got {got!r}"


def _returned(expected: bool, got: bool) -> str | None:
    return None if got == expected else "expected the model you were given back (change it in place, then return it)"


def _count(expected: int, got: int) -> str | None:
    return None if expected == got else f"expected {expected:,} trainable scalars, got {got:,}"


_FREEZE_COMPARE = _compare_report(**{
    "returns the model": _returned,
    "trainable count": _count,
    "trainable names": _compare_names("trainable", "frozen"),
})


def _freeze_mistake(decide, unfreeze=True, returns=True):
    def freeze(model, trainable=()):
        for name, parameter in model.named_parameters():
            if decide(name, tuple(trainable)):
                if unfreeze:
                    parameter.requires_grad = True
            else:
                parameter.requires_grad = False
        return model if returns else None

    return freeze


def _freeze_by_type(model, trainable=()):
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d)):
            module.requires_grad_(False)
        elif isinstance(module, nn.Linear):
            module.requires_grad_(True)
    return model


register(Exercise(
    "freeze", LECTURE, 2, _freeze_cases, _freeze_oracle, _FREEZE_COMPARE, run=_freeze_run,
    params=("model", "trainable"), forms={"model": ("model",), "trainable": ("empty list", "list of str")},
    arguments=lambda case: {"model": _model_argument(case), "trainable": case.args[1]},
    forbidden=(LIBRARY,),
    mistakes=(
        Mistake("by module type", _freeze_by_type,
                "You freeze layers by their type (convolutions and BatchNorm frozen, Linear trainable) instead of by the "
                f"names in trainable: the prefixes decide, whatever the layer {FREEZE_SECTION}."),
        Mistake("substring", _freeze_mistake(lambda name, prefixes: any(p in name for p in prefixes)),
                "You test whether a prefix occurs anywhere in the name ('conv1' in 'layer1.0.conv1.weight'); it must "
                f"be where the name starts: name.startswith(prefix) {FREEZE_SECTION}."),
        Mistake("never unfreezes", _freeze_mistake(lambda name, prefixes: name.startswith(prefixes), unfreeze=False),
                "You only ever set requires_grad = False, so parameters that arrive frozen stay frozen even when "
                f"trainable names them: set requires_grad to True for them {FREEZE_SECTION}."),
        Mistake("exact names", _freeze_mistake(lambda name, prefixes: name in prefixes),
                "You compare whole parameter names with trainable ('classifier' == 'classifier.1.weight' is never true); "
                f"the entries are prefixes: name.startswith(prefix) {FREEZE_SECTION}."),
        Mistake("first component", _freeze_mistake(lambda name, prefixes: name.split(".")[0] in prefixes),
                "You compare only the first part of each name ('features') with trainable, so a prefix such as "
                f"'features.17' matches nothing: test name.startswith(prefix) {FREEZE_SECTION}."),
        Mistake("inverted", _freeze_mistake(lambda name, prefixes: not name.startswith(prefixes)),
                f"You freeze exactly the parameters trainable names and train all the others: the other way round {FREEZE_SECTION}."),
        Mistake("returns None", _freeze_mistake(lambda name, prefixes: name.startswith(prefixes), returns=False),
                f"Your freezing is right but the function returns None: end with return model {FREEZE_SECTION}."),
    ),
))


# --- replace_head --------------------------------------------------------------------------------

def _replace_cases(gen, hidden):
    worked = [
        ({"arch": "mobilenet_v2", "classes": 1000, "trainable": ()}, 10, "the lecture's: a frozen MobileNetV2 gets a head for the 10 surfaces"),
        ({"arch": "resnet18", "classes": 1000, "device": "meta", "trainable": ()}, 37, "a frozen ResNet-18, 37 classes"),
        ({"arch": "alexnet", "classes": 1000, "device": "meta"}, 2, "AlexNet has three Linear layers: replace the last"),
        ({"arch": "vgg11", "classes": 1000, "device": "meta", "trainable": ("features",)}, 5, "VGG-11, classifier frozen"),
        ({"arch": "course lenet5", "classes": 10, "dtype": "float64", "trainable": ()}, 4, "the course's LeNet-5 in float64, frozen"),
        ({"arch": "course googlenet", "classes": 1000, "device": "meta"}, 3, "the course's GoogLeNet with auxiliary heads (their Linears come before fc)"),
        ({"arch": "no-bias head", "classes": 4}, 6, "an output layer without bias: the new one has none either"),
        ({"arch": "bn head", "classes": 3, "trainable": ("conv", "bn")}, 3, "the same number of classes: still a fresh layer"),
    ]
    cases = [Case((spec, k), label=f"{_describe(spec)}; num_classes={k}: {why}") for spec, k, why in worked]
    while len(cases) < 11:
        spec = _random_spec(gen, RANDOM_ARCHS[1:])  # small models: a CPU MobileNetV2 is the first case already
        if rand_int(gen, 0, 1):
            spec["trainable"] = ()
        k = rand_int(gen, 1, 20)
        cases.append(Case((spec, k), label=f"{_describe(spec)}; num_classes={k}"))
    return cases


def _head_report(model: nn.Module, spec: dict, head_path: str, old: dict) -> dict:
    """What a replaced head looks like, as plain data (``old``: the output layer's tensors before)."""
    try:
        head = model.get_submodule(head_path)
    except AttributeError:
        head = None
    if isinstance(head, nn.Linear):
        head_info = ["Linear", head.in_features, head.out_features, head.bias is not None,
                     str(head.weight.dtype).removeprefix("torch."), head.weight.device.type]
    else:
        head_info = [type(head).__name__]
    parameters = [[name, list(p.shape), p.requires_grad] for name, p in model.named_parameters()]
    output = fresh = None  # on the meta device (slow to run, no numbers) the head's report above must do
    if spec.get("device", "cpu") == "cpu":
        channels, height, width = ARCHS[spec["arch"]][1]
        x = torch.zeros(2, channels, height, width, dtype=getattr(torch, spec.get("dtype", "float32")))
        try:
            with torch.no_grad():
                output = list(model.eval()(x).shape)
        except Exception as err:  # a head of the wrong size or dtype: the report says so
            output = f"the forward pass fails ({type(err).__name__})"
    if spec.get("device", "cpu") == "cpu" and isinstance(head, nn.Linear):
        weight = head.weight.detach()
        bound = 1.0 / math.sqrt(head.in_features)  # nn.Linear's default: uniform in (-1/sqrt(in), 1/sqrt(in))
        copied = weight.shape[1] == old["weight"].shape[1] and bool(
            (weight[:, None, :] == old["weight"][None].to(weight)).all(-1).any())
        fresh = bool(weight.abs().max() <= bound) and not copied
    return {"parameters": parameters, "head": head_info, "output shape": output, "fresh": fresh}


def _replace_run(fn, case):
    spec, num_classes = case.args
    model = _build(spec)
    head_path = ARCHS[spec["arch"]][2]
    old = {"weight": model.get_submodule(head_path).weight.detach().clone()}
    others = {name: p.detach().clone() for name, p in model.named_parameters() if not name.startswith(head_path + ".")}
    result = fn(model, num_classes)
    report = _head_report(model, spec, head_path, old)
    current = dict(model.named_parameters())
    report["rest unchanged"] = all(name in current and (spec.get("device") == "meta" or torch.equal(current[name].detach(), value))
                                   for name, value in others.items())
    report["returns the model"] = result is model
    return report


def _replace_oracle(case):
    spec, num_classes = case.args
    model = _build(spec)
    head_path = ARCHS[spec["arch"]][2]
    old = model.get_submodule(head_path)
    parent, _, attribute = head_path.rpartition(".")
    with torch.device(spec.get("device", "cpu")):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None, dtype=old.weight.dtype)
    setattr(model.get_submodule(parent), attribute, new)
    report = _head_report(model, spec, head_path, {"weight": old.weight.detach()})
    report["fresh"] = True if spec.get("device", "cpu") == "cpu" else None
    report["rest unchanged"] = True
    report["returns the model"] = True
    return report


def _compare_parameters(expected: list, got: list) -> str | None:
    if expected == got:
        return None
    want = {name: (shape, grad) for name, shape, grad in expected}
    have = {name: (shape, grad) for name, shape, grad in got}
    for name, (shape, grad) in want.items():
        if name not in have:
            return f"expected a parameter {name!r} of shape {shape}, there is none"
        if have[name][0] != shape:
            return f"{name!r} has shape {have[name][0]}, expected {shape}"
        if have[name][1] != grad:
            return f"{name!r} has requires_grad={have[name][1]}, expected {grad}"
    extra = [name for name in have if name not in want]
    return f"unexpected parameter {extra[0]!r} (the old head's weights should be gone)" if extra else "parameters in another order"


def _compare_head(expected: list, got: list) -> str | None:
    if expected == got:
        return None
    if got[0] != "Linear":
        return f"expected an nn.Linear there, found {got[0]}"
    fields = ("in_features", "out_features", "bias", "dtype", "device")
    for field, want, have in zip(fields, expected[1:], got[1:]):
        if want != have:
            return f"{field} is {have!r}, expected {want!r}"
    return None


def _compare_fresh(expected, got) -> str | None:
    if expected == got or expected is None:
        return None
    return ("expected a freshly initialised layer: yours repeats weights of the old head or lies outside nn.Linear's "
            "default range; create a new nn.Linear")


_REPLACE_COMPARE = _compare_report(**{
    "returns the model": _returned,
    "head": lambda e, g: _compare_head(e, g) and f"the layer where the output layer was: {_compare_head(e, g)}",
    "parameters": _compare_parameters,
    "output shape": _same,
    "fresh": _compare_fresh,
    "rest unchanged": lambda e, g: None if e == g else "expected every other parameter unchanged: replace only the last Linear layer",
})


def _last_linear(model):
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent, _, attribute = name.rpartition(".")
    return model.get_submodule(parent), attribute, model.get_submodule(name)


def _linear_like(old, in_features, out_features, bias=True):
    return nn.Linear(in_features, out_features, bias=bias, device=old.weight.device, dtype=old.weight.dtype)


def _head_keeps_old_weights(model, num_classes):
    parent, attribute, old = _last_linear(model)
    new = _linear_like(old, old.in_features, num_classes, bias=old.bias is not None)
    rows = min(num_classes, old.out_features)
    with torch.no_grad():  # "reuse what the old head learned": copy its first rows
        new.weight[:rows] = old.weight[:rows]
    setattr(parent, attribute, new)
    return model


def _head_appended(model, num_classes):
    parent, attribute, old = _last_linear(model)
    setattr(parent, attribute, nn.Sequential(old, _linear_like(old, old.out_features, num_classes)))
    return model


def _head_wrong_input(model, num_classes):
    parent, attribute, old = _last_linear(model)
    setattr(parent, attribute, _linear_like(old, old.out_features, num_classes, bias=old.bias is not None))
    return model


def _head_resized_in_place(model, num_classes):
    _, _, old = _last_linear(model)
    fresh = _linear_like(old, old.in_features, num_classes, bias=old.bias is not None)
    old.weight.data = fresh.weight.data  # new numbers in the old Parameter: its requires_grad stays as it was
    if old.bias is not None:
        old.bias.data = fresh.bias.data
    old.out_features = num_classes
    return model


def _head_first_linear(model, num_classes):
    name = next(n for n, m in model.named_modules() if isinstance(m, nn.Linear))
    parent, _, attribute = name.rpartition(".")
    old = model.get_submodule(name)
    setattr(model.get_submodule(parent), attribute, _linear_like(old, old.in_features, num_classes, bias=old.bias is not None))
    return model


def _head_fc_attribute(model, num_classes):
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _head_default_dtype_device(model, num_classes):
    parent, attribute, old = _last_linear(model)
    setattr(parent, attribute, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return model


def _head_always_bias(model, num_classes):
    parent, attribute, old = _last_linear(model)
    setattr(parent, attribute, _linear_like(old, old.in_features, num_classes))
    return model


register(Exercise(
    "replace_head", LECTURE, 3, _replace_cases, _replace_oracle, _REPLACE_COMPARE, run=_replace_run,
    params=("model", "num_classes"), forms={"model": ("model",), "num_classes": ("int",)},
    arguments=lambda case: {"model": _model_argument(case), "num_classes": case.args[1]},
    forbidden=(LIBRARY,),
    mistakes=(
        Mistake("keeps the old weights", _head_keeps_old_weights,
                "Your new layer starts from the old head's weights; those belong to ImageNet's classes, not to yours: "
                f"use a freshly initialised nn.Linear {HEAD_SECTION}."),
        Mistake("appends a layer", _head_appended,
                "You put a new layer behind the old head instead of in its place, so the old head's 1000-class layer "
                f"(and its weights) stay in the network {HEAD_SECTION}."),
        Mistake("wrong input size", _head_wrong_input,
                "Your new layer takes old_head.out_features inputs; it receives what the old head received: "
                f"nn.Linear(old_head.in_features, num_classes) {HEAD_SECTION}."),
        Mistake("resized in place", _head_resized_in_place,
                "You put new numbers into the old layer's parameters; in a frozen model they keep requires_grad=False, "
                f"so the new head never trains: create a new nn.Linear (its parameters require gradients) {HEAD_SECTION}."),
        Mistake("first Linear", _head_first_linear,
                "You replace the first nn.Linear of the model; the output layer is the last one (AlexNet and VGG "
                f"have three) {HEAD_SECTION}."),
        Mistake("assumes .fc", _head_fc_attribute,
                "You assume the output layer is called model.fc (ResNet's name); MobileNetV2, AlexNet and VGG keep it "
                f"in model.classifier: find the last nn.Linear among model.named_modules() {HEAD_SECTION}."),
        Mistake("default dtype and device", _head_default_dtype_device,
                "Your new layer is created in float32 on the CPU whatever the model uses: pass "
                f"device=old.weight.device, dtype=old.weight.dtype {HEAD_SECTION}."),
        Mistake("always a bias", _head_always_bias,
                f"Your new layer always has a bias; keep the old layer's choice: bias=old.bias is not None {HEAD_SECTION}."),
    ),
))


# --- fine_tuning_mode -----------------------------------------------------------------------------

def _mode_cases(gen, hidden):
    top = ("features.14", "features.15", "features.16", "features.17", "features.18", "classifier")
    worked = [
        ({"arch": "mobilenet_v2", "classes": 1000, "device": "meta", "trainable": top, "mode": "eval"},
         "the lecture's: higher layers trainable, arriving in eval mode as pretrained() returns it"),
        ({"arch": "mobilenet_v2", "classes": 10, "device": "meta", "trainable": ("classifier",)},
         "only the classifier trainable: every BatchNorm frozen, the classifier's dropout trains"),
        ({"arch": "resnet18", "classes": 1000, "device": "meta"}, "nothing frozen: everything trains"),
        ({"arch": "resnet18", "classes": 1000, "device": "meta", "trainable": ("layer4.1.bn1", "layer4.1.bn2.bias", "fc")},
         "layer4.1.bn2 has a trainable bias and a frozen weight: it has a trainable parameter, so it trains"),
        ({"arch": "bn head", "classes": 3, "trainable": ("fc2",), "mode": "eval"},
         "BatchNorm1d in the fully connected part is frozen too"),
    ]
    cases = [Case((spec,), label=f"{_describe(spec)}: {why}") for spec, why in worked]
    while len(cases) < 10:
        spec = _random_spec(gen, ("mobilenet_v2", "course googlenet", "course small_resnet", "bn head"))
        names = _top_names(spec)
        spec["trainable"] = tuple(names[i] for i in range(len(names)) if rand_int(gen, 0, 1))
        if rand_int(gen, 0, 1):
            spec["mode"] = "eval"
        cases.append(Case((spec,), label=_describe(spec)))
    return cases


def _mode_report(model: nn.Module, result) -> dict:
    return {"returns the model": result is model,
            "modules in training mode": sorted(name for name, module in model.named_modules() if module.training)}


def _mode_run(fn, case):
    model = _build(case.args[0])
    return _mode_report(model, fn(model))


def _mode_oracle(case):
    model = _build(case.args[0])
    for module in model.modules():
        frozen_bn = isinstance(module, nn.modules.batchnorm._BatchNorm) and all(not p.requires_grad for p in module.parameters())
        module.training = not frozen_bn
    return _mode_report(model, model)


def _compare_training(expected: list, got: list) -> str | None:
    if expected == got:
        return None
    should_eval = [n or "(the model itself)" for n in got if n not in set(expected)]
    should_train = [n or "(the model itself)" for n in expected if n not in set(got)]
    if should_eval:
        return (f"expected eval mode for {len(should_eval)} module(s) in training mode (first: {should_eval[0]!r}); "
                "a frozen BatchNorm layer in training mode overwrites its running statistics")
    return f"expected training mode for {len(should_train)} module(s) in eval mode (first: {should_train[0]!r})"


_MODE_COMPARE = _compare_report(**{"returns the model": _returned, "modules in training mode": _compare_training})


def _is_frozen_bn(module, types=(nn.modules.batchnorm._BatchNorm,), rule=all):
    return isinstance(module, types) and rule(not p.requires_grad for p in module.parameters())


def _mode_mistake(select, call_train=True, returns=True):
    def fine_tuning_mode(model):
        if call_train:
            model.train()
        for module in model.modules():
            if select(module):
                module.eval()
        return model if returns else None

    return fine_tuning_mode


register(Exercise(
    "fine_tuning_mode", LECTURE, 2, _mode_cases, _mode_oracle, _MODE_COMPARE, run=_mode_run,
    params=("model",), forms={"model": ("model",)},
    arguments=lambda case: {"model": _model_argument(case)},
    forbidden=(LIBRARY,),
    mistakes=(
        Mistake("just model.train()", _mode_mistake(lambda module: False),
                "You call model.train() and stop there: frozen BatchNorm layers then normalise with the batch's "
                f"statistics and overwrite ImageNet's running averages; put them in eval mode {BN_SECTION}."),
        Mistake("every BatchNorm", _mode_mistake(lambda module: isinstance(module, nn.modules.batchnorm._BatchNorm)),
                "You put every BatchNorm layer in eval mode, also those whose parameters train; only the frozen ones "
                f"(no trainable parameter) stay in eval mode {BN_SECTION}."),
        Mistake("every module without trainable parameters", _mode_mistake(
                    lambda module: not any(p.requires_grad for p in module.parameters())),
                "You put every module without trainable parameters in eval mode, so dropout and ReLUs switch too; "
                f"only BatchNorm layers have statistics to protect {BN_SECTION}."),
        Mistake("BatchNorm2d only", _mode_mistake(lambda module: _is_frozen_bn(module, nn.BatchNorm2d)),
                "You only look for nn.BatchNorm2d; a frozen nn.BatchNorm1d (in a fully connected part) has running "
                f"statistics too: test isinstance(module, nn.modules.batchnorm._BatchNorm) {BN_SECTION}."),
        Mistake("one frozen parameter is enough", _mode_mistake(lambda module: _is_frozen_bn(module, rule=any)),
                "You freeze the statistics of a BatchNorm layer as soon as one of its parameters is frozen; a layer "
                f"with a trainable parameter is being fine-tuned and trains {BN_SECTION}."),
        Mistake("no model.train()", _mode_mistake(_is_frozen_bn, call_train=False),
                "You never call model.train(), so a model that arrives in eval mode (as pretrained() returns it) "
                f"stays there and nothing trains properly: start with model.train() {BN_SECTION}."),
        Mistake("returns None", _mode_mistake(_is_frozen_bn, returns=False),
                f"Your modes are right but the function returns None: end with return model {BN_SECTION}."),
    ),
))


# --- linear_probe_step ----------------------------------------------------------------------------

def _probe_cases(gen, hidden):
    zeros = torch.zeros(2, 2, dtype=torch.float64)
    cases = [
        Case((zeros, torch.zeros(2, dtype=torch.float64), torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0]), 1.0),
             label="the lecture's example: weight 0, bias 0, one image with features [1, 2] of class 0, lr 1 "
                   "-> weight [[0.5, 1], [-0.5, -1]], bias [0.5, -0.5]"),
        Case((zeros, torch.zeros(2, dtype=torch.float64), torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64),
              torch.tensor([0, 1]), 0.5), label="two images of different classes: the gradient is the mean over the batch"),
    ]
    while len(cases) < 10:
        n, d, k = rand_int(gen, 2, 24), rand_int(gen, 1, 16), rand_int(gen, 2, 10)
        dtype = rand_dtype(gen)
        weight = torch.randn(k, d, generator=gen, dtype=dtype) * 0.5
        bias = torch.randn(k, generator=gen, dtype=dtype) * 0.5
        features = torch.randn(n, d, generator=gen, dtype=dtype)
        labels = torch.randint(0, k, (n,), generator=gen)
        lr = round(0.01 + float(torch.rand((), generator=gen)) * 2.0, 3)
        cases.append(Case((weight, bias, features, labels, lr),
                          label=f"{k} classes, {d} features, {n} images, {str(dtype)[6:]}, lr {lr}"))
    return cases


def _probe_run(fn, case):
    weight, bias, features, labels, lr = case.args
    inputs = [weight.clone(), bias.clone(), features.clone(), labels.clone()]
    result = fn(*inputs, lr)
    unchanged = all(torch.equal(a, b) for a, b in zip(inputs, case.args))
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"return a pair (new_weight, new_bias), got {type(result).__name__}")
    return result[0], result[1], unchanged


def _probe_oracle(case):
    weight, bias, features, labels, lr = case.args
    w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([w, b], lr=lr)
    F.cross_entropy(features @ w.T + b, labels).backward()
    optimizer.step()
    return w.detach(), b.detach(), True


def _compare_probe(expected, got) -> str | None:
    for part, want, have in zip(("new weight", "new bias"), expected[:2], got[:2]):
        reason = compare_tensor(want, have)
        if reason is not None:
            return f"{part}: {reason}"
    if expected[2] != got[2]:
        return "expected the inputs unchanged, but they changed: return new tensors and leave weight, bias, features and labels as they were"
    return None


def _probe_mistake(probabilities=lambda logits: logits.softmax(dim=1), mean=True, sign=-1.0, onehot=True,
                   in_place=False, update_bias=True):
    def linear_probe_step(weight, bias, features, labels, lr):
        delta = probabilities(features @ weight.T + bias)
        if onehot:
            delta = delta - F.one_hot(labels, weight.shape[0]).to(delta.dtype)
        if mean:
            delta = delta / len(labels)
        grad_w, grad_b = delta.T @ features, delta.sum(0)
        if in_place:
            return weight.add_(sign * lr * grad_w), bias.add_(sign * lr * grad_b)
        return weight + sign * lr * grad_w, (bias + sign * lr * grad_b) if update_bias else bias

    return linear_probe_step


register(Exercise(
    "linear_probe_step", LECTURE, 3, _probe_cases, _probe_oracle, _compare_probe, run=_probe_run,
    params=("weight", "bias", "features", "labels", "lr"),
    forms={"weight": ("tensor float32", "tensor float64"), "bias": ("tensor float32", "tensor float64"),
           "features": ("tensor float32", "tensor float64"), "labels": ("tensor int64",), "lr": ("float",)},
    forbidden=("torch.autograd.backward", "torch.autograd.grad"),
    mistakes=(
        Mistake("sum instead of mean", _probe_mistake(mean=False),
                "Your step is as many times too large as there are images: the loss is the mean cross-entropy, so "
                f"divide the gradient by the batch size {PROBE_SECTION}."),
        Mistake("gradient ascent", _probe_mistake(sign=1.0),
                f"You add the gradient; a training step subtracts lr times the gradient {PROBE_SECTION}."),
        Mistake("no one-hot", _probe_mistake(onehot=False),
                "Your gradient uses the softmax probabilities alone; the gradient of cross-entropy with respect to the "
                f"logits is softmax minus the one-hot label {PROBE_SECTION}."),
        Mistake("sigmoid", _probe_mistake(probabilities=torch.sigmoid),
                "You use a sigmoid per class; cross-entropy over classes needs the softmax across the classes "
                f"{PROBE_SECTION}."),
        Mistake("bias not updated", _probe_mistake(update_bias=False),
                f"You return the old bias; it is a parameter too, with gradient (softmax - one-hot) summed over the batch "
                f"(divided by its size) {PROBE_SECTION}."),
        Mistake("in place", _probe_mistake(in_place=True),
                "You update weight and bias in place, changing the caller's tensors; return new tensors "
                f"{PROBE_SECTION}."),
    ),
))
