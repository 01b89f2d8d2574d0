"""Exercises of lecture 04 (visualising what a CNN learned), graded on models whose answers are known.

A case cannot carry a model (cases are plain data), so it carries a *spec* and :func:`_model` builds
the model from it, the same way for the student's run and for the oracle:

- ``{"kind": "region", "weight": [C, h, w], "top": r, "left": c, "bias": [K], "target": t}``: the
  logit of class ``t`` is ``bias[t] + sum(weight * image[:, r:r+h, c:c+w])``, every other class's
  logit is its bias. The model sees only that region, so the oracles work on paper: occluding
  changes the score by ``-sum(weight * (pixel - fill))`` over the covered part of the region, and
  the input gradient is ``weight`` inside the region and zero outside.
- ``{"kind": "cnn", "channels": C, "classes": K, "seed": s}``: a tiny conv-ReLU-pool-conv-ReLU-
  average-pool-linear network from torch layers, weights drawn from ``seed``. Its oracles are a loop
  over occluder positions with one forward pass each, and ``torch.autograd.grad``.

Models are built in the image's dtype and handed over in eval mode.

The texts also state side effects: one forward pass without gradients (occlusion), the image left
unchanged and nothing left on the parameters' ``.grad`` (saliency, class visualisation), no gradient
history on the result (class visualisation). Each ``run`` function watches these and returns them as
plain values after the answer; the comparison explains in words any that differ. The classic wrong
versions (:class:`~.core.Mistake`) run under the same watch as a student's code, which must not call
``course_lib.visualize``, so they are written with torch operations only.
"""
from __future__ import annotations

import torch
from torch import nn

from .core import Case, Exercise, Mistake, compare_tensor, register, rand_dtype, rand_int, section

LECTURE = "04_visualizing"


# --- the models the cases describe ---------------------------------------------------------------

class _RegionModel(nn.Module):
    """Logits ``bias`` plus, for class ``target`` only, ``sum(weight * x[..., region])``."""

    def __init__(self, weight, top, left, bias, target):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.top, self.left, self.target = top, left, target

    def forward(self, x):
        h, w = self.weight.shape[-2:]
        score = (x[..., self.top : self.top + h, self.left : self.left + w] * self.weight).sum((1, 2, 3))
        onehot = torch.zeros_like(self.bias)
        onehot[self.target] = 1.0
        return self.bias + score[:, None] * onehot


def _tiny_cnn(channels, classes, seed, dtype):
    model = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, classes),
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            # He-scaled weights, and a linear head three times that, so occluders move the probabilities visibly.
            scale = (2.0 / p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale * (3.0 if p.dim() == 2 else 1.0))
    return model.to(dtype)


def _model(spec: dict, dtype: torch.dtype) -> nn.Module:
    if spec["kind"] == "region":
        model = _RegionModel(spec["weight"].to(dtype), spec["top"], spec["left"], spec["bias"].to(dtype), spec["target"])
    else:
        model = _tiny_cnn(spec["channels"], spec["classes"], spec["seed"], dtype)
    return model.eval()


def _region_spec(gen, channels, height, width, rows, cols, classes=3, target=1, dtype=torch.float64, scale=1.0):
    """A region model looking at ``rows`` x ``cols`` (half-open ranges) of a ``height x width`` image,
    its weights ``scale`` times standard normal."""
    (r0, r1), (c0, c1) = rows, cols
    assert 0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width
    return {
        "kind": "region",
        "weight": scale * torch.randn(channels, r1 - r0, c1 - c0, generator=gen, dtype=dtype),
        "top": r0, "left": c0,
        "bias": torch.randn(classes, generator=gen, dtype=dtype),
        "target": target,
    }


def _spec_label(spec, image) -> str:
    c, h, w = image.shape
    what = f"a {c}-channel {h}x{w} {str(image.dtype)[6:]} image"
    if spec["kind"] == "region":
        rh, rw = spec["weight"].shape[-2:]
        r, col = spec["top"], spec["left"]
        return f"{what}; class {spec['target']} sees only rows {r}..{r + rh - 1}, cols {col}..{col + rw - 1}"
    return f"{what}; a tiny random CNN (seed {spec['seed']}, {spec['classes']} classes)"


def _random_cnn_case_parts(gen, min_size=4, max_size=14):
    dtype = rand_dtype(gen)
    channels, classes = rand_int(gen, 1, 3), rand_int(gen, 2, 5)
    image = torch.rand(channels, rand_int(gen, min_size, max_size), rand_int(gen, min_size, max_size), generator=gen, dtype=dtype)
    spec = {"kind": "cnn", "channels": channels, "classes": classes, "seed": rand_int(gen, 0, 10_000)}
    return spec, image, rand_int(gen, 0, classes - 1)


# --- what the run functions watch, and how the answers are compared ---------------------------------

OCCLUSION_SECTION = f"({section('04', 'The occlusion experiment')})"
SALIENCY_SECTION = f"({section('04', 'Gradients: saliency and guided backpropagation')})"
CLASS_SECTION = f"({section('04', 'Class-model visualisation: what image does the network want?')})"
LIBRARY = "course_lib.visualize"


def _watched(spec: dict, dtype: torch.dtype):
    """The case's model and a record of its forward passes: how many, and whether any recorded gradients."""
    model = _model(spec, dtype)
    record = {"calls": 0, "grad": False}

    def hook(module, inputs, output):
        record["calls"] += 1
        record["grad"] |= torch.is_grad_enabled()

    model.register_forward_hook(hook)
    return model, record


def _grads_left(model: nn.Module) -> bool:
    return any(p.grad is not None for p in model.parameters())


def _unchanged(given: torch.Tensor, original: torch.Tensor) -> bool:
    """Whether the student's copy of the image still equals the case's: values and requires_grad."""
    return not given.requires_grad and torch.equal(given.detach(), original)


def _has_history(value) -> bool:
    return isinstance(value, torch.Tensor) and (value.requires_grad or value.grad_fn is not None)


def _effects_compare(*explanations):
    """Compare ``(answer, effect, ...)`` as a run returns them: the answer first, then each side effect the
    text rules out, a plain value that ``explanations[k]`` turns into words when it differs."""

    def compare(expected, got):
        if not isinstance(got, tuple) or len(got) != len(expected):
            return f"expected the run to give {len(expected)} results, got {type(got).__name__}"
        reason = compare_tensor(expected[0], got[0])
        if reason is not None:
            return reason
        for explain, exp, value in zip(explanations, expected[1:], got[1:]):
            if type(value) is not type(exp) or value != exp:
                return explain(value)
        return None

    return compare


def _fill_tensor(fill, image: torch.Tensor):
    """``fill`` as something that broadcasts over ``[C, h, w]``: a number, or a ``[C, 1, 1]`` tensor."""
    return fill.to(image.dtype).reshape(-1, 1, 1) if isinstance(fill, torch.Tensor) else fill


# --- occlusion_map -------------------------------------------------------------------------------

def _occlusion_cases(gen, hidden):
    x8 = torch.rand(1, 8, 8, generator=gen, dtype=torch.float64)
    x12 = torch.rand(3, 12, 10, generator=gen, dtype=torch.float64)
    x9 = torch.rand(2, 9, 11, generator=gen, dtype=torch.float64)
    x7 = torch.rand(3, 7, 9, generator=gen)
    mean_colour = torch.tensor([0.485, 0.456, 0.406])  # a per-channel fill, as the lecture's ImageNet example
    worked = [
        (_region_spec(gen, 1, 8, 8, (2, 5), (3, 6)), x8, 3, 1, 0.0),
        (_region_spec(gen, 3, 12, 10, (5, 9), (1, 4)), x12, 4, 2, 0.5),
        (_region_spec(gen, 2, 9, 11, (0, 3), (6, 11), classes=4, target=3), x9, 2, 3, -1.0),  # stride > patch: gaps
        (_region_spec(gen, 1, 8, 8, (2, 5), (3, 6)), x8, 8, 1, 0.0),  # one position: the whole image
        (_region_spec(gen, 3, 7, 9, (1, 6), (0, 4), dtype=torch.float32), x7, 3, 2, mean_colour),
    ]
    cases = [
        Case((spec, image, spec["target"], patch, stride), {"fill": fill},
             label=f"{_spec_label(spec, image)}; {patch}x{patch} occluder, stride {stride}, fill {_describe_fill(fill)}")
        for spec, image, patch, stride, fill in worked
    ]
    while len(cases) < 11:
        spec, image, target = _random_cnn_case_parts(gen)
        patch, stride = rand_int(gen, 1, min(image.shape[1:])), rand_int(gen, 1, 4)
        if image.shape[0] > 1 and rand_int(gen, 0, 2) == 0:
            fill = torch.rand(image.shape[0], generator=gen)
        else:
            fill = round(float(torch.rand((), generator=gen)) * 2 - 0.5, 2)
        cases.append(Case((spec, image, target, patch, stride), {"fill": fill},
                          label=f"{_spec_label(spec, image)}, target {target}; {patch}x{patch} occluder, stride {stride}, fill {_describe_fill(fill)}"))
    return cases


def _describe_fill(fill) -> str:
    return f"{[round(v, 3) for v in fill.tolist()]} per channel" if isinstance(fill, torch.Tensor) else str(fill)


def _occlusion_arguments(case):
    spec, image, target, patch, stride = case.args
    return {"model": _model(spec, image.dtype), "image": image, "target": target, "patch_size": patch, "stride": stride, **case.kwargs}


def _occlusion_run(fn, case):
    """The map, how many forward passes the model made, and whether any recorded gradients."""
    spec, image, target, patch, stride = case.args
    model, record = _watched(spec, image.dtype)
    result = fn(model, image.clone(), target, patch, stride, **case.kwargs)
    return result, record["calls"], record["grad"]


def _occlusion_oracle(case):
    spec, image, target, patch, stride = case.args
    fill = _fill_tensor(case.kwargs.get("fill", 0.0), image)
    _, height, width = image.shape
    rows, cols = (height - patch) // stride + 1, (width - patch) // stride + 1
    out = torch.empty(rows, cols, dtype=image.dtype)
    if spec["kind"] == "region":
        # On paper: the score loses weight * (pixel - fill) on every covered pixel of the region.
        weight, bias, t = spec["weight"].to(image.dtype), spec["bias"].to(image.dtype), spec["target"]
        h, w = weight.shape[-2:]
        region = image[:, spec["top"] : spec["top"] + h, spec["left"] : spec["left"] + w]
        ys = torch.arange(h)[:, None] + spec["top"]
        xs = torch.arange(w)[None, :] + spec["left"]
        for i in range(rows):
            for j in range(cols):
                covered = (ys >= i * stride) & (ys < i * stride + patch) & (xs >= j * stride) & (xs < j * stride + patch)
                score = (weight * torch.where(covered, fill, region)).sum()
                others = torch.cat([bias[:t], bias[t + 1 :]])
                out[i, j] = 1.0 / (1.0 + torch.exp(others - bias[t] - score).sum())
        return out, 1, False
    model = _model(spec, image.dtype)
    with torch.no_grad():
        for i in range(rows):
            for j in range(cols):
                x = image.clone()
                x[:, i * stride : i * stride + patch, j * stride : j * stride + patch] = fill
                out[i, j] = model(x[None]).softmax(-1)[0, target]
    return out, 1, False


def _occlusion_mistake(*, score="prob", short=False, ignore_stride=False, ignore_fill=False, swap=False,
                       grad=False, per_position=False):
    """occlusion_map with one classic mistake (the keywords), built from torch operations only."""

    def occlusion_map(model, image, target, patch_size, stride, fill=0.0):
        step = 1 if ignore_stride else stride
        _, height, width = image.shape
        rows, cols = (height - patch_size) // step + 1 - short, (width - patch_size) // step + 1 - short
        value = _fill_tensor(0.0 if ignore_fill else fill, image)
        copies = []
        for i in range(rows):
            for j in range(cols):
                top, left = (j * step, i * step) if swap else (i * step, j * step)
                x = image.clone()
                x[:, top : top + patch_size, left : left + patch_size] = value
                copies.append(x)
        with torch.set_grad_enabled(grad):
            if per_position:
                logits = torch.cat([model(x[None]) for x in copies])
            else:
                logits = model(torch.stack(copies))
        scores = {"prob": logits.softmax(-1), "logit": logits, "logprob": logits.log_softmax(-1)}[score]
        return scores[:, target].reshape(rows, cols).detach()

    return occlusion_map


register(Exercise(
    "occlusion_map", LECTURE, 3, _occlusion_cases, _occlusion_oracle, run=_occlusion_run,
    compare=_effects_compare(
        lambda calls: f"expected one forward pass on a batch of all occluded copies, but the model ran {calls} times",
        lambda grad: "expected the forward pass without gradients (inside torch.no_grad()), but the model ran with gradients on",
    ),
    params=("model", "image", "target", "patch_size", "stride", "fill"),
    forms={"model": ("model",), "image": ("tensor float32", "tensor float64"), "target": ("int",),
           "patch_size": ("int",), "stride": ("int",), "fill": ("float", "tensor float32")},
    arguments=_occlusion_arguments,
    forbidden=(LIBRARY,),
    mistakes=(
        Mistake("logits", _occlusion_mistake(score="logit"),
                f"Your map holds raw logits: it should hold the softmax probability of the target class {OCCLUSION_SECTION}."),
        Mistake("log-probabilities", _occlusion_mistake(score="logprob"),
                f"Your map holds log-probabilities (log_softmax): it should hold the probability itself, softmax without the log {OCCLUSION_SECTION}."),
        Mistake("one position short", _occlusion_mistake(short=True),
                f"Your map is one row and one column short: there are (H - patch_size) // stride + 1 positions, the + 1 counting the first one at 0 {OCCLUSION_SECTION}."),
        Mistake("stride ignored", _occlusion_mistake(ignore_stride=True),
                f"Your occluder moves one pixel at a time whatever the stride: position (i, j) starts at row i * stride and column j * stride {OCCLUSION_SECTION}."),
        Mistake("fill ignored", _occlusion_mistake(ignore_fill=True),
                f"Your occluder is always black: it must be filled with `fill`, a number or one value per channel {OCCLUSION_SECTION}."),
        Mistake("rows and columns swapped", _occlusion_mistake(swap=True),
                f"Your map has rows and columns swapped: position (i, j) covers rows from i * stride and columns from j * stride {OCCLUSION_SECTION}."),
        Mistake("gradients on", _occlusion_mistake(grad=True),
                f"Your values are right but the forward pass records gradients: run it inside torch.no_grad() {OCCLUSION_SECTION}."),
        Mistake("one pass per position", _occlusion_mistake(per_position=True),
                f"Your values are right but you run the model once per occluder position: stack the occluded copies and run one batch {OCCLUSION_SECTION}."),
    ),
))


# --- saliency_map --------------------------------------------------------------------------------

def _saliency_cases(gen, hidden):
    worked = [
        (_region_spec(gen, 1, 8, 8, (2, 5), (3, 6)), torch.rand(1, 8, 8, generator=gen, dtype=torch.float64)),
        (_region_spec(gen, 3, 12, 10, (5, 9), (1, 4), classes=4, target=2), torch.rand(3, 12, 10, generator=gen, dtype=torch.float64)),
        (_region_spec(gen, 2, 7, 9, (0, 7), (8, 9), dtype=torch.float32), torch.rand(2, 7, 9, generator=gen)),
    ]
    cases = [Case((spec, image, spec["target"]), label=_spec_label(spec, image)) for spec, image in worked]
    while len(cases) < 9:
        spec, image, target = _random_cnn_case_parts(gen)
        cases.append(Case((spec, image, target), label=f"{_spec_label(spec, image)}, target {target}"))
    return cases


def _model_arguments(case):
    spec, image, *rest = case.args
    params = ("target", "lr")
    return {"model": _model(spec, image.dtype), "image": image, **dict(zip(params, rest)), **case.kwargs}


def _saliency_run(fn, case):
    """The map, whether the image is as it was given, and whether gradients were left on the model."""
    spec, image, target = case.args
    model, given = _model(spec, image.dtype), image.clone()
    result = fn(model, given, target)
    return result, _unchanged(given, image), _grads_left(model)


def _saliency_oracle(case):
    spec, image, target = case.args
    if spec["kind"] == "region":
        # The score is linear in the region's pixels: the gradient is the weight there, zero elsewhere.
        weight = spec["weight"].to(image.dtype)
        out = torch.zeros(image.shape[1:], dtype=image.dtype)
        h, w = weight.shape[-2:]
        out[spec["top"] : spec["top"] + h, spec["left"] : spec["left"] + w] = weight.abs().amax(0)
        return out, True, False
    x = image.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_model(spec, image.dtype)(x[None])[0, target], x)
    return grad.abs().amax(0), True, False


def _saliency_mistake(*, score="logit", reduce="absmax", backward=False, on_image=False):
    def saliency_map(model, image, target):
        x = image if on_image else image.detach().clone()
        x.requires_grad_(True)
        logits = model(x[None])
        value = {"logit": logits, "prob": logits.softmax(-1), "logprob": logits.log_softmax(-1)}[score][0, target]
        if backward:
            value.backward()
            grad = x.grad
        else:
            (grad,) = torch.autograd.grad(value, x)
        return {"absmax": grad.abs().amax(0), "signed": grad.amax(0), "sum": grad.abs().sum(0)}[reduce]

    return saliency_map


def _image_changed(unchanged) -> str:
    return "expected `image` unchanged, but your function changed it (its values or its requires_grad flag): work on a copy"


def _grads_were_left(left) -> str:
    return "expected nothing left on the model's parameters' .grad, but gradients were left there: use torch.autograd.grad, not .backward()"


register(Exercise(
    "saliency_map", LECTURE, 2, _saliency_cases, _saliency_oracle, run=_saliency_run,
    compare=_effects_compare(_image_changed, _grads_were_left),
    params=("model", "image", "target"),
    forms={"model": ("model",), "image": ("tensor float32", "tensor float64"), "target": ("int",)},
    arguments=_model_arguments,
    forbidden=(LIBRARY,),
    mistakes=(
        Mistake("no absolute value", _saliency_mistake(reduce="signed"),
                f"Your map keeps the gradient's sign: take |gradient| before the maximum over channels {SALIENCY_SECTION}."),
        Mistake("sum over channels", _saliency_mistake(reduce="sum"),
                f"Your map adds the channels' |gradient|: the saliency map takes their maximum {SALIENCY_SECTION}."),
        Mistake("probability", _saliency_mistake(score="prob"),
                f"Your map is the gradient of the softmax probability: use the raw logit, since the probability also moves when other classes do {SALIENCY_SECTION}."),
        Mistake("log-probability", _saliency_mistake(score="logprob"),
                f"Your map is the gradient of the log-probability (log_softmax): use the raw logit of the class {SALIENCY_SECTION}."),
        Mistake("backward", _saliency_mistake(backward=True),
                f"Your values are right but .backward() left gradients on the model's parameters: torch.autograd.grad(score, x) computes only the one you need {SALIENCY_SECTION}."),
        Mistake("gradient on the image itself", _saliency_mistake(on_image=True),
                f"Your values are right but you switched on requires_grad on the caller's image: take the gradient with respect to a copy {SALIENCY_SECTION}."),
    ),
))


# --- class_visualization_step ---------------------------------------------------------------------

def _step_cases(gen, hidden):
    # Weights of about 10 keep mean(|g|) far above the 1e-8 in the step, so that term cannot decide a case.
    worked = [
        (_region_spec(gen, 1, 8, 8, (2, 5), (3, 6), scale=10.0), torch.randn(1, 8, 8, generator=gen, dtype=torch.float64), 0.1, 0.0),
        (_region_spec(gen, 3, 12, 10, (5, 9), (1, 4), scale=10.0), torch.randn(3, 12, 10, generator=gen, dtype=torch.float64), 0.05, 0.5),
        (_region_spec(gen, 2, 7, 9, (1, 6), (2, 8), classes=4, target=0, dtype=torch.float32, scale=10.0),
         torch.randn(2, 7, 9, generator=gen), 1.0, 0.1),
    ]
    cases = [
        Case((spec, image, spec["target"], lr), {"l2": l2}, label=f"{_spec_label(spec, image)}; lr {lr}, l2 {l2}")
        for spec, image, lr, l2 in worked
    ]
    while len(cases) < 9:
        spec, image, target = _random_cnn_case_parts(gen)
        lr, l2 = round(float(torch.rand((), generator=gen)) * 0.5 + 0.01, 3), round(float(torch.rand((), generator=gen)), 2)
        cases.append(Case((spec, image, target, lr), {"l2": l2}, label=f"{_spec_label(spec, image)}, target {target}; lr {lr}, l2 {l2}"))
    return cases


def _step_run(fn, case):
    """The new image, whether it carries gradient history, whether the given image is unchanged, and
    whether gradients were left on the model."""
    spec, image, target, lr = case.args
    model, given = _model(spec, image.dtype), image.clone()
    result = fn(model, given, target, lr, **case.kwargs)
    history = _has_history(result)
    return (result.detach() if history else result), history, _unchanged(given, image), _grads_left(model)


def _step_oracle(case):
    spec, image, target, lr = case.args
    l2 = case.kwargs.get("l2", 0.0)
    if spec["kind"] == "region":
        weight = spec["weight"].to(image.dtype)
        h, w = weight.shape[-2:]
        grad = -2.0 * l2 * image
        grad[:, spec["top"] : spec["top"] + h, spec["left"] : spec["left"] + w] += weight
    else:
        x = image.clone().requires_grad_(True)
        objective = _model(spec, image.dtype)(x[None])[0, target] - l2 * (x * x).sum()
        (grad,) = torch.autograd.grad(objective, x)
    return image + lr * grad / (grad.abs().mean() + 1e-8), False, True, False


def _step_mistake(*, scale="mean", l2_sign=-1.0, l2_factor=2.0, direction=1.0, score="logit", keep_history=False,
                  in_place=False, backward=False):
    def class_visualization_step(model, image, target, lr, l2=0.0):
        x = image.detach().clone().requires_grad_(True)
        logits = model(x[None])
        value = logits.softmax(-1)[0, target] if score == "prob" else logits[0, target]
        objective = value + l2_sign * l2 * (l2_factor / 2.0) * (x * x).sum()
        if backward:
            objective.backward()
            grad = x.grad
        else:
            (grad,) = torch.autograd.grad(objective, x, create_graph=keep_history)
        size = {"mean": grad.abs().mean() + 1e-8, "max": grad.abs().max() + 1e-8, "none": 1.0}[scale]
        step = direction * lr * grad / size
        if in_place:
            with torch.no_grad():
                return image.add_(step)
        return x + step if keep_history else (x + step).detach()

    return class_visualization_step


register(Exercise(
    "class_visualization_step", LECTURE, 2, _step_cases, _step_oracle, run=_step_run,
    compare=_effects_compare(
        lambda history: "expected a result without gradient history, but it has some: return a detached tensor (.detach())",
        _image_changed, _grads_were_left,
    ),
    params=("model", "image", "target", "lr", "l2"),
    forms={"model": ("model",), "image": ("tensor float32", "tensor float64"), "target": ("int",), "lr": ("float",), "l2": ("float",)},
    arguments=_model_arguments,
    forbidden=(LIBRARY,),
    mistakes=(
        Mistake("not normalised", _step_mistake(scale="none"),
                f"Your step is lr times the raw gradient: divide it by mean(|g|) + 1e-8 so that lr is the average change per pixel {CLASS_SECTION}."),
        Mistake("normalised by the maximum", _step_mistake(scale="max"),
                f"Your step divides by the largest |g|: the step divides by the mean of |g| over all C * H * W entries {CLASS_SECTION}."),
        Mistake("penalty rewarded", _step_mistake(l2_sign=1.0),
                f"Your step adds l2 * sum(x^2) to the objective: the penalty is subtracted, so large pixels are pulled back towards 0 {CLASS_SECTION}."),
        Mistake("penalty without the 2", _step_mistake(l2_factor=1.0),
                f"Your penalty's gradient is l2 * x: the gradient of l2 * sum(x^2) is 2 * l2 * x {CLASS_SECTION}."),
        Mistake("descent", _step_mistake(direction=-1.0),
                f"Your step goes down the gradient: class visualisation is gradient *ascent*, x + lr * g / ... {CLASS_SECTION}."),
        Mistake("probability", _step_mistake(score="prob"),
                f"Your step ascends the softmax probability: the objective uses the raw logit of the class {CLASS_SECTION}."),
        Mistake("history kept", _step_mistake(keep_history=True),
                f"Your values are right but the result carries gradient history: detach it, so the next step starts from plain pixels {CLASS_SECTION}."),
        Mistake("image updated in place", _step_mistake(in_place=True),
                f"Your values are right but you changed the caller's image in place: return a new tensor and leave `image` as it was {CLASS_SECTION}."),
        Mistake("backward", _step_mistake(backward=True),
                f"Your values are right but .backward() left gradients on the model's parameters: use torch.autograd.grad(objective, x) {CLASS_SECTION}."),
    ),
))
