"""Explorer of lecture 08: skeletons, a joint's disk target of radius r, and how a decoder reads a
predicted heatmap."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Circle

from ..data.figures import JOINTS, SIDE, SKELETON
from ._interact import interact

__all__ = ["draw_skeleton", "draw_pose_heatmap", "pose_explorer"]

_SIDE_COLOURS = {1: "tab:orange", -1: "tab:blue", 0: "white"}  # the figure's left, right, middle


def draw_skeleton(image, keypoints, visible=None, ax=None, title: str = "", colour=None, linestyle: str = "-",
                  marker: str = "o", size: float = 16.0):
    """Draw ``image`` ``[3, H, W]`` (``None``: draw on ``ax`` as it is) and the skeleton of ``keypoints``
    ``[K, 2]`` ``(x, y)`` over it.

    Bones and joints are coloured by side (the figure's left orange, right blue, head and neck white)
    unless ``colour`` is given; with a round ``marker``, visible joints are filled and occluded or
    outside ones (``visible`` False) hollow. Pixel centres are at integer coordinates, as ``imshow`` draws them. Returns the axes.
    """
    from ..plot import to_numpy_image

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    if image is not None:
        ax.imshow(to_numpy_image(image).clip(0, 1))
        ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
        height, width = image.shape[-2:]
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
    kp = keypoints.detach().float().cpu().numpy()
    seen = [True] * len(kp) if visible is None else visible.detach().cpu().tolist()
    for a, b in SKELETON:
        side = SIDE[a] if SIDE[a] else SIDE[b]
        ax.plot(kp[[a, b], 0], kp[[a, b], 1], color=colour or _SIDE_COLOURS[side], lw=1.6, ls=linestyle, alpha=0.9)
    for k, (x, y) in enumerate(kp.tolist()):
        edge = colour or _SIDE_COLOURS[SIDE[k]]
        if marker in ("x", "+"):  # line markers have no face to leave hollow
            ax.scatter([x], [y], s=size, marker=marker, color=edge, linewidths=1.2, zorder=3)
        else:
            ax.scatter([x], [y], s=size, marker=marker, edgecolors=edge, linewidths=1.2,
                       facecolors=edge if seen[k] else "none", zorder=3)
    if title:
        ax.set_title(title)
    return ax


def draw_pose_heatmap(image, keypoints, joint: int = 0, radius: float = 2.0, logits=None, decoder: str = "centre",
                      visible=None, axes=None):
    """One joint of one figure, in two or three panels: the figure with its skeleton and the joint
    ringed; the joint's disk target of ``radius`` (yellow pixels, with the circle of radius ``r`` whose
    rim they reach) over the dimmed image; and, when the network's ``logits``
    ``[K, H, W]`` for this image are given, the predicted probability map of the joint with the true
    point (+) and the point ``decoder`` reads from it (x, one of :data:`course_lib.pose.DECODERS`), the
    distance between them in the title. Returns the axes."""
    from .. import pose
    from ..plot import to_numpy_image

    if not isinstance(joint, int) or not 0 <= joint < len(JOINTS):
        raise ValueError(f"joint must be an index into JOINTS (0 to {len(JOINTS) - 1}), got {joint!r}")
    height, width = image.shape[-2:]
    panels = 2 if logits is None else 3
    if axes is None:
        _, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.8))
    name = JOINTS[joint].replace("_", " ")
    x, y = keypoints[joint].tolist()
    draw_skeleton(image, keypoints, visible, ax=axes[0], title=f"{name} at ({x:.1f}, {y:.1f})")
    axes[0].scatter([x], [y], s=160, facecolors="none", edgecolors="yellow", linewidths=2, zorder=4)
    target = pose.disk_heatmaps(keypoints[joint : joint + 1].float().cpu(), height, width, radius)[0].numpy()
    axes[1].imshow(to_numpy_image(image).clip(0, 1) * 0.5)  # dimmed, so the target stands out
    overlay = np.zeros((height, width, 4))
    overlay[..., :3] = (1.0, 1.0, 0.0)
    overlay[..., 3] = target
    axes[1].imshow(overlay)
    axes[1].add_patch(Circle((x, y), radius, fill=False, edgecolor="cyan", lw=1.2))
    axes[1].set(title=f"disk target, r = {radius:g}: {int(target.sum())} pixels\n(cyan: the circle of radius r)",
                xlabel="x (pixels)", ylabel="y (pixels)")
    if logits is not None:
        probability = torch.sigmoid(logits[joint].detach().float().cpu()).numpy()
        found = pose.decode_predictions(logits[joint : joint + 1].detach().float().cpu(), decoder)[0]
        error = float((found - keypoints[joint].float().cpu()).norm())
        handle = axes[2].imshow(probability, cmap="magma", vmin=0, vmax=1)
        axes[2].figure.colorbar(handle, ax=axes[2], fraction=0.046, pad=0.04, label="predicted probability")
        axes[2].scatter([x], [y], marker="+", s=120, c="cyan", linewidths=2, label="true")
        axes[2].scatter([float(found[0])], [float(found[1])], marker="x", s=80, c="lime", linewidths=2, label=decoder)
        axes[2].legend(loc="lower right", fontsize=7)
        axes[2].set(title=f"prediction, {decoder}: {error:.2f} px off", xlabel="x (pixels)", ylabel="y (pixels)")
    return axes


def pose_explorer(images, keypoints, visible=None, logits=None):
    """Sliders over :func:`draw_pose_heatmap`: which figure of ``images`` ``[N, 3, H, W]`` (keypoints
    ``[N, K, 2]``, ``visible`` ``[N, K]``, the network's ``logits`` ``[N, K, H, W]`` if any), which joint,
    the disk radius and the decoder. Invalid settings print their ``ValueError`` instead of a figure."""
    import ipywidgets as w

    from ..pose import DECODERS

    def show(figure, joint, radius, decoder):
        draw_pose_heatmap(images[figure], keypoints[figure], joint, radius,
                          None if logits is None else logits[figure], decoder,
                          None if visible is None else visible[figure])

    return interact(
        show,
        figure=w.IntSlider(0, min=0, max=len(images) - 1, description="figure", continuous_update=False),
        joint=w.Dropdown(options=[(name.replace("_", " "), k) for k, name in enumerate(JOINTS)], value=0, description="joint"),
        radius=w.FloatSlider(2.0, min=0.0, max=8.0, step=0.5, description="radius r", continuous_update=False),
        decoder=w.Dropdown(options=list(DECODERS), value="centre", description="decoder"),
    )
