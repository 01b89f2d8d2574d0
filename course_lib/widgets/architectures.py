"""Explorer of lecture 03: layer tables of the classic architectures."""
from __future__ import annotations

import torch
from ._interact import interact

__all__ = ["ARCHITECTURES", "architecture_table", "architecture_explorer"]

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
    from .. import architectures

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
        print(architecture_table(name, size, None if max_depth == "every layer" else max_depth))

    return interact(
        show,
        name=w.Dropdown(options=list(ARCHITECTURES), value="resnet18", description="model"),
        size=w.IntSlider(224, 32, 320, step=16, description="input size"),
        max_depth=w.ToggleButtons(options=[1, 2, "every layer"], value=1, description="rows"),
    )


