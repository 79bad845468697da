"""Run reports: the fitness curve (evolve's fitness.png and the app's), best-so-far files and model cards."""

from __future__ import annotations

import io
from typing import Any, Sequence

import yaml

from evovlm import __version__
from evovlm.evolve.rundir import BEST_FILE, Stage
from evovlm.merge.card import front_matter


def plot_fitness(stages: Sequence[Stage], title: str) -> bytes:
    """The fitness curve as PNG bytes: every candidate, the generation mean and best, the best so far,
    validation scores, the starting model and failures. A later stage's generations continue after
    the earlier one's (ps+dfs), its best so far starts afresh (it is that stage's result). The one
    plotter: evolve's fitness.png and the app's live view both draw with it."""
    from matplotlib.figure import Figure  # not pyplot: no global state, so the app can draw in threads
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7, 4), dpi=110, layout="constrained")
    axis = figure.add_subplot()
    labels: set[str] = set()

    def once(label: str) -> str | None:  # one legend entry per kind, however many stages
        if label in labels:
            return None
        labels.add(label)
        return label

    offset, failed = 0, []
    for number, stage in enumerate(stages):
        if number and stage.candidates:
            axis.axvline(offset - 0.5, color="0.5", ls=":", lw=1)
            axis.text(offset - 0.4, 0.98, stage.name.upper(), transform=axis.get_xaxis_transform(), va="top",
                      fontsize=8, color="0.4")
        _draw_stage(axis, stage, offset, once)
        failed += [offset + c.generation for c in stage.failed]
        offset += stage_span(stage)
    if failed:  # no fitness to place them at: along the bottom edge
        axis.scatter(failed, [axis.get_ylim()[0]] * len(failed), marker="x", color="grey", label=once("failed"))
    if not labels - {"failed"}:
        axis.text(0.5, 0.5, "no scored candidates yet", ha="center", va="center", transform=axis.transAxes)
    metric = next((s.metric for s in stages if s.metric), None)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("generation")
    axis.set_ylabel(f"fitness ({metric})" if metric else "fitness")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    if labels:
        axis.legend(loc="best", fontsize=7)
    image = io.BytesIO()
    figure.savefig(image, format="png")
    return image.getvalue()


def stage_curve(stage: Stage) -> list[tuple[int, list[float], float]]:
    """(generation, its searched candidates' fitness values, best so far), in generation order; failed
    candidates and source baselines left out. The PNG here and the app's interactive curve draw this."""
    by_generation: dict[int, list[float]] = {}
    for c in stage.searched:
        if c.fitness is not None:
            by_generation.setdefault(c.generation, []).append(c.fitness)
    curve, running = [], None
    for generation in sorted(by_generation):
        values = by_generation[generation]
        running = max(values) if running is None else max(running, max(values))
        curve.append((generation, values, running))
    return curve


def stage_span(stage: Stage) -> int:
    """How many generations a stage takes on a shared x axis (a later stage's start after it)."""
    return max((c.generation for c in stage.candidates), default=-1) + 1


def _draw_stage(axis: Any, stage: Stage, offset: int, once: Any) -> None:
    """One stage's points and lines, its generations drawn from ``offset`` on."""
    curve = stage_curve(stage)
    if not curve:
        return
    xs = [offset + generation for generation, _, _ in curve]
    values = [v for _, v, _ in curve]
    axis.scatter([x for x, v in zip(xs, values) for _ in v], [f for v in values for f in v], s=10, alpha=0.35,
                 color="tab:blue", label=once("candidates"))
    axis.plot(xs, [sum(v) / len(v) for v in values], "-", color="0.55", lw=1, label=once("generation mean"))
    axis.plot(xs, [max(v) for v in values], "o-", color="tab:orange", ms=3, lw=1, label=once("generation best"))
    axis.step(xs, [so_far for _, _, so_far in curve], where="post", color="tab:red", lw=2, label=once("best so far"))
    validation = sorted((offset + v.generation, v.fitness) for v in stage.validations if v.fitness is not None)
    if validation:
        axis.plot(*zip(*validation), "s--", color="tab:green", ms=4, lw=1, label=once("validation (generation best)"))
    for number, source in enumerate(c for c in stage.sources if c.fitness is not None):
        axis.axhline(source.fitness, color=f"C{5 + number % 5}", ls="--", lw=1.2,
                     label=once(f"source alone: {short_ref(source.source)}"))
    starts = [c for c in stage.candidates if c.start and c.fitness is not None]
    if starts:
        axis.scatter([offset + c.generation for c in starts], [c.fitness for c in starts], marker="*", s=90,
                     color="tab:purple", zorder=3, label=once("starting model"))


def short_ref(ref: str) -> str:
    """A model reference for a legend: ``zoo:ja``, a folder's name, or a repo id as written."""
    local = ref.startswith(("/", ".", "~"))  # a folder: its name; zoo:NAME and repo ids stay as written
    return ref.rstrip("/").rsplit("/", 1)[-1] if local else ref


def best_file_text(stage: str, best: Any, described: dict, metric: str | None) -> str:
    """best_recipe.yaml (PS: a recipe `evovlm merge` accepts) or best_dfs.yaml (DFS path and scales)."""
    header = (f"# Best candidate so far: generation {best.generation}, index {best.index}, "
              f"fitness {best.fitness:.6g}" + (f" ({metric})" if metric else "")
              + (f", validation {best.validation:.6g}" if best.validation is not None else "") + "\n")
    if stage == "ps":
        header += f"# Merge it with: evovlm merge {BEST_FILE['ps']} --out DIR\n"
    return header + yaml.safe_dump(described, sort_keys=False, allow_unicode=True)


def evolution_section(config: Any, stage: str, result: dict) -> str:
    """Markdown appended to a model card: how the search ran and what it scored."""
    fitness = config.fitness
    source = (f"benchmark `{fitness.benchmark}` (split {fitness.split or 'default'}, limit {fitness.limit or 'all'}, "
              f"data seed {fitness.data_seed})" if fitness.kind == "benchmark"
              else f"{fitness.kind} objective `{fitness.source}`")
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
