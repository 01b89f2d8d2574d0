"""Lecture 04: seeing what a CNN has learned.

The lecture's tools, in its order:

1. the first layer's filters (they act on pixels, so they can be drawn as images) and the feature
   maps of any layer;
2. the input patches that excite one unit most, cropped to the unit's receptive field, and the images
   on which one whole feature map is most active ("other activations from the same feature map");
3. the occlusion experiment: slide a square over the image and watch the class probability, the most
   probable class and the strongest feature map change;
4. gradients with respect to the input: saliency maps, guided backpropagation, and gradient *ascent*
   that turns noise (class visualisation) or a photo (DeepDream) into an image the network likes,
   kept close to natural images by a prior (jitter, blur, L2 and total variation penalties).

Conventions: an ``image`` is one ``[C, H, W]`` tensor and ``images`` a batch ``[N, C, H, W]``; a model
takes a batch and returns logits ``[N, num_classes]``. A *layer* is named as in
``model.named_modules()`` (e.g. ``"features.3"``) or given as the module itself. Every function runs
the model in eval mode and puts each module's training flag back afterwards; the hooks it adds are
removed on the way out, also when the forward pass raises.
"""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

from .conv import receptive_field
from .train import evaluating
from .validate import floating, nonneg_int, pair, positive_int, tensor_rank

__all__ = [
    "first_layer_filters",
    "filter_grid",
    "feature_maps",
    "top_patches",
    "top_activations",
    "occlusion_map",
    "occlusion_experiment",
    "saliency_map",
    "guided_backprop",
    "total_variation",
    "class_visualization_step",
    "class_visualization",
    "deep_dream",
]


# ---------------------------------------------------------------------------------------------
# Shared plumbing: argument checks, eval mode, hooks
# ---------------------------------------------------------------------------------------------


def _check_image(image) -> torch.Tensor:
    return floating("image", tensor_rank("image", image, 3))


def _check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _real(name: str, value, positive: bool = False) -> float:
    """``value`` as a finite float that is >= 0 (or > 0 when ``positive``), else ``ValueError``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {kind} number, got {value!r}")
    return float(value)


def _check_logits(logits, target: int) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape [N, num_classes], got {shape}")
    if target >= logits.shape[1]:
        raise ValueError(f"target must be < {logits.shape[1]} (the model's number of classes), got {target}")


def _score(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """The raw logit of ``target`` for one image ``x`` ``[C, H, W]``: a 0-d tensor."""
    logits = model(x[None])
    _check_logits(logits, target)
    return logits[0, target]


@contextmanager
def _hooked(modules, hook):
    """Register ``hook`` as a forward hook on every module in ``modules``; always removed on exit."""
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _resolve_layer(model: nn.Module, layer) -> nn.Module:
    """The sub-module ``layer`` names (a ``named_modules()`` name) or is."""
    if isinstance(layer, nn.Module):
        if any(module is layer for module in model.modules()):
            return layer
        raise ValueError(f"layer must be a sub-module of model, got a {type(layer).__name__} that is not")
    modules = dict(model.named_modules())
    if isinstance(layer, str) and layer in modules:
        return modules[layer]
    names = ", ".join(repr(name) for name in modules if name)
    raise ValueError(f"layer {layer!r} is not a module of model; valid names: {names}")


class _StopForward(Exception):
    """Raised by a hook once the layer of interest has run: the rest of the network is not needed
    (and may not even accept the input, e.g. a classifier head on a smaller DeepDream octave)."""


@contextmanager
def _capture(module: nn.Module, stop: bool = False):
    """Collect ``module``'s outputs in the yielded list; with ``stop``, end the forward pass there."""
    outputs = []

    def hook(_module, _inputs, output):
        outputs.append(output)
        if stop:
            raise _StopForward

    with _hooked([module], hook):
        yield outputs


def _forward_until(model: nn.Module, module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``batch`` only as far as ``module`` and return that module's output."""
    with _capture(module, stop=True) as outputs:
        try:
            model(batch)
        except _StopForward:
            pass
    if not outputs:
        raise ValueError(f"layer {type(module).__name__} never ran in model's forward pass")
    if not isinstance(outputs[0], torch.Tensor):
        raise ValueError(f"layer must output a tensor, got {type(outputs[0]).__name__}")
    return outputs[0]


# ---------------------------------------------------------------------------------------------
# 1. Filters and feature maps
# ---------------------------------------------------------------------------------------------


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """Weights ``[O, C, kh, kw]`` of the first ``nn.Conv2d`` in ``model.modules()`` order (a detached copy)."""
    conv = next((m for m in _check_model(model).modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"model must contain an nn.Conv2d layer, got a {type(model).__name__} without one")
    return conv.weight.detach().clone()


def filter_grid(
    weights: torch.Tensor, ncols: int = 8, normalize: bool = True, padding: int = 1, pad_value: float = 1.0
) -> torch.Tensor:
    """Tile filters ``[O, C, kh, kw]`` into one image ``[3 or 1, H, W]`` for ``plt.imshow``.

    ``C == 3`` gives a colour grid of ``O`` tiles, ``C == 1`` a grey one; any other ``C`` shows each
    (filter, input channel) slice as its own grey tile, filter by filter. With ``normalize`` each
    *filter* is min-max scaled to [0, 1] on its own (a constant filter becomes 0), so weak filters are
    as visible as strong ones. Tiles are separated by ``padding`` pixels of ``pad_value``; rows hold
    ``ncols`` tiles. Output size: ``H = rows * (kh + padding) + padding``, likewise ``W``.
    """
    weights = floating("weights", tensor_rank("weights", weights, 4))
    ncols = positive_int("ncols", ncols)
    padding = nonneg_int("padding", padding)
    if normalize:
        low = weights.flatten(1).amin(1)[:, None, None, None]
        high = weights.flatten(1).amax(1)[:, None, None, None]
        weights = (weights - low) / (high - low).clamp_min(torch.finfo(weights.dtype).tiny)
    tiles = weights if weights.shape[1] in (1, 3) else weights.flatten(0, 1)[:, None]
    n, channels, kh, kw = tiles.shape
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    cell_h, cell_w = kh + padding, kw + padding
    # Each cell is a tile with its separator above and to the left; the grid is a reshape of the cells.
    cells = tiles.new_full((nrows * ncols, channels, cell_h, cell_w), pad_value)
    cells[:n, :, padding:, padding:] = tiles
    grid = cells.view(nrows, ncols, channels, cell_h, cell_w).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(channels, nrows * cell_h, ncols * cell_w)
    return F.pad(grid, (0, padding, 0, padding), value=pad_value)


def feature_maps(model: nn.Module, layer, images: torch.Tensor) -> torch.Tensor:
    """Output of ``layer`` for ``images`` ``[N, C, H, W]`` (or one image ``[C, H, W]``, then no batch dim).

    For a conv layer that is ``[N, O, h, w]``: one activation map per filter. The output is caught by a
    forward hook (removed afterwards, also on errors) and the forward pass stops right after the layer,
    so the layers behind it never run. Eval mode, no gradients.
    """
    images = floating("images", tensor_rank("images", images, (3, 4)))
    module = _resolve_layer(_check_model(model), layer)
    batch = images if images.dim() == 4 else images[None]
    with evaluating(model), torch.no_grad():
        out = _forward_until(model, module, batch)
    return out if images.dim() == 4 else out[0]


# ---------------------------------------------------------------------------------------------
# 2. Top patches per unit
# ---------------------------------------------------------------------------------------------

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _axis_params(module: nn.Module, axis: int) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, dilation) of a conv or pool layer along ``axis`` (0 = rows, 1 = cols)."""

    def along(value):
        return value[axis] if isinstance(value, (tuple, list)) else value

    kernel, stride = along(module.kernel_size), along(module.stride)
    dilation = along(getattr(module, "dilation", 1))  # pooling layers may have none
    padding = module.padding
    if padding == "valid":
        padding = 0
    elif padding == "same":  # torch puts the smaller half of the padding before the input
        padding = dilation * (kernel - 1) // 2
    return kernel, stride, along(padding), dilation


def _field_geometry(chain, axis: int) -> tuple[int, int, int]:
    """(size, jump, offset) along one axis for a unit after the conv/pool layers in ``chain``.

    Unit ``y`` of the last layer sees input pixels ``offset + y * jump ... offset + y * jump + size - 1``:
    each layer widens the field by ``(span - 1) * jump`` (span = dilation * (kernel - 1) + 1), multiplies
    the jump between neighbouring units by its stride, and its padding moves the first unit
    ``padding * jump`` pixels before the image's edge.
    """
    params = [_axis_params(module, axis) for module in chain]
    size = receptive_field([(d * (k - 1) + 1, s) for k, s, _, d in params])
    offset, jump = 0, 1
    for _, stride, padding, _ in params:
        offset -= padding * jump
        jump *= stride
    return size, jump, offset


def _crop(images: torch.Tensor, index, top, left, size) -> torch.Tensor:
    """Patches ``[K, C, sh, sw]`` of ``images[index]`` at (``top``, ``left``), zero outside the image."""
    selected = images[index]
    height, width = images.shape[-2:]
    sh, sw = size
    pad_top, pad_left = max(0, -int(top.min())), max(0, -int(left.min()))
    pad_bottom, pad_right = max(0, int(top.max()) + sh - height), max(0, int(left.max()) + sw - width)
    padded = F.pad(selected, (pad_left, pad_right, pad_top, pad_bottom))
    rows = (top + pad_top)[:, None] + torch.arange(sh, device=images.device)  # [K, sh]
    cols = (left + pad_left)[:, None] + torch.arange(sw, device=images.device)  # [K, sw]
    k, channels = selected.shape[:2]
    return padded[
        torch.arange(k, device=images.device)[:, None, None, None],
        torch.arange(channels, device=images.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def top_patches(
    model: nn.Module,
    layer,
    images: torch.Tensor,
    channel: int,
    k: int = 9,
    one_per_image: bool = True,
    inside: bool = False,
    batch_size: int = 256,
):
    """The ``k`` input patches that drive one unit of ``layer`` hardest, over a dataset.

    A *unit* is channel ``channel`` of ``layer``'s output ``[N, O, h, w]``; all its spatial positions
    share one filter, so each position is a candidate and scores its activation. With
    ``one_per_image`` (the default, as in Zeiler & Fergus's top-9 grids) each image contributes only its
    best position, so one image cannot fill the whole grid; ``one_per_image=False`` ranks every
    (image, position) pair.

    Each patch is the unit's receptive field in the input, computed from the ``nn.Conv2d``,
    ``nn.MaxPool2d`` and ``nn.AvgPool2d`` layers that run before the unit (in the order they run) with
    their kernel, stride, padding and dilation. This assumes those layers form a chain: with branches
    (Inception, ResNet) it stacks every branch's layers and overestimates the field. Pixels of the
    field beyond the image border (from padding) are zeros in the patch. With ``inside`` only units
    whose whole field lies inside the image compete: zero padding next to a bright border looks like
    a strong edge, and would otherwise fill an edge unit's grid with half-black patches.

    ``images``: ``[N, C, H, W]``, pushed through the model ``batch_size`` at a time, in eval mode.

    Returns ``(patches, scores, locations)``: ``patches`` ``[k, C, rh, rw]`` best first, ``scores``
    ``[k]`` their activations, ``locations`` ``[k, 3]`` long: image index, top row and left column of
    the patch in image pixels (negative when the field starts before the border).
    """
    images = floating("images", tensor_rank("images", images, 4))
    module = _resolve_layer(_check_model(model), layer)
    channel = nonneg_int("channel", channel)
    k = positive_int("k", k)
    batch_size = positive_int("batch_size", batch_size)
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got an empty batch")

    chain = []
    with evaluating(model), torch.no_grad():
        with _hooked([m for m in model.modules() if isinstance(m, _SPATIAL)], lambda m, i, o: chain.append(m)):
            probe = _forward_until(model, module, images[:1])
        if probe.dim() != 4:
            raise ValueError(f"layer must output [N, O, h, w] feature maps, got shape {tuple(probe.shape)}")
        if channel >= probe.shape[1]:
            raise ValueError(f"channel must be < {probe.shape[1]} (the layer's channels), got {channel}")
        h, w = probe.shape[-2:]
        (size_h, jump_h, offset_h), (size_w, jump_w, offset_w) = (_field_geometry(chain, axis) for axis in (0, 1))
        allowed = torch.ones(h, w, dtype=torch.bool, device=images.device)
        if inside:
            tops = offset_h + jump_h * torch.arange(h, device=images.device)
            lefts = offset_w + jump_w * torch.arange(w, device=images.device)
            rows_ok = (tops >= 0) & (tops + size_h <= images.shape[-2])
            cols_ok = (lefts >= 0) & (lefts + size_w <= images.shape[-1])
            allowed = rows_ok[:, None] & cols_ok[None, :]
        if not allowed.any():
            raise ValueError(f"inside=True leaves no unit: every {size_h}x{size_w} field crosses the image border")
        candidates = len(images) if one_per_image else len(images) * int(allowed.sum())
        if k > candidates:
            raise ValueError(f"k must be at most the number of candidates ({candidates}), got {k}")

        # Keep a running top-k of (score, image index, unit row, unit column) over the batches.
        best_scores = images.new_empty(0)
        best_where = torch.empty(0, 3, dtype=torch.long, device=images.device)
        for start in range(0, len(images), batch_size):
            act = _forward_until(model, module, images[start : start + batch_size])[:, channel]
            act = act.masked_fill(~allowed, -math.inf)
            index = torch.arange(len(act), device=images.device) + start
            if one_per_image:
                scores, flat = act.flatten(1).max(1)
            else:
                keep = allowed.flatten().repeat(len(act))
                scores, flat = act.flatten()[keep], (torch.arange(act.numel(), device=images.device) % (h * w))[keep]
                index = index.repeat_interleave(int(allowed.sum()))
            where = torch.stack([index, flat // w, flat % w], 1)
            best_scores, best_where = torch.cat([best_scores, scores]), torch.cat([best_where, where])
            keep = best_scores.topk(min(k, len(best_scores))).indices
            best_scores, best_where = best_scores[keep], best_where[keep]

    index, unit_y, unit_x = best_where.unbind(1)
    top, left = offset_h + unit_y * jump_h, offset_w + unit_x * jump_w
    patches = _crop(images, index, top, left, (size_h, size_w))
    return patches, best_scores, torch.stack([index, top, left], 1)


def top_activations(model: nn.Module, layer, images: torch.Tensor, channel: int, k: int = 9, batch_size: int = 256):
    """The ``k`` images of a dataset on which one feature map is most active, with the map on each.

    Zeiler & Fergus show, beside an occlusion experiment, "other activations from the same feature map":
    where else the map that was strongest on one image fires. The map is channel ``channel`` of
    ``layer``'s output ``[N, O, h, w]``; an image's score is the map's *total* activation (the sum over
    its positions, the measure :func:`occlusion_experiment` uses to pick the strongest map), where
    :func:`top_patches` ranks single positions. ``images`` ``[N, C, H, W]`` go through the model
    ``batch_size`` at a time, only as far as ``layer``, in eval mode without gradients.

    Returns ``(maps, scores, index)``: ``maps`` ``[k, h, w]``, the channel's activation map on each chosen
    image, best first; ``scores`` ``[k]``, their totals; ``index`` ``[k]`` long, the images' positions in
    ``images``.
    """
    images = floating("images", tensor_rank("images", images, 4))
    module = _resolve_layer(_check_model(model), layer)
    channel = nonneg_int("channel", channel)
    k = positive_int("k", k)
    batch_size = positive_int("batch_size", batch_size)
    if k > len(images):
        raise ValueError(f"k must be at most the number of images ({len(images)}), got {k}")

    # A running top-k over the batches, so memory holds k maps plus one batch.
    best_maps = best_scores = best_index = None
    with evaluating(model), torch.no_grad():
        for start in range(0, len(images), batch_size):
            out = _forward_until(model, module, images[start : start + batch_size])
            if out.dim() != 4:
                raise ValueError(f"layer must output [N, O, h, w] feature maps, got shape {tuple(out.shape)}")
            if channel >= out.shape[1]:
                raise ValueError(f"channel must be < {out.shape[1]} (the layer's channels), got {channel}")
            maps = out[:, channel]
            scores = maps.sum((-2, -1))
            index = torch.arange(start, start + len(maps), device=images.device)
            if best_maps is not None:
                maps, scores, index = torch.cat([best_maps, maps]), torch.cat([best_scores, scores]), torch.cat([best_index, index])
            keep = scores.topk(min(k, len(scores))).indices
            best_maps, best_scores, best_index = maps[keep], scores[keep], index[keep]
    return best_maps, best_scores, best_index


# ---------------------------------------------------------------------------------------------
# 3. The occlusion experiment
# ---------------------------------------------------------------------------------------------


def _occluded(image: torch.Tensor, tops, lefts, patch, fill) -> torch.Tensor:
    """Copies ``[B, C, H, W]`` of ``image`` with a ``patch`` square of ``fill`` at each (top, left)."""
    height, width = image.shape[-2:]
    ys = torch.arange(height, device=image.device)
    xs = torch.arange(width, device=image.device)
    in_rows = (ys >= tops[:, None]) & (ys < tops[:, None] + patch[0])  # [B, H]
    in_cols = (xs >= lefts[:, None]) & (xs < lefts[:, None] + patch[1])  # [B, W]
    covered = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # [B, 1, H, W]
    return torch.where(covered, fill, image)


def occlusion_experiment(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    patch_size,
    stride,
    fill=0.0,
    layer=None,
    batch_size: int = 256,
) -> dict:
    """Zeiler & Fergus's occlusion experiment: slide a square occluder over ``image`` ``[C, H, W]``.

    Occluder position (i, j) sets ``image[:, i*stride : i*stride+patch_size, j*stride : j*stride+patch_size]``
    to ``fill`` (a number, or a ``[C]`` tensor such as the dataset's mean colour); there are
    ``rows = (H - patch_size) // stride + 1`` by ``cols = (W - patch_size) // stride + 1`` positions
    (``patch_size`` and ``stride`` may be ``(height, width)`` pairs). All occluded copies, plus the
    clean image, go through the model ``batch_size`` at a time, in eval mode without gradients: a
    full map costs a few forward passes.

    Returns a dict:

    - ``"p_true"`` ``[rows, cols]``: softmax probability of ``target`` per position;
    - ``"top_class"`` ``[rows, cols]`` long: the most probable class per position;
    - ``"p_unoccluded"`` 0-d: probability of ``target`` for the clean image;
    - with ``layer``: ``"feature_map_index"`` (int), the channel of ``layer`` with the largest total
      (summed over positions) activation on the clean image, and ``"feature_activation"``
      ``[rows, cols]``, that channel's total activation per occluder position, caught by a hook in
      the same forward passes.
    """
    image = _check_image(image)
    target = nonneg_int("target", target)
    patch = pair("patch_size", patch_size)
    step = pair("stride", stride)
    batch_size = positive_int("batch_size", batch_size)
    _check_model(model)
    channels, height, width = image.shape
    if patch[0] > height or patch[1] > width:
        raise ValueError(f"patch_size must fit in the {height}x{width} image, got {patch_size!r}")
    if isinstance(fill, torch.Tensor):
        if fill.shape not in ((), (channels,)):
            raise ValueError(f"fill must be a number or a [{channels}] tensor, got shape {tuple(fill.shape)}")
        fill = fill.to(image.device, image.dtype).reshape(-1, 1, 1)
    elif isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise ValueError(f"fill must be a number or a tensor, got {fill!r}")
    module = None if layer is None else _resolve_layer(model, layer)

    rows, cols = (height - patch[0]) // step[0] + 1, (width - patch[1]) // step[1] + 1
    grid_y, grid_x = torch.meshgrid(
        torch.arange(rows, device=image.device) * step[0],
        torch.arange(cols, device=image.device) * step[1],
        indexing="ij",
    )
    # Position 0 puts the occluder just below the image: the clean image rides along in the first batch.
    tops = torch.cat([torch.tensor([height], device=image.device), grid_y.flatten()])
    lefts = torch.cat([torch.tensor([width], device=image.device), grid_x.flatten()])

    p_true, top_class, totals = [], [], []
    capture = nullcontext([]) if module is None else _capture(module)
    with evaluating(model), torch.no_grad(), capture as outputs:
        for start in range(0, len(tops), batch_size):
            chunk = slice(start, start + batch_size)
            logits = model(_occluded(image, tops[chunk], lefts[chunk], patch, fill))
            _check_logits(logits, target)
            probs = logits.softmax(-1)
            p_true.append(probs[:, target])
            top_class.append(probs.argmax(-1))
            if module is not None:
                act = outputs.pop()
                totals.append(act.reshape(len(act), act.shape[1], -1).sum(-1))  # [B, O]
                outputs.clear()

    p_true, top_class = torch.cat(p_true), torch.cat(top_class)
    result = {
        "p_true": p_true[1:].view(rows, cols),
        "top_class": top_class[1:].view(rows, cols),
        "p_unoccluded": p_true[0],
    }
    if module is not None:
        totals = torch.cat(totals)
        strongest = int(totals[0].argmax())
        result["feature_map_index"] = strongest
        result["feature_activation"] = totals[1:, strongest].reshape(rows, cols)
    return result


def occlusion_map(model: nn.Module, image: torch.Tensor, target: int, patch_size, stride, fill=0.0):
    """Probability of ``target`` ``[rows, cols]`` with the occluder at each position (i, j), which covers
    ``image[..., i*stride : i*stride+patch_size, j*stride : j*stride+patch_size]``;
    ``rows = (H - patch_size) // stride + 1``, likewise ``cols``. ``image``: ``[C, H, W]``.

    Batched (a few forward passes for the whole map), eval mode, no gradients; see
    :func:`occlusion_experiment` for the most probable class and feature-map maps.
    """
    return occlusion_experiment(model, image, target, patch_size, stride, fill)["p_true"]


# ---------------------------------------------------------------------------------------------
# 4. Gradients with respect to the input
# ---------------------------------------------------------------------------------------------


def saliency_map(model: nn.Module, image: torch.Tensor, target: int) -> torch.Tensor:
    """``|d score / d pixel|`` maximised over channels: ``[H, W]`` for an ``image`` ``[C, H, W]``.

    The score is the raw logit of ``target``, not its softmax probability: the probability also rises
    when other classes fall, the logit answers "what makes this class more likely" alone. The gradient
    is taken with ``torch.autograd.grad`` with respect to the input only, so no ``.grad`` is left on
    the model's parameters. Eval mode, training flags restored.
    """
    image = _check_image(image)
    target = nonneg_int("target", target)
    x = image.detach().requires_grad_()
    with evaluating(_check_model(model)), torch.enable_grad():
        (grad,) = torch.autograd.grad(_score(model, x, target), x)
    return grad.abs().amax(0)


class _GuidedReLUGrad(torch.autograd.Function):
    """Identity on the way forward; on the way back, only positive gradients pass."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()  # a fresh tensor, so an in-place ReLU's output is not modified twice

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


def guided_backprop(model: nn.Module, image: torch.Tensor, target: int) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al.): ``[C, H, W]``, the gradient of the ``target``
    logit with respect to ``image`` ``[C, H, W]``, except that every ``nn.ReLU`` passes a gradient back
    only where both its input and the incoming gradient are positive.

    A temporary forward hook on each ``nn.ReLU`` module (in-place ones too) appends an identity whose
    backward clamps the gradient at zero; the ReLU's own backward then zeroes positions whose input was
    negative. The hooks are removed afterwards. Functional calls (``F.relu``, ``torch.relu``) inside a
    ``forward`` are not modules and keep the ordinary gradient. Eval mode, training flags restored.
    """
    image = _check_image(image)
    target = nonneg_int("target", target)
    relus = [m for m in _check_model(model).modules() if isinstance(m, nn.ReLU)]
    x = image.detach().requires_grad_()
    with _hooked(relus, lambda m, i, out: _GuidedReLUGrad.apply(out)), evaluating(model), torch.enable_grad():
        (grad,) = torch.autograd.grad(_score(model, x, target), x)
    return grad


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Squared differences between vertical and horizontal neighbours, summed over ``[C, H, W]``.

    ``x``: ``[C, H, W]`` gives a 0-d tensor, ``[N, C, H, W]`` gives ``[N]``. Small for smooth images,
    large for noise: as a penalty it steers gradient ascent towards natural-looking images.
    """
    x = floating("x", tensor_rank("x", x, (3, 4)))
    down = (x[..., 1:, :] - x[..., :-1, :]).square().sum((-3, -2, -1))
    right = (x[..., :, 1:] - x[..., :, :-1]).square().sum((-3, -2, -1))
    return down + right


def _ascent_step(x: torch.Tensor, objective, lr: float) -> torch.Tensor:
    """``x + lr * g / (mean(|g|) + 1e-8)`` with ``g = d objective(x) / dx``: a step whose average pixel
    change is ``lr`` whatever the scale of the objective."""
    x = x.detach().requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(objective(x), x)
    return (x + lr * grad / (grad.abs().mean() + 1e-8)).detach()


def _jittered_step(x: torch.Tensor, objective, lr: float, jitter: int, generator: torch.Generator):
    """An ascent step on a copy of ``x`` shifted by up to ``jitter`` pixels (``torch.roll``, so nothing
    is lost at the borders), shifted back: the image cannot rely on exact pixel alignment."""
    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    x = _ascent_step(x.roll((dy, dx), dims=(-2, -1)), objective, lr)
    return x.roll((-dy, -dx), dims=(-2, -1))


def _class_objective(model, target, l2, tv, history=None):
    """``x -> score_target(x) - l2 * ||x||^2 - tv * total_variation(x)``, logging scores in ``history``."""

    def objective(x):
        score = _score(model, x, target)
        if history is not None:
            history.append(score.detach())
        return score - l2 * x.square().sum() - tv * total_variation(x)

    return objective


def class_visualization_step(model: nn.Module, image: torch.Tensor, target: int, lr: float, l2: float = 0.0):
    """One step of class-model visualisation: the updated image ``[C, H, W]`` (``image`` is unchanged).

    With ``s(x)`` the raw ``target`` logit of the model (eval mode) for ``x`` = ``image``::

        g     = d/dx [ s(x) - l2 * sum(x ** 2) ]
        x_new = x + lr * g / (mean(|g|) + 1e-8)

    Dividing by the mean absolute gradient makes ``lr`` the average change per pixel, independent of
    how large the logit's gradient happens to be.
    """
    image = _check_image(image)
    target = nonneg_int("target", target)
    lr, l2 = _real("lr", lr, positive=True), _real("l2", l2)
    with evaluating(_check_model(model)):
        return _ascent_step(image, _class_objective(model, target, l2, 0.0), lr)


def _model_device_dtype(model: nn.Module):
    tensor = next((t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), None)
    if tensor is None:
        return torch.device("cpu"), torch.get_default_dtype()
    return tensor.device, tensor.dtype


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``[C, H, W]``, the kernel (about 3 sigma each side) capped to fit the image."""
    limit = min(x.shape[-2:])
    kernel = min(2 * math.ceil(3 * sigma) + 1, limit - 1 + limit % 2)
    return TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def class_visualization(
    model: nn.Module,
    target: int,
    shape,
    steps: int = 200,
    lr: float = 0.1,
    l2: float = 0.03,
    tv: float = 0.03,
    jitter: int = 2,
    blur_every: int = 10,
    blur_sigma: float = 0.5,
    init: torch.Tensor | None = None,
    value_range=None,
    seed: int = 0,
    progress: bool = False,
):
    """Class-model visualisation: gradient ascent on the input towards an image the model finds
    typical of class ``target``, from small noise (or ``init``), with a natural-image prior.

    Each of the ``steps`` iterations takes one normalised ascent step (see
    :func:`class_visualization_step`) on ``s(x) - l2 * sum(x ** 2) - tv * total_variation(x)`` with
    the image rolled by a random shift of up to ``jitter`` pixels (and rolled back); every
    ``blur_every`` steps (0: never) the image is blurred with a Gaussian of ``blur_sigma``; with
    ``value_range=(low, high)`` it is clamped to that range after every step. Noise and shifts come
    from a generator seeded with ``seed``, so a run is reproducible.

    ``shape``: ``(C, H, W)``. The image is created on the model's device and dtype, or ``init``'s.
    Returns ``(image [C, H, W], history [steps])``, ``history[t]`` the target logit of the (shifted)
    image at step ``t``. ``progress`` prints the score ten times along the way.

    The penalties compete with the logit's gradient, so their best weights depend on the model: the
    defaults suit a trained model on images scaled to about [0, 1]; a model with small gradients (e.g.
    untrained) needs smaller ``l2`` and ``tv``, or the prior wins and the image shrinks towards zero.
    """
    _check_model(model)
    target = nonneg_int("target", target)
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape!r}")
    shape = tuple(positive_int("shape", s) for s in shape)
    steps, jitter = positive_int("steps", steps), nonneg_int("jitter", jitter)
    blur_every = nonneg_int("blur_every", blur_every)
    lr, l2, tv = _real("lr", lr, positive=True), _real("l2", l2), _real("tv", tv)
    blur_sigma = _real("blur_sigma", blur_sigma, positive=True)
    generator = torch.Generator().manual_seed(nonneg_int("seed", seed))
    if init is None:
        device, dtype = _model_device_dtype(model)
        x = (0.1 * torch.randn(shape, generator=generator)).to(device, dtype)
    else:
        x = _check_image(init).detach().clone()
        if tuple(x.shape) != shape:
            raise ValueError(f"init must have shape {shape}, got {tuple(x.shape)}")

    history = []
    objective = _class_objective(model, target, l2, tv, history)
    with evaluating(model):
        for step in range(steps):
            x = _jittered_step(x, objective, lr, jitter, generator)
            if blur_every and (step + 1) % blur_every == 0:
                x = _blur(x, blur_sigma)
            if value_range is not None:
                x = x.clamp(*value_range)
            if progress and (step + 1) % max(1, steps // 10) == 0:
                print(f"step {step + 1}/{steps}: logit of class {target} = {history[-1].item():.3f}")
    return x, torch.stack(history)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def deep_dream(
    model: nn.Module,
    image: torch.Tensor,
    layer,
    steps: int = 10,
    lr: float = 0.05,
    octaves: int = 3,
    octave_scale: float = 1.4,
    jitter: int = 2,
    value_range=None,
    seed: int = 0,
) -> torch.Tensor:
    """DeepDream: amplify whatever ``layer`` already sees in ``image`` ``[C, H, W]``; returns ``[C, H, W]``.

    The objective is the mean squared activation of ``layer`` (its squared L2 norm up to a constant,
    which the normalised step of :func:`class_visualization_step` ignores), maximised by jittered
    ascent steps. Octaves: the image is processed at ``octaves`` sizes, each ``octave_scale`` times
    larger than the last and ending at full size; the detail added at one size is upscaled and added
    to the next, so patterns appear at several scales. The forward pass stops at ``layer``, so the
    network's head never sees the smaller octaves. ``value_range=(low, high)`` clamps after each step.
    """
    image = _check_image(image)
    module = _resolve_layer(_check_model(model), layer)
    steps, octaves = positive_int("steps", steps), positive_int("octaves", octaves)
    jitter = nonneg_int("jitter", jitter)
    lr = _real("lr", lr, positive=True)
    if _real("octave_scale", octave_scale) < 1:
        raise ValueError(f"octave_scale must be >= 1, got {octave_scale!r}")
    height, width = image.shape[-2:]
    scales = [octave_scale**i for i in reversed(range(octaves))]  # smallest octave first
    sizes = [(round(height / scale), round(width / scale)) for scale in scales]
    if min(sizes[0]) < 1:
        raise ValueError(f"octaves={octaves} shrinks the {height}x{width} image below one pixel")
    generator = torch.Generator().manual_seed(nonneg_int("seed", seed))

    def objective(x):
        return _forward_until(model, module, x[None]).square().mean()

    detail = torch.zeros_like(image)
    with evaluating(model):
        for size in sizes:
            base = _resize(image.detach(), size)
            x = base + _resize(detail, size)
            for _ in range(steps):
                x = _jittered_step(x, objective, lr, jitter, generator)
                if value_range is not None:
                    x = x.clamp(*value_range)
            detail = x - base
    return x
