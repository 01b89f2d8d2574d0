"""Interactive explorers (ipywidgets). Each one only wires sliders to a plain drawing function that a
notebook can also call directly, so nothing depends on widgets being available or rendered."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from .conv import conv_output_size
from .pooling import avg_pool2d, max_pool2d
from .validate import pair

__all__ = ["draw_windows", "draw_pooling", "conv_explorer", "pooling_explorer"]

_COLOURS = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple"]


def draw_windows(size: int = 7, kernel: int = 3, stride: int = 1, padding: int = 0, dilation: int = 1, ax=None):
    """Draw a ``size x size`` input (grey border = zero padding) and the first windows of a kernel.

    The first few positions along the top row are outlined in colour, their taps filled, and the
    title gives the output size. Returns the axes.
    """
    out = conv_output_size(size, kernel, stride, padding, dilation)
    full = size + 2 * padding
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    for r in range(full):
        for c in range(full):
            is_pad = not (padding <= r < padding + size and padding <= c < padding + size)
            ax.add_patch(Rectangle((c, r), 1, 1, facecolor="0.85" if is_pad else "white", edgecolor="0.6", lw=0.8))
    span = dilation * (kernel - 1) + 1
    for k, j in enumerate(range(min(out, len(_COLOURS)))):
        colour = _COLOURS[k]
        x0 = j * stride
        ax.add_patch(Rectangle((x0 + 0.06 * k, 0.06 * k), span - 0.12 * k, span - 0.12 * k, fill=False, edgecolor=colour, lw=2.2))
        for a in range(kernel):
            for b in range(kernel):
                ax.add_patch(Rectangle((x0 + b * dilation + 0.3, a * dilation + 0.3), 0.4, 0.4, color=colour, alpha=0.5))
    ax.set_xlim(0, full)
    ax.set_ylim(full, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("input column (grey: zero padding)")
    ax.set_ylabel("input row")
    ax.set_title(
        f"input {size}x{size}, kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation}\n"
        f"-> output {out}x{out} (first {min(out, len(_COLOURS))} windows of the top row shown)",
        fontsize=9,
    )
    return ax


def draw_pooling(x: torch.Tensor, kernel=2, stride=None, mode: str = "max", axes=None):
    """Draw one ``[H, W]`` slice with its pooling windows and the pooled output, values written in.

    For max pooling the winner of each window is outlined: the only input its gradient reaches.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D [H, W] tensor, got {getattr(x, 'shape', type(x))}")
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    kh, kw = pair("kernel", kernel)
    sh, sw = (kh, kw) if stride is None else pair("stride", stride)
    pool = max_pool2d if mode == "max" else avg_pool2d
    x = x.detach().float().cpu()
    out = pool(x[None, None], (kh, kw), (sh, sw))[0, 0]
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(8, 4), gridspec_kw={"width_ratios": [x.shape[1], max(out.shape[1], 1)]})
    left, right = axes
    left.imshow(x.numpy(), cmap="Greys", alpha=0.35)
    for (r, c), value in zip(torch.cartesian_prod(torch.arange(x.shape[0]), torch.arange(x.shape[1])).tolist(), x.flatten().tolist()):
        left.text(c, r, f"{value:g}", ha="center", va="center", fontsize=9)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            colour = _COLOURS[(i * out.shape[1] + j) % len(_COLOURS)]
            left.add_patch(Rectangle((j * sw - 0.5, i * sh - 0.5), kw, kh, fill=False, edgecolor=colour, lw=2))
            if mode == "max":
                window = x[i * sh : i * sh + kh, j * sw : j * sw + kw]
                flat = int(window.flatten().argmax())
                left.add_patch(Rectangle((j * sw + flat % kw - 0.4, i * sh + flat // kw - 0.4), 0.8, 0.8, fill=False, edgecolor=colour, lw=1, ls="--"))
            right.text(j, i, f"{float(out[i, j]):.3g}", ha="center", va="center", fontsize=10, color=colour)
    right.imshow(out.numpy(), cmap="Greys", alpha=0.35)
    left.set(title=f"input {tuple(x.shape)}: {kh}x{kw} windows, stride {sh}x{sw}", xlabel="column", ylabel="row")
    right.set(title=f"{mode} pooled {tuple(out.shape)}", xlabel="column", ylabel="row")
    for ax in axes:
        ax.set_xticks(range(ax.get_images()[0].get_array().shape[1]))
        ax.set_yticks(range(ax.get_images()[0].get_array().shape[0]))
    return axes


def conv_explorer():
    """Sliders for input size, kernel, stride, padding and dilation over :func:`draw_windows`."""
    import ipywidgets as w

    def show(size, kernel, stride, padding, dilation):
        try:
            draw_windows(size, kernel, stride, padding, dilation)
            plt.show()
        except ValueError as err:  # e.g. a kernel larger than the padded input: explain, don't crash
            print(err)

    return w.interact(
        show,
        size=w.IntSlider(7, 1, 16, description="input"),
        kernel=w.IntSlider(3, 1, 7, description="kernel"),
        stride=w.IntSlider(1, 1, 4, description="stride"),
        padding=w.IntSlider(0, 0, 3, description="padding"),
        dilation=w.IntSlider(1, 1, 3, description="dilation"),
    )


def pooling_explorer(x: torch.Tensor | None = None):
    """Sliders for kernel and stride and a max/avg toggle over :func:`draw_pooling`."""
    import ipywidgets as w

    if x is None:
        x = torch.randint(0, 10, (6, 6), generator=torch.Generator().manual_seed(0)).float()

    def show(kernel, stride, mode):
        try:
            draw_pooling(x, kernel, stride, mode)
            plt.show()
        except ValueError as err:
            print(err)

    return w.interact(
        show,
        kernel=w.IntSlider(2, 1, min(x.shape), description="kernel"),
        stride=w.IntSlider(2, 1, min(x.shape), description="stride"),
        mode=w.ToggleButtons(options=["max", "avg"], description="mode"),
    )


# --- lecture 03: architecture explorer ------------------------------------------------------------

__all__ += ["ARCHITECTURES", "architecture_table", "architecture_explorer"]

#: Models of lecture 03 by name: (builder, input channels). Built on the meta device, so even
#: 140 million parameters cost no memory or time.
ARCHITECTURES = {
    "lenet5": ("lenet5", (), 1),
    "alexnet": ("alexnet", (), 3),
    **{f"vgg {config}": ("vgg", (config,), 3) for config in "ABCDE"},
    "googlenet": ("googlenet", (), 3),
    **{f"resnet{depth}": ("resnet", (depth,), 3) for depth in (18, 34, 50, 101, 152)},
}


def architecture_table(name: str = "resnet18", size: int = 224, max_depth: int | None = None) -> str:
    """Layer table (:func:`course_lib.architectures.layer_table`) of the architecture ``name`` (a key of
    :data:`ARCHITECTURES`) for a ``size x size`` input, with the totals: parameters, output shape and the
    receptive field of the last windowed layer. ``max_depth=1`` gives one row per top-level block."""
    from . import architectures

    if name not in ARCHITECTURES:
        raise ValueError(f"name must be one of {list(ARCHITECTURES)}, got {name!r}")
    builder, args, channels = ARCHITECTURES[name]
    with torch.device("meta"):
        model = getattr(architectures, builder)(*args)
    rows = architectures.layer_table(model, (channels, size, size), max_depth=max_depth)
    fields = [r["receptive_field"] for r in rows if r["receptive_field"] is not None]
    output = "x".join(map(str, rows[-1]["output_shape"]))
    field = f"{fields[-1][0]}x{fields[-1][1]}" if fields else "none"
    return (
        f"{name} on a {channels}x{size}x{size} input\n{architectures.format_layer_table(rows)}\n"
        f"output {output} | receptive field of the last conv/pool layer {field} pixels | "
        f"all parameters (count_parameters): {architectures.count_parameters(model):,}"
    )


def architecture_explorer():
    """A model menu, an input-size slider and a depth toggle over :func:`architecture_table`."""
    import ipywidgets as w

    def show(name, size, max_depth):
        try:
            print(architecture_table(name, size, None if max_depth == "every layer" else max_depth))
        except ValueError as err:  # e.g. an input too small for the network, or LeNet's fixed 32x32
            print(err)

    return w.interact(
        show,
        name=w.Dropdown(options=list(ARCHITECTURES), value="resnet18", description="model"),
        size=w.IntSlider(224, 32, 320, step=16, description="input size"),
        max_depth=w.ToggleButtons(options=[1, 2, "every layer"], value=1, description="rows"),
    )


# --- lecture 04: occlusion explorer ------------------------------------------------------------

__all__ += ["draw_occlusion", "occlusion_explorer"]


def _position_extent(rows: int, cols: int, patch, stride):
    """``imshow`` extent that puts map cell (i, j) over the centre of the occluder it stands for."""
    (ph, pw), (sh, sw) = patch, stride
    left, top = pw / 2 - 0.5, ph / 2 - 0.5  # centre of the first occluder (pixel centres are integers)
    return (left - sw / 2, left + (cols - 0.5) * sw, top + (rows - 0.5) * sh, top - sh / 2)


def draw_occlusion(model, image, target: int, patch_size=8, stride=2, fill=0.0, layer=None, class_names=None, axes=None):
    """The occlusion experiment in one figure: the input, then per occluder position the probability of
    ``target``, the most probable class (a legend names each class that appears) and, with ``layer``,
    the total activation of that layer's strongest feature map.

    ``image``: ``[C, H, W]`` in the range the model expects (shown as is, so keep it in [0, 1]). The
    maps are drawn in image coordinates: each cell sits over the centre of its occluder. The input
    panel outlines the occluder that lowers ``p(target)`` most. Returns ``(axes, result)`` with
    ``result`` the dict of :func:`course_lib.visualize.occlusion_experiment`.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap

    from .plot import to_numpy_image
    from .visualize import occlusion_experiment

    result = occlusion_experiment(model, image, target, patch_size, stride, fill, layer=layer)
    patch, step = pair("patch_size", patch_size), pair("stride", stride)
    p_true, top_class = result["p_true"].cpu(), result["top_class"].cpu()
    rows, cols = p_true.shape
    extent = _position_extent(rows, cols, patch, step)
    names = list(class_names) if class_names is not None else None
    name = (lambda k: names[k]) if names else str

    panels = 4 if layer is not None else 3
    if axes is None:
        _, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4))
    axes[0].imshow(to_numpy_image(image).clip(0, 1), cmap="gray", vmin=0, vmax=1)
    worst = int(p_true.argmin())
    i, j = divmod(worst, cols)
    axes[0].add_patch(Rectangle((j * step[1] - 0.5, i * step[0] - 0.5), patch[1], patch[0], fill=False, edgecolor="red", lw=2))
    axes[0].set(title=f"input, target class {name(target)}\n(red: the occluder that hurts most)", xlabel="column (pixels)", ylabel="row (pixels)")

    handle = axes[1].imshow(p_true.numpy(), cmap="magma", vmin=0, vmax=1, extent=extent)
    axes[1].figure.colorbar(handle, ax=axes[1], fraction=0.046, pad=0.04, label=f"p({name(target)})")
    axes[1].set(title=f"p({name(target)}) per occluder position\nunoccluded {float(result['p_unoccluded']):.2f}, lowest {float(p_true.min()):.2f}")

    classes, counts = top_class.unique(return_counts=True)
    order = counts.argsort(descending=True)[:10]  # a legend of ten classes at most, the most frequent
    classes = classes[order].tolist()
    colours = plt.get_cmap("tab10").colors
    index = torch.full_like(top_class, len(classes))  # classes beyond the ten: grey
    for k, c in enumerate(classes):
        index[top_class == c] = k
    cmap = ListedColormap([colours[k] for k in range(len(classes))] + ["0.6"])
    axes[2].imshow(index.numpy(), cmap=cmap, norm=BoundaryNorm(range(len(classes) + 2), cmap.N), extent=extent)
    axes[2].legend(handles=[Rectangle((0, 0), 1, 1, color=colours[k]) for k in range(len(classes))],
                   labels=[name(c) for c in classes], title="most probable", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    axes[2].set(title="most probable class per occluder position")

    if layer is not None:
        handle = axes[3].imshow(result["feature_activation"].cpu().numpy(), cmap="viridis", extent=extent)
        axes[3].figure.colorbar(handle, ax=axes[3], fraction=0.046, pad=0.04, label="summed activation")
        axes[3].set(title=f"{layer if isinstance(layer, str) else type(layer).__name__}: strongest map "
                          f"(channel {result['feature_map_index']}),\ntotal activation per occluder position")
    height, width = image.shape[-2:]
    for ax in axes[1:]:
        ax.set(xlabel="occluder centre, column (pixels)", ylabel="occluder centre, row (pixels)",
               xlim=(-0.5, width - 0.5), ylim=(height - 0.5, -0.5))
    return axes, result


def occlusion_explorer(model, image, target: int, layer=None, class_names=None):
    """Sliders for the occluder's size, stride and fill value over :func:`draw_occlusion`."""
    import ipywidgets as w

    low, high = float(image.min()), float(image.max())
    size = min(image.shape[-2:])

    def show(patch_size, stride, fill):
        try:
            draw_occlusion(model, image, target, patch_size, stride, fill, layer=layer, class_names=class_names)
            plt.tight_layout()
            plt.show()
        except ValueError as err:
            print(err)

    return w.interact(
        show,
        patch_size=w.IntSlider(max(1, size // 4), 1, size, description="patch size", continuous_update=False),
        stride=w.IntSlider(max(1, size // 16), 1, max(1, size // 4), description="stride", continuous_update=False),
        fill=w.FloatSlider(low, min=low, max=high, step=(high - low) / 20 or 0.1, description="fill", continuous_update=False),
    )


# --- lecture 06: boxes on scenes, and a detector's score threshold and NMS --------------------------

__all__ += ["draw_boxes", "draw_detections_filtered", "detection_explorer"]

_CLASS_COLOURS = ["0.5", "tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan", "tab:pink"]


def draw_boxes(image, boxes, labels=None, scores=None, class_names=None, ax=None, title: str = "", colour=None,
               linestyle="-", linewidth: float = 1.5, text: bool = True):
    """Draw ``image`` ``[3, H, W]`` (or ``[H, W]``) with ``boxes`` ``[K, 4]`` (x1, y1, x2, y2 pixel corners).

    ``labels`` ``[K]`` pick each box's colour and name (``class_names[label]``); ``scores`` ``[K]`` are
    written after the name. ``image=None`` draws on ``ax`` as it is (to add boxes to a drawn image).
    A box ``[x1, x2)`` covers pixels ``x1 .. x2 - 1``, whose centres ``imshow`` puts at integers, so its
    outline runs along the pixels' outer edges. Returns the axes.
    """
    from .plot import to_numpy_image

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    if image is not None:
        ax.imshow(to_numpy_image(image).clip(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
    boxes = boxes.detach().cpu().reshape(-1, 4)
    labels = labels.detach().cpu().tolist() if labels is not None else [None] * len(boxes)
    scores = scores.detach().cpu().tolist() if scores is not None else [None] * len(boxes)
    for (x1, y1, x2, y2), label, score in zip(boxes.tolist(), labels, scores):
        edge = colour or _CLASS_COLOURS[(label or 0) % len(_CLASS_COLOURS)]
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=edge, lw=linewidth, ls=linestyle))
        words = [class_names[label] if class_names is not None and label is not None else label, score]
        words = [f"{w:.2f}" if isinstance(w, float) else str(w) for w in words if w is not None]
        if text and words:
            ax.text(x1 - 0.5, y1 - 1.0, " ".join(words), color="white", fontsize=7, va="bottom",
                    bbox=dict(facecolor=edge, edgecolor="none", pad=0.8, alpha=0.85))
    if title:
        ax.set_title(title)
    return ax


def draw_detections_filtered(image, detections, score_threshold: float = 0.5, nms_threshold: float = 0.5,
                             class_names=None, gt_boxes=None, ax=None):
    """Apply a detector's last two steps to its raw output and draw what survives.

    ``detections``: ``{"boxes" [D, 4], "labels" [D], "scores" [D]}`` for ``image``, before any
    thresholding or NMS (``course_lib.detection.set_postprocessing(model, 0.0, 1.0, 1000)`` exposes
    them). Keeps the boxes scoring above ``score_threshold``, then runs per-class NMS
    (:func:`course_lib.detection.batched_nms`) at ``nms_threshold`` (1.0 switches it off). Ground-truth
    boxes ``gt_boxes`` ``[G, 4]``, if given, are drawn dashed in white. Returns ``(ax, kept)``, ``kept``
    the indices ``[k]`` into ``detections`` by decreasing score.
    """
    from .detection import batched_nms

    scores = detections["scores"]
    candidates = torch.nonzero(scores > score_threshold).flatten()
    kept = candidates[batched_nms(detections["boxes"][candidates], scores[candidates],
                                  detections["labels"][candidates], nms_threshold)]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    draw_boxes(image, detections["boxes"][kept], detections["labels"][kept], scores[kept], class_names, ax=ax,
               text=len(kept) <= 12)
    if gt_boxes is not None:
        draw_boxes(None, gt_boxes, ax=ax, colour="white", linestyle="--", linewidth=1.0)
    ax.set_title(f"score > {score_threshold:.2f}, NMS at IoU {nms_threshold:.2f}:\n"
                 f"{len(kept)} of {len(scores)} raw boxes kept", fontsize=10)
    return ax, kept


def detection_explorer(model, image, class_names=None, gt_boxes=None):
    """Score-threshold and NMS-IoU sliders over a detector's raw detections on ``image`` ``[3, H, W]``.

    The detector runs once, with its own threshold and NMS switched off; the sliders then redo only
    :func:`draw_detections_filtered`. The model's post-processing settings are restored afterwards.
    """
    import ipywidgets as w

    from .detection import predict, set_postprocessing

    previous = set_postprocessing(model, 0.0, 1.0, 1000)
    try:
        raw = predict(model, image[None])[0]
    finally:
        set_postprocessing(model, *previous)

    def show(score_threshold, nms_threshold):
        draw_detections_filtered(image, raw, score_threshold, nms_threshold, class_names, gt_boxes)
        plt.show()

    return w.interact(
        show,
        score_threshold=w.FloatSlider(0.5, min=0.0, max=0.99, step=0.01, description="score >", continuous_update=False),
        nms_threshold=w.FloatSlider(0.5, min=0.05, max=1.0, step=0.05, description="NMS IoU", continuous_update=False),
    )
