"""Evolution dashboard logic: what the evolution tab shows of an ``evovlm evolve`` run folder.

Reading is :class:`evovlm.evolve.rundir.RunDir`'s job: the format (and its version) is defined
there, next to the code that writes it, and the reader keeps to the run folder, bounds file sizes,
skips half-written history lines and turns damaged files into messages. This module turns a run
into the tab's summary, scores table, recipe matrix and DFS path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evovlm.errors import EvoVLMError
from evovlm.evolve.rundir import BEST_FILE, CONFIG_NAME, HISTORY_NAME, Candidate, RunDir, Stage, looks_like_run


@dataclass
class Run:
    """A run folder as the tab shows it: its reader, or why it cannot be read."""

    path: Path
    dir: RunDir | None = None
    error: str | None = None  # e.g. a run of a newer format

    @property
    def stages(self) -> list[Stage]:
        return self.dir.stages if self.dir is not None else []

    def stage(self, name: str) -> Stage | None:
        return self.dir.stage(name) if self.dir is not None else None

    @property
    def config(self) -> dict:
        return self.dir.config if self.dir is not None else {}

    @property
    def recipe_text(self) -> str:
        """The best files (best_recipe.yaml, best_dfs.yaml) as evolve wrote them, stage by stage."""
        if len(self.stages) == 1:
            return self.stages[0].best_text
        return "\n".join(f"# {s.name}/{BEST_FILE[s.name]}\n{s.best_text}" for s in self.stages if s.best_text)


def read_run(path: str | Path) -> Run:
    path = Path(path)
    try:
        return Run(path, RunDir(path))
    except EvoVLMError as exc:
        return Run(path, error=str(exc))


def find_runs(roots: list[Path], depth: int = 3) -> list[str]:
    """Run folders (config.yaml beside run.json or a history) under ``roots``; a root itself counts."""
    found: list[str] = []
    for root in roots:
        if not root.is_dir():
            continue
        for level in range(depth + 1):
            for config in root.glob("/".join(["*"] * level + [CONFIG_NAME])):
                if looks_like_run(config.parent):
                    found.append(str(config.parent))
    return sorted(dict.fromkeys(found), key=_started, reverse=True)


def _started(folder: str) -> tuple[float, str]:
    """When a run was written (its config.yaml), for newest-first listing; the name breaks ties."""
    try:
        return (Path(folder, CONFIG_NAME).stat().st_mtime, folder)
    except OSError:
        return (0.0, folder)


def top(stage: Stage) -> Candidate | None:
    """The highest fitness so far (evolve's choice can differ when validation ran: Stage.best)."""
    scored = [c for c in stage.searched if c.fitness is not None]
    return max(scored, key=lambda c: (c.fitness, -c.generation, -c.index)) if scored else None


def model_names(run: Run) -> dict[str, str]:
    """Short names of DFS's models A and B from the config ("ps" in ps+dfs: the PS result)."""
    dfs = run.config.get("dfs")
    names = {}
    for key, label in (("model_a", "A"), ("model_b", "B")):
        ref = dfs.get(key) if isinstance(dfs, dict) else None
        if isinstance(ref, str) and ref:
            names[label] = "PS result" if ref == "ps" else (Path(ref).name or ref)
    return names


# -- text --------------------------------------------------------------------------------------------

def summary_markdown(run: Run) -> str:
    if run.error is not None:
        return f"⚠ `{run.path.name}`: {run.error}"
    stages, config = run.stages, run.config
    if not stages and not config:
        return (f"⚠ `{run.path}` has no {CONFIG_NAME} or {HISTORY_NAME} (yet). "
                "Is it an `evovlm evolve` run directory?")
    status = "finished" if run.dir.finished else "running or stopped"
    if run.dir.updated_s_ago is not None:
        status += f" · history updated {run.dir.updated_s_ago:.0f} s ago"
    lines = [f"**{run.path.name}** · mode {run.dir.mode or '?'} · seed {str(config.get('seed', '?'))[:40]} · {status}"]
    for stage in stages:
        lines += _stage_lines(stage, f"{stage.name.upper()}: " if len(stages) > 1 else "", run.path)
    if not stages:
        lines.append("no candidate scored yet")
    lines += [f"⚠ {problem}" for problem in dict.fromkeys(run.dir.problems)]
    return "  \n".join(lines)


def _stage_lines(stage: Stage, prefix: str, root: Path) -> list[str]:
    generations = {c.generation for c in stage.searched}
    lines = [f"{prefix}generations: {len(generations)} · candidates: {len(stage.searched)} · "
             f"failed: {len(stage.failed)}" + (" · finished" if stage.finished else "")
             + (f" · unreadable lines skipped: {stage.skipped_lines}" if stage.skipped_lines else "")]
    best, choice = top(stage), stage.best()
    metric = f" ({stage.metric[:80]}; higher is better)" if stage.metric else " (higher is better)"
    if best is None:
        lines.append(f"{prefix}no scored candidate yet")
    else:
        lines.append(f"{prefix}**best fitness so far: {best.fitness:.4g}**{metric}, generation {best.generation}, "
                     f"candidate {best.index}" + (" (the starting model)" if best.start else ""))
    sources = [f"{c.source} {c.fitness:.4g}" for c in stage.sources if c.fitness is not None]
    if sources:
        lines.append(f"{prefix}each source alone: {', '.join(sources)}")
    if choice is not None and choice.validation is not None:
        c = choice.candidate
        lines.append(f"{prefix}chosen by validation: generation {c.generation}, candidate {c.index} "
                     f"(validation {choice.validation:.4g}, fitness {c.fitness:.4g})")
    for test in stage.tests[-1:]:
        lines.append(f"{prefix}held-out test: " + (f"{test.fitness:.4g}" if test.fitness is not None
                                                   else f"failed: {(test.error or '')[:200]}"))
    times = [c.wall_s for c in stage.candidates if c.wall_s is not None]
    if times:
        lines.append(f"{prefix}time per candidate: {sum(times) / len(times):.3g} s on average "
                     f"({sum(times):.4g} s in all)")
    for c in [c for c in stage.candidates if c.error][-3:]:
        lines.append(f"- {prefix}candidate {c.index} (generation {c.generation}) failed: {c.error[:200]}")
    if stage.best_text:
        lines.append(f"{prefix}best so far in `{_relative(stage.path / BEST_FILE[stage.name], root)}`")
    if stage.model_dir is not None:
        lines.append(f"{prefix}model: `{_relative(stage.model_dir, root)}`")
    return lines


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def scores_table(run: Run) -> list[list[Any]]:
    """[model, note, score] rows: the starting model where a stage scored one, each stage's chosen
    best on the fitness split, its validation and held-out test scores."""
    rows: list[list[Any]] = []
    names = model_names(run)
    for stage in run.stages:
        label = "best merged" if len(run.stages) == 1 else f"best {stage.name.upper()}"
        for start in (c for c in stage.candidates if c.start and c.fitness is not None):
            rows.append([names.get("A", "model A"), f"{stage.name.upper()} start: model A itself",
                         round(start.fitness, 4)])
        for source in (c for c in stage.sources if c.fitness is not None):
            rows.append([source.source, "source alone · fitness", round(source.fitness, 4)])
        choice = stage.best()
        if choice is not None:
            c = choice.candidate
            rows.append([label, f"fitness · generation {c.generation}, candidate {c.index}", round(c.fitness, 4)])
            if choice.validation is not None:
                rows.append([label, "validation", round(choice.validation, 4)])
        for test in stage.tests[-1:]:
            if test.fitness is None:
                rows.append([label, f"held-out test failed: {(test.error or '')[:200]}", None])
            else:
                rows.append([label, "held-out test", round(test.fitness, 4)])
    return rows


# -- recipe matrix and DFS path --------------------------------------------------------------------

_LAYERS = re.compile(r"^layers\.(\d+)(?:-(\d+))?$")
ALL_LAYERS = "all layers"  # the one column of a recipe without per-group values (group_size: model)


def recipe_groups(models: list[dict]) -> list[str]:
    """The recipe's layer-group selectors, as evolve writes them (one per gene group): block runs
    in layer order, then the named groups; ``all layers`` when no value is per group."""
    keys: dict[str, None] = {}
    for model in models:
        for value in (model.get("weight"), model.get("density")):
            keys.update(dict.fromkeys(map(str, value)) if isinstance(value, dict) else {})
    layers = sorted((k for k in keys if _LAYERS.match(k)), key=lambda k: int(_LAYERS.match(k).group(1)))
    return layers + [k for k in keys if not _LAYERS.match(k)] or [ALL_LAYERS]


def recipe_matrix(run: Run, parameter: str) -> tuple[list[str], list[str], list[list[float]]] | None:
    """(source names, layer groups, values) of ``weight`` or ``density`` in the best PS recipe."""
    from evovlm.merge.recipe import resolve_param

    stage = run.stage("ps")
    recipe = stage.best_recipe if stage is not None else None
    models = [m for m in (recipe or {}).get("models") or [] if isinstance(m, dict) and "model" in m]
    if not models or all(m.get(parameter) is None for m in models):  # e.g. no density for linear
        return None
    groups = recipe_groups(models)
    names, rows = [], []
    for model in models:
        row = []
        for group in groups:
            try:
                row.append(float(resolve_param(model.get(parameter), group)))
            except Exception:  # no value for this group, or not a number: leave the cell blank
                row.append(float("nan"))
        names.append(str(model["model"]))
        rows.append(row)
    return names, groups, rows


def dfs_path(run: Run) -> list[tuple[int, str, int, float]] | None:
    """The best DFS path so far as (position, model "A"/"B", layer, input scale)."""
    stage = run.stage("dfs")
    if stage is None or not stage.best_path:
        return None
    return [(i, model, layer, scale) for i, ((model, layer), scale) in enumerate(zip(stage.best_path,
                                                                                     stage.best_scales))]
