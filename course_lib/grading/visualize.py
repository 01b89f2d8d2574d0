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
"""
from __future__ import annotations

import torch
from torch import nn

from .core import Case, Exercise, register, rand_dtype, rand_int

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


# --- occlusion_map -------------------------------------------------------------------------------

def _occlusion_cases(gen, hidden):
    x8 = torch.rand(1, 8, 8, generator=gen, dtype=torch.float64)
    x12 = torch.rand(3, 12, 10, generator=gen, dtype=torch.float64)
    x9 = torch.rand(2, 9, 11, generator=gen, dtype=torch.float64)
    worked = [
        (_region_spec(gen, 1, 8, 8, (2, 5), (3, 6)), x8, 3, 1, 0.0),
        (_region_spec(gen, 3, 12, 10, (5, 9), (1, 4)), x12, 4, 2, 0.5),
        (_region_spec(gen, 2, 9, 11, (0, 3), (6, 11), classes=4, target=3), x9, 2, 3, -1.0),  # stride > patch: gaps
        (_region_spec(gen, 1, 8, 8, (2, 5), (3, 6)), x8, 8, 1, 0.0),  # one position: the whole image
    ]
    cases = [
        Case((spec, image, spec["target"], patch, stride), {"fill": fill},
             label=f"{_spec_label(spec, image)}; {patch}x{patch} occluder, stride {stride}, fill {fill}")
        for spec, image, patch, stride, fill in worked
    ]
    while len(cases) < 10:
        spec, image, target = _random_cnn_case_parts(gen)
        patch, stride = rand_int(gen, 1, min(image.shape[1:])), rand_int(gen, 1, 4)
        fill = round(float(torch.rand((), generator=gen)) * 2 - 0.5, 2)
        cases.append(Case((spec, image, target, patch, stride), {"fill": fill},
                          label=f"{_spec_label(spec, image)}, target {target}; {patch}x{patch} occluder, stride {stride}, fill {fill}"))
    return cases


def _occlusion_run(fn, case):
    spec, image, target, patch, stride = case.args
    return fn(_model(spec, image.dtype), image.clone(), target, patch, stride, **case.kwargs)


def _occlusion_oracle(case):
    spec, image, target, patch, stride = case.args
    fill = case.kwargs.get("fill", 0.0)
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
        return out
    model = _model(spec, image.dtype)
    with torch.no_grad():
        for i in range(rows):
            for j in range(cols):
                x = image.clone()
                x[:, i * stride : i * stride + patch, j * stride : j * stride + patch] = fill
                out[i, j] = model(x[None]).softmax(-1)[0, target]
    return out


register(Exercise("occlusion_map", LECTURE, 3, _occlusion_cases, _occlusion_oracle, run=_occlusion_run))


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


def _saliency_run(fn, case):
    spec, image, target = case.args
    return fn(_model(spec, image.dtype), image.clone(), target)


def _saliency_oracle(case):
    spec, image, target = case.args
    if spec["kind"] == "region":
        # The score is linear in the region's pixels: the gradient is the weight there, zero elsewhere.
        weight = spec["weight"].to(image.dtype)
        out = torch.zeros(image.shape[1:], dtype=image.dtype)
        h, w = weight.shape[-2:]
        out[spec["top"] : spec["top"] + h, spec["left"] : spec["left"] + w] = weight.abs().amax(0)
        return out
    x = image.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_model(spec, image.dtype)(x[None])[0, target], x)
    return grad.abs().amax(0)


register(Exercise("saliency_map", LECTURE, 2, _saliency_cases, _saliency_oracle, run=_saliency_run))


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
    spec, image, target, lr = case.args
    return fn(_model(spec, image.dtype), image.clone(), target, lr, **case.kwargs)


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
    return image + lr * grad / (grad.abs().mean() + 1e-8)


register(Exercise("class_visualization_step", LECTURE, 2, _step_cases, _step_oracle, run=_step_run))
