"""Lecture 05's figure: test accuracy against labelled images per class for the four ways of using an
ImageNet network, with an explorer that picks a number of labels and the strategies to compare.

``results`` is what the lecture measures: ``{"labels": [1, 2, 6, ...], "accuracy": {strategy: [[one
accuracy per seed] for each entry of labels]}, "chance": 0.1}``, with strategies among
:data:`STRATEGIES`. Nothing is trained here: the explorer redraws precomputed curves.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from ._interact import interact

__all__ = ["STRATEGIES", "transfer_table", "draw_transfer_curves", "transfer_explorer"]

#: The strategies of the lecture's experiment, in its order, with their names in figures and tables.
STRATEGIES = {
    "scratch": "(a) same network, from scratch",
    "probe": "(b) fixed features + linear classifier",
    "higher": "(c) fine-tune the higher layers",
    "all": "(d) fine-tune everything",
}


def _curves(results) -> tuple[list, dict]:
    """``(labels, {strategy: [len(labels), seeds] float64})``, checked."""
    if not isinstance(results, dict) or not {"labels", "accuracy"} <= set(results):
        raise ValueError(f"results must be a dict with 'labels' and 'accuracy', got {type(results).__name__}")
    labels = list(results["labels"])
    curves = {}
    for name, values in results["accuracy"].items():
        if name not in STRATEGIES:
            raise ValueError(f"results['accuracy'] keys must be among {list(STRATEGIES)}, got {name!r}")
        table = torch.as_tensor(values, dtype=torch.float64)
        if table.dim() != 2 or table.shape[0] != len(labels):
            raise ValueError(f"results['accuracy'][{name!r}] must hold one list of accuracies per entry of labels "
                             f"({len(labels)}), got shape {tuple(table.shape)}")
        curves[name] = table
    return labels, curves


def _choose(curves: dict, strategies) -> list:
    chosen = list(curves) if strategies is None else list(strategies)
    for name in chosen:
        if name not in curves:
            raise ValueError(f"strategies must be among {list(curves)}, got {name!r}")
    return chosen


def _spread(table: torch.Tensor) -> torch.Tensor:
    """Standard deviation over seeds (zero with one seed)."""
    return table.std(dim=1) if table.shape[1] > 1 else torch.zeros(table.shape[0], dtype=table.dtype)


def transfer_table(results, strategies=None) -> str:
    """The measured accuracies as a text table: one row per number of labelled images per class, one
    column per strategy, each cell ``mean ± standard deviation`` over the seeds, in percent."""
    labels, curves = _curves(results)
    chosen = _choose(curves, strategies)
    seeds = {curves[name].shape[1] for name in chosen}
    head = f"{'labels/class':>12}" + "".join(f"  {STRATEGIES[name][:3] + ' ' + name:>16}" for name in chosen)
    lines = [head, "-" * len(head)]
    for row, count in enumerate(labels):
        cells = "".join(f"  {100 * float(curves[n][row].mean()):>8.1f} ± {100 * float(_spread(curves[n])[row]):4.1f}" for n in chosen)
        lines.append(f"{count:>12}{cells}")
    keys = "; ".join(f"{STRATEGIES[name]}" for name in chosen)
    counts = " / ".join(map(str, sorted(seeds)))
    lines.append(f"test accuracy in %, mean ± std over {counts} seed{'' if seeds == {1} else 's'}; {keys}")
    return "\n".join(lines)


def draw_transfer_curves(results, labels_per_class=None, strategies=None, ax=None, title=None):
    """Test accuracy against labelled images per class (log axis), one line per strategy with error bars
    of one standard deviation over the seeds; a dotted line at chance level. With ``labels_per_class``
    (one of ``results["labels"]``), a vertical line marks it and the legend gives each strategy's
    accuracy there. Returns the axes."""
    labels, curves = _curves(results)
    chosen = _choose(curves, strategies)
    if labels_per_class is not None and labels_per_class not in labels:
        raise ValueError(f"labels_per_class must be one of {labels}, got {labels_per_class!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    colours = dict(zip(STRATEGIES, ("tab:grey", "tab:blue", "tab:orange", "tab:green")))
    for name in chosen:
        mean, spread = 100 * curves[name].mean(dim=1), 100 * _spread(curves[name])
        text = STRATEGIES[name]
        if labels_per_class is not None:
            row = labels.index(labels_per_class)
            text += f": {float(mean[row]):.1f}%"
        ax.errorbar(labels, mean.tolist(), yerr=spread.tolist(), marker="o", capsize=3, color=colours[name], label=text)
    if "chance" in results:
        ax.axhline(100 * results["chance"], color="k", ls=":", lw=1, label=f"chance ({100 * results['chance']:.0f}%)")
    if labels_per_class is not None:
        ax.axvline(labels_per_class, color="tab:red", lw=1, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xticks(labels, [str(n) for n in labels])
    ax.minorticks_off()
    ax.set(xlabel="labelled training images per class (log scale)", ylabel="test accuracy (%)", ylim=(0, 100),
           title=title or "Test accuracy against labelled images per class")
    ax.grid(alpha=0.3)
    handles, texts = ax.get_legend_handles_labels()
    order = sorted(range(len(texts)), key=lambda i: texts[i].startswith("chance"))  # the strategies first
    ax.legend([handles[i] for i in order], [texts[i] for i in order], fontsize=8, loc="lower right")
    return ax


def transfer_explorer(results):
    """A slider over the measured numbers of labels per class and a choice of strategies, redrawing
    :func:`draw_transfer_curves` and printing the chosen row of :func:`transfer_table`."""
    import ipywidgets as w

    labels, curves = _curves(results)

    def show(labels_per_class, strategies):
        draw_transfer_curves(results, labels_per_class, strategies or None)
        row = labels.index(labels_per_class)
        for name in strategies or curves:
            table = curves[name][row]
            print(f"{STRATEGIES[name]:40s} {100 * float(table.mean()):5.1f}% ± {100 * float(_spread(curves[name])[row]):.1f}"
                  f" over {table.numel()} seed{'' if table.numel() == 1 else 's'}")

    return interact(
        show,
        labels_per_class=w.SelectionSlider(options=labels, value=labels[min(2, len(labels) - 1)], description="labels/class"),
        strategies=w.SelectMultiple(options=[(STRATEGIES[name], name) for name in curves], value=tuple(curves),
                                    description="strategies", rows=len(curves)),
    )
