"""Lecture 04's figures: the occlusion experiment (with an explorer) and one feature map's top activations."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from ..plot import layout
from ..validate import pair
from ._interact import interact

__all__ = ["draw_occlusion", "occlusion_explorer", "draw_top_activations"]


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

    from ..plot import to_numpy_image
    from ..visualize import occlusion_experiment

    result = occlusion_experiment(model, image, target, patch_size, stride, fill, layer=layer)
    patch, step = pair("patch_size", patch_size), pair("stride", stride)
    p_true, top_class = result["p_true"].cpu(), result["top_class"].cpu()
    rows, cols = p_true.shape
    extent = _position_extent(rows, cols, patch, step)
    names = list(class_names) if class_names is not None else None
    name = (lambda k: names[k]) if names else str

    panels = 4 if layer is not None else 3
    if axes is None:
        _, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.2), layout=layout())
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
        draw_occlusion(model, image, target, patch_size, stride, fill, layer=layer, class_names=class_names)

    return interact(
        show,
        patch_size=w.IntSlider(max(1, size // 4), 1, size, description="patch size", continuous_update=False),
        stride=w.IntSlider(max(1, size // 16), 1, max(1, size // 4), description="stride", continuous_update=False),
        fill=w.FloatSlider(low, min=low, max=high, step=(high - low) / 20 or 0.1, description="fill", continuous_update=False),
    )




def draw_top_activations(model, layer, images, channel: int, k: int = 9, labels=None, inside: bool = True, axes=None):
    """One feature map over a dataset, drawn two ways ("other activations from the same feature map").

    Top row: the ``k`` input patches (receptive fields) on which one unit of channel ``channel`` of
    ``layer`` responds most, one per image (:func:`course_lib.visualize.top_patches`, with ``inside`` as
    there). Bottom row: the ``k`` images on which the whole map's total activation is largest
    (:func:`course_lib.visualize.top_activations`), with the map stretched over each image (brighter =
    more active; one colour scale for the row). ``images``: ``[N, C, H, W]``, shown as they are, so keep
    them in [0, 1]; ``labels``: one name per image (e.g. its source photo) for the titles.
    Returns ``(axes, patches, activations)``: the ``[2, k]`` axes and the two functions' results.
    """
    from ..plot import to_numpy_image
    from ..visualize import top_activations, top_patches

    patches = top_patches(model, layer, images, channel, k=k, inside=inside)
    activations = top_activations(model, layer, images, channel, k=k)
    name = (lambda i: str(labels[i])) if labels is not None else (lambda i: f"image {i}")
    if axes is None:
        _, axes = plt.subplots(2, k, figsize=(1.6 * k, 4.0), layout=layout(), squeeze=False)
    for ax, patch, score, where in zip(axes[0], *patches):
        ax.imshow(to_numpy_image(patch).clip(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name(int(where[0]))}\nunit: {float(score):.3g}", fontsize=8)
    maps, scores, index = (t.detach().cpu() for t in activations)
    low, high = min(0.0, float(maps.min())), float(maps.max())
    height, width = images.shape[-2:]
    for ax, fmap, score, i in zip(axes[1], maps, scores, index.tolist()):
        ax.imshow(to_numpy_image(images[i]).clip(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.imshow(fmap.numpy(), cmap="magma", alpha=0.6, vmin=low, vmax=high,
                  extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="bilinear")
        ax.set_title(f"{name(i)}\ntotal: {float(score):.3g}", fontsize=8)
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    axes[0][0].set_ylabel("top patches\n(one unit)", fontsize=9)
    axes[1][0].set_ylabel("top images\n(whole map)", fontsize=9)
    return axes, patches, activations
