"""Plots of an evolution run (:mod:`evovlm.app.runs`): fitness curve, recipe heat map, DFS layer path.

matplotlib's object API (``Figure``), not pyplot: no global state, so several requests can draw at
once. Each function returns a PIL image (or None when the run has nothing to draw).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from evovlm.app.runs import Run, dfs_source_names, recipe_matrix


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _to_image(fig: Any) -> Any:
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def fitness_plot(run: Run) -> Any:
    fig = _figure(7, 3.6)
    ax = fig.add_subplot()
    scored = run.scored
    if scored:
        ax.scatter([c.generation for c in scored], [c.fitness for c in scored], s=12, alpha=0.45,
                   color="tab:blue", label="candidates")
        by_gen: dict[int, list[float]] = {}
        for c in scored:
            by_gen.setdefault(c.generation, []).append(c.fitness)
        gens = sorted(by_gen)
        pick = max if run.maximize else min
        ax.plot(gens, [sum(by_gen[g]) / len(by_gen[g]) for g in gens], color="tab:blue", lw=1, label="generation mean")
        so_far, best = [], None
        for g in gens:
            best = pick(by_gen[g]) if best is None else pick(best, pick(by_gen[g]))
            so_far.append(best)
        ax.step(gens, so_far, where="post", color="tab:red", lw=2, label="best so far")
    if run.validation:
        ax.plot([g for g, _ in run.validation], [v for _, v in run.validation], "o-", color="tab:green", ms=4,
                lw=1, label="validation (generation best)")
    for i, (name, score) in enumerate(sorted(run.baselines.items())):
        ax.axhline(score, ls="--", lw=1, color=f"C{(i + 2) % 10}", label=f"source: {Path(name).name}")
    failed = [c for c in run.candidates if c.fitness is None]
    if failed:
        ax.scatter([c.generation for c in failed], [ax.get_ylim()[0]] * len(failed), marker="x", color="grey",
                   label="failed")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    ax.set_title(f"{run.path.name}: {len(run.candidates)} candidates")
    ax.grid(alpha=0.3)
    if scored or run.baselines:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no scored candidates yet", ha="center", va="center", transform=ax.transAxes)
    return _to_image(fig)


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
    if not run.dfs_path:
        return None
    fig = _figure(7, 3)
    ax = fig.add_subplot()
    steps = [s for s, _, _ in run.dfs_path]
    layers = [layer for _, layer, _ in run.dfs_path]
    sources = [src for _, _, src in run.dfs_path]
    from matplotlib.ticker import MaxNLocator

    ax.plot(steps, layers, color="lightgrey", lw=1, zorder=1)
    names = dfs_source_names(run)
    for source in sorted(set(sources)):
        chosen = [(s, layer) for s, layer, src in run.dfs_path if src == source]
        label = names[int(source)] if int(source) < len(names) else f"model {int(source)}"
        ax.scatter([s for s, _ in chosen], [layer for _, layer in chosen], color=f"C{int(source) % 10}", s=25,
                   zorder=2, label=label)
    ax.legend(fontsize=7, loc="best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("position in the merged model")
    ax.set_ylabel("source layer")
    ax.set_title(f"DFS layer path ({len(steps)} layers)", fontsize=9)
    ax.grid(alpha=0.3)
    return _to_image(fig)
