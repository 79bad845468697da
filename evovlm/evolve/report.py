"""Run reports: the fitness-curve PNG, best-so-far files and model cards."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml

from evovlm import __version__
from evovlm.evolve.history import History
from evovlm.io.atomic import write_atomic
from evovlm.merge.card import front_matter


def plot_fitness(history: History, path: Path, title: str) -> Path | None:
    """Best and mean fitness per generation, best so far, and validation scores when present."""
    generations = sorted(history.of_type("generation"), key=lambda r: r["generation"])
    if not generations:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in worker-less headless runs
    import matplotlib.pyplot as plt

    xs = [r["generation"] for r in generations]
    best = [r["best_fitness"] for r in generations]
    mean = [r["mean_fitness"] for r in generations]
    so_far, running = [], None
    for value in best:
        if value is not None and (running is None or value > running):
            running = value
        so_far.append(running)
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    axis.plot(xs, [float("nan") if v is None else v for v in mean], "o-", color="0.6", ms=3, label="generation mean")
    axis.plot(xs, [float("nan") if v is None else v for v in best], "o-", ms=3, label="generation best")
    axis.plot(xs, [float("nan") if v is None else v for v in so_far], "-", lw=2, label="best so far")
    validation = sorted((r["generation"], r["fitness"]) for r in history.of_type("validation")
                        if r.get("fitness") is not None)
    if validation:
        axis.plot(*zip(*validation), "s--", ms=4, label="validation (generation best)")
    metric = next((r.get("metric") for r in history.of_type("candidate") if r.get("metric")), None)
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("generation")
    axis.set_ylabel(f"fitness ({metric})" if metric else "fitness")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    image = io.BytesIO()
    try:
        figure.savefig(image, format="png")
    finally:
        plt.close(figure)
    return write_atomic(path, image.getvalue())


def best_file_text(stage: str, best: Any, described: dict, metric: str | None) -> str:
    """best_recipe.yaml (PS: a recipe `evovlm merge` accepts) or best_dfs.yaml (DFS path and scales)."""
    header = (f"# Best candidate so far: generation {best.generation}, index {best.index}, "
              f"fitness {best.fitness:.6g}" + (f" ({metric})" if metric else "")
              + (f", validation {best.validation:.6g}" if best.validation is not None else "") + "\n")
    if stage == "ps":
        header += "# Merge it with: evovlm merge best_recipe.yaml --out DIR\n"
    return header + yaml.safe_dump(described, sort_keys=False, allow_unicode=True)


def evolution_section(config: Any, stage: str, result: dict) -> str:
    """Markdown appended to a model card: how the search ran and what it scored."""
    fitness = config.fitness
    source = (f"benchmark `{fitness.benchmark}` (split {fitness.split or 'default'}, limit {fitness.limit or 'all'}, "
              f"data seed {fitness.data_seed})" if fitness.kind == "benchmark"
              else f"{fitness.kind} objective `{fitness.callable or fitness.synthetic}`")
    optimizer = config.optimizer_for(stage)
    best = result["best"]
    lines = ["", "## Evolution", "",
             f"Found by `evovlm evolve` ({stage.upper()} search, EvoVLM {__version__}) with CMA-ES "
             f"(`{optimizer.name}`, sigma {optimizer.sigma:.4g}, population {result['population']}, "
             f"bounds {list(optimizer.bounds)}, seed {config.seed}).", "",
             f"- fitness: {source}, metric `{result.get('metric') or fitness.metric or 'default'}`",
             f"- budget: {result['generations']} generations, {result['trials']} candidates, "
             f"{result['failed']} failed",
             f"- best: generation {best['generation']}, candidate {best['index']}, fitness {best['fitness']:.4f}"]
    if best.get("validation") is not None:
        lines.append(f"- validation score of the chosen snapshot: {best['validation']:.4f}")
    test = result.get("test")
    if test:
        where = (test.get("benchmark") or "test") + (f", split {test['split']}" if test.get("split") else "")
        lines.append(f"- held-out test ({where}): "
                     f"{test['metric']} = {test['fitness']:.4f}" if test.get("fitness") is not None
                     else f"- held-out test failed: {test.get('error')}")
    return "\n".join(lines) + "\n"


def dfs_card(config: Any, model: Any, model_a: str, model_b: str, result: dict) -> str:
    """Model card of a DFS checkpoint: sources, the path with its scales, how to load it."""
    dfs = model.config
    lines = [*front_matter([model_a, model_b], "text-generation", ["merge", "evovlm", "evovlm-dfs"]),
             "# Data-flow-space merged model (EvoVLM DFS)", "",
             f"An `{dfs.model_type}` model: a path of {len(dfs.dfs_path)} decoder-layer runs through "
             f"{dfs.num_stored_layers} distinct layers of two {dfs.base_model_type} models, each stored once.", "",
             "Load it with transformers after `import evovlm.dfs.auto` (which registers the class; no "
             "`trust_remote_code`):", "", "```python", "import evovlm.dfs.auto  # registers model_type evovlm_dfs",
             "from transformers import AutoModelForCausalLM, AutoTokenizer",
             "model = AutoModelForCausalLM.from_pretrained(PATH)", "tokenizer = AutoTokenizer.from_pretrained(PATH)",
             "```", "", "## Sources",
             f"- model A (embeddings, tokenizer, final norm, head, first and last block): `{model_a}`",
             f"- model B: `{model_b}`", "", "## Path", "",
             "| position | layer | input scale |", "| --- | --- | --- |"]
    for position, (index, scale) in enumerate(zip(dfs.dfs_path, dfs.dfs_scales)):
        lines.append(f"| {position} | {dfs.dfs_layer_origins[index]} | {scale:.4f} |")
    return "\n".join(lines) + "\n" + evolution_section(config, "dfs", result)
