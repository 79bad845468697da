"""Plots of an evolution run (:mod:`evovlm.app.runs`): fitness curve, recipe heat map, DFS layer path.

The fitness curve is data for Gradio's interactive line plot (each stage's fitness.png is evolve's
own plotter, :func:`evovlm.evolve.report.plot_fitness`). The others use matplotlib's object API
(``Figure``), not pyplot: no global state, so several requests can draw at once; they return a PIL
image (or None when the run has nothing to draw).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from evovlm.app.runs import Run, dfs_path, model_names, recipe_matrix


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png_image(png: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


def _to_image(fig: Any) -> Any:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return _png_image(buffer.getvalue())


def fitness_frame(run: Run) -> Any:
    """The fitness curve as data for an interactive plot: one row per (generation, series), the series
    being each stage's best so far, generation best and mean, validation, and each source alone (a
    horizontal line: what the merge must beat). Generations of a later stage follow the earlier one's."""
    import pandas as pd

    from evovlm.evolve.report import short_ref, stage_curve, stage_span

    rows, offset = [], 0
    for stage in run.stages:
        prefix = f"{stage.name.upper()} " if len(run.stages) > 1 else ""
        curve = stage_curve(stage)
        for generation, values, so_far in curve:
            x = offset + generation
            rows += [(x, so_far, f"{prefix}best so far"), (x, max(values), f"{prefix}generation best"),
                     (x, sum(values) / len(values), f"{prefix}generation mean")]
        rows += [(offset + v.generation, v.fitness, f"{prefix}validation") for v in stage.validations
                 if v.fitness is not None]
        span = [offset + generation for generation, _, _ in curve] or [offset]
        for source in (c for c in stage.sources if c.fitness is not None):
            rows += [(x, source.fitness, f"source alone: {short_ref(source.source)}") for x in (span[0], span[-1])]
        offset += stage_span(stage)
    return pd.DataFrame(rows, columns=["generation", "fitness", "series"])


def heatmap_plot(run: Run) -> Any | None:
    panels = [(p, recipe_matrix(run, p)) for p in ("weight", "density")]
    panels = [(p, m) for p, m in panels if m is not None]
    if not panels:
        return None
    names, groups, _ = panels[0][1]
    width = min(16, 3 + 0.28 * len(groups))
    fig = _figure(width, 1.2 + len(panels) * (0.55 * len(names) + 0.9))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (parameter, (names, groups, rows)) in zip(axes, panels):
        image = ax.imshow(rows, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(names)), [Path(n).name or n for n in names], fontsize=8)
        ax.set_xticks(range(len(groups)), [g.removeprefix("layers.") for g in groups], fontsize=7,
                      rotation=90 if len(groups) > 12 else 0)
        ax.set_title(f"{parameter} per source and layer group", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.03)
        if len(groups) * len(names) <= 60:
            finite = [v for row in rows for v in row if math.isfinite(v)]
            middle = (min(finite) + max(finite)) / 2 if finite else 0.0
            for r, row in enumerate(rows):
                for g, value in enumerate(row):
                    if math.isfinite(value):  # dark text on viridis' bright end, white on its dark end
                        ax.text(g, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                                color="black" if value > middle else "white")
    return _to_image(fig)


def dfs_plot(run: Run) -> Any | None:
    path = dfs_path(run)
    if not path:
        return None
    fig = _figure(7, 3)
    ax = fig.add_subplot()
    from matplotlib.ticker import MaxNLocator

    ax.plot([p for p, *_ in path], [layer for _, _, layer, _ in path], color="lightgrey", lw=1, zorder=1)
    names = model_names(run)
    for number, model in enumerate(("A", "B")):
        chosen = [(p, layer) for p, m, layer, _ in path if m == model]
        if chosen:
            ax.scatter([p for p, _ in chosen], [layer for _, layer in chosen], color=f"C{number}", s=25, zorder=2,
                       label=f"{model}: {names.get(model, 'model ' + model)}")
    if len(path) <= 24:  # the scale entering each layer, where there is room
        for p, _, layer, scale in path:
            ax.annotate(f"{scale:.2f}", (p, layer), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=6)
    ax.legend(fontsize=7, loc="best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("position in the merged model")
    ax.set_ylabel("source layer")
    ax.set_title(f"DFS layer path ({len(path)} layers; input scales above the points)", fontsize=9)
    ax.grid(alpha=0.3)
    return _to_image(fig)
