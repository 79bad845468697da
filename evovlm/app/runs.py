"""Evolution dashboard logic: read an ``evovlm evolve`` run directory (live or finished) and plot it.

The run format is still settling, so the reader is tolerant by design. It needs only
``history.jsonl`` lines with ``generation`` and ``fitness`` (``fitness`` null plus ``error`` for a
failed candidate); it also uses, when present: ``genome``/``params``, ``wall_time``, baseline
lines (``"kind": "baseline"`` or ``"source": NAME``), ``config.yaml``, a best-recipe YAML (EvoVLM
recipe format, per-source weight/density possibly per layer group), a DFS layer path, and
source-model scores. Malformed lines are counted and skipped (the last line of a live run may be
half written).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HISTORY = "history.jsonl"
BEST_RECIPE_NAMES = ("best_recipe.yaml", "best_recipe.yml", "best.yaml", "best.yml", "recipe.yaml")
BASELINE_FILES = ("baselines.json", "sources.json", "source_scores.json", "scores.json", "baselines.yaml")
DFS_KEYS = ("dfs", "layer_path", "dfs_path", "path")
FINAL_MODEL_DIRS = ("final", "model", "final_model", "merged", "best_model")
MAX_FILE_BYTES = 16 * 2**20  # a recipe, config or baselines file; histories are read line by line


@dataclass
class Candidate:
    index: int
    generation: int
    fitness: float | None
    error: str | None = None
    genome: Any = None
    wall_s: float | None = None


@dataclass
class Run:
    path: Path
    candidates: list[Candidate] = field(default_factory=list)
    skipped_lines: int = 0
    config: dict = field(default_factory=dict)
    recipe: dict | None = None
    recipe_path: Path | None = None
    recipe_text: str = ""
    baselines: dict[str, float] = field(default_factory=dict)
    dfs_path: list[tuple[int, int, float]] | None = None  # (step, layer, source index)
    validation: list[tuple[int, float]] = field(default_factory=list)  # (generation, score)
    stage_offsets: dict[str, int] = field(default_factory=dict)
    maximize: bool = True
    finished: bool = False
    updated_s_ago: float | None = None

    @property
    def scored(self) -> list[Candidate]:
        return [c for c in self.candidates if c.fitness is not None and math.isfinite(c.fitness)]

    @property
    def failed(self) -> list[Candidate]:
        return [c for c in self.candidates if c.fitness is None or c.error]

    def best(self) -> Candidate | None:
        scored = self.scored
        if not scored:
            return None
        return (max if self.maximize else min)(scored, key=lambda c: c.fitness)


def find_runs(roots: list[Path], depth: int = 3) -> list[str]:
    """Directories holding a history.jsonl under ``roots`` (a run dir itself counts)."""
    found: list[str] = []
    for root in roots:
        if not root.is_dir():
            continue
        for level in range(depth + 1):
            for history in root.glob("/".join(["*"] * level + [HISTORY])):
                found.append(str(history.parent))
    return sorted(dict.fromkeys(found))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _inside(run: "Run", path: Path) -> bool:
    """A regular file that really lies in the run folder: a symlink such as
    ``best_recipe.yaml -> /etc/passwd`` is not followed out of it."""
    try:
        return path.is_file() and path.resolve().is_relative_to(run.path.resolve())
    except (OSError, RuntimeError, ValueError):  # symlink loops, NUL bytes
        return False


def _read_text(run: "Run", path: Path) -> str | None:
    if not _inside(run, path) or path.stat().st_size > MAX_FILE_BYTES:
        return None
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _parse_yaml(text: str | None) -> Any:
    try:
        return None if text is None else yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None


def _read_yaml(run: "Run", path: Path) -> Any:
    return _parse_yaml(_read_text(run, path))


def _find_key(data: Any, keys: tuple[str, ...], depth: int = 3) -> Any:
    """The first value under any of ``keys`` in nested mappings (breadth first, bounded depth)."""
    level = [data]
    for _ in range(depth + 1):
        nxt = []
        for item in level:
            if isinstance(item, dict):
                for key in keys:
                    if key in item and item[key] is not None:
                        return item[key]
                nxt.extend(v for v in item.values() if isinstance(v, dict))
        level = nxt
    return None


def read_run(path: str | Path) -> Run:
    path = Path(path)
    run = Run(path=path)
    history = path / HISTORY
    if _inside(run, history):
        run.updated_s_ago = max(0.0, time.time() - history.stat().st_mtime)
        with history.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                _add_line(run, line)
    config = _read_yaml(run, path / "config.yaml")
    run.config = config if isinstance(config, dict) else {}
    direction = _find_key(run.config, ("direction", "optimize", "goal"))
    if str(direction).lower() in ("min", "minimize", "minimise") or _find_key(run.config, ("maximize",)) is False:
        run.maximize = False
    _read_recipe(run)
    _read_baselines(run)
    if run.dfs_path is None:
        best = run.best()
        if best is not None and isinstance(best.genome, dict):
            run.dfs_path = parse_dfs(_find_key(best.genome, DFS_KEYS, depth=1))
    run.finished = any((path / d / "config.json").is_file() for d in FINAL_MODEL_DIRS) or (path / "DONE").exists()
    return run


def _add_line(run: Run, line: str) -> None:
    line = line.strip()
    if not line:
        return
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # the half-written last line of a live run, or junk
        run.skipped_lines += 1
        return
    if not isinstance(record, dict):
        run.skipped_lines += 1
        return
    kind = record.get("type", record.get("kind"))
    if kind == "baseline" or record.get("baseline") is True or (kind is None and isinstance(record.get("source"), str)):
        name = str(record.get("model") or record.get("source") or record.get("name") or "source")
        score = _number(record.get("fitness", record.get("score")))
        if score is not None:
            run.baselines[name] = score
        return
    generation = _number(record.get("generation", record.get("gen")))
    if kind == "validation":  # a generation's best re-scored on held-out data
        score = _number(record.get("fitness", record.get("score")))
        if generation is not None and score is not None:
            run.validation.append((_global_generation(run, record, int(generation)), score))
        return
    if kind not in (None, "candidate"):
        return  # per-generation summaries and future record types: derived from the candidates here
    if generation is None or "fitness" not in record:
        run.skipped_lines += 1
        return
    error = record.get("error")
    run.candidates.append(Candidate(
        index=len(run.candidates), generation=_global_generation(run, record, int(generation)),
        fitness=_number(record.get("fitness")), error=str(error) if error else None,
        genome=record.get("genome", record.get("params")),
        wall_s=_number(record.get("wall_s", record.get("wall_time", record.get("seconds")))),
    ))


def _global_generation(run: Run, record: dict, generation: int) -> int:
    """ps+dfs runs number generations per stage: later stages continue after the earlier ones."""
    stage = record.get("stage")
    if stage is None:
        return generation
    stage = str(stage)
    if stage not in run.stage_offsets:
        run.stage_offsets[stage] = (max((c.generation for c in run.candidates), default=-1) + 1
                                    if run.candidates else 0)
    return run.stage_offsets[stage] + generation


def _read_recipe(run: Run) -> None:
    candidates = [run.path / n for n in BEST_RECIPE_NAMES]
    candidates += sorted(p for p in run.path.glob("*best*.y*ml") if p not in candidates)
    for path in candidates:
        text = _read_text(run, path)
        data = _parse_yaml(text)
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            run.recipe, run.recipe_path, run.recipe_text = data, path, text
            run.dfs_path = parse_dfs(_find_key(data, DFS_KEYS, depth=1))
            return
        if isinstance(data, dict) and run.dfs_path is None:  # a DFS-only best (no parameter-space recipe)
            run.dfs_path = parse_dfs(_find_key(data, DFS_KEYS, depth=1))
            if run.dfs_path:
                run.recipe_path, run.recipe_text = path, text
                return


def _read_baselines(run: Run) -> None:
    found = _find_key(run.config, ("baselines", "source_scores", "sources_scores"))
    for name in BASELINE_FILES:
        path = run.path / name
        if _inside(run, path):
            data = _read_yaml(run, path)  # YAML is a superset of JSON
            found = data.get("baselines", data) if isinstance(data, dict) else data
            break
    if isinstance(found, dict):
        items = found.items()
    elif isinstance(found, list):
        items = [(d.get("model") or d.get("name"), d.get("score", d.get("fitness")))
                 for d in found if isinstance(d, dict)]
    else:
        items = []
    for name, score in items:
        number = _number(score.get("score", score.get("fitness")) if isinstance(score, dict) else score)
        if name and number is not None:
            run.baselines.setdefault(str(name), number)


def parse_dfs(value: Any) -> list[tuple[int, int, float]] | None:
    """A DFS layer path as (step, layer, source) triples, from a list of ints, of [source, layer]
    pairs, of {model/source, layer} maps, or a {layers: [...], models: [...]} map."""
    if isinstance(value, dict):
        layers, models = value.get("layers"), value.get("models", value.get("sources"))
        if isinstance(layers, list):
            models = models if isinstance(models, list) and len(models) == len(layers) else [0] * len(layers)
            value = [[m, layer] for m, layer in zip(models, layers)]
        else:
            return None
    if not isinstance(value, list) or not value:
        return None
    path: list[tuple[int, int, float]] = []
    names: dict[str, int] = {}
    for step, item in enumerate(value):
        if isinstance(item, dict):
            source, layer = item.get("model", item.get("source", 0)), item.get("layer")
        elif isinstance(item, (list, tuple)) and len(item) >= 2:
            source, layer = item[0], item[1]
        else:
            source, layer = 0, item
        layer_number = _number(layer)
        if layer_number is None:
            return None
        if not isinstance(source, (int, float)) or isinstance(source, bool):
            source = names.setdefault(str(source), len(names))
        path.append((step, int(layer_number), float(source)))
    return path


# -- recipe heat map --------------------------------------------------------------------------------

_LAYER = re.compile(r"^layers\.(\d+)(?:-(\d+))?$")
_LAYER_COUNT_KEYS = ("num_hidden_layers", "num_layers", "n_layers")


def layer_count(run: Run) -> int | None:
    """How many decoder blocks: the target model's config, the run config, or the recipe's selectors."""
    counts: list[int] = []
    recipe = run.recipe or {}
    target = recipe.get("target") or recipe.get("base_model")
    if isinstance(target, str):
        try:
            from evovlm.io.resolve import resolve_model_path

            config = json.loads((resolve_model_path(target) / "config.json").read_text(encoding="utf-8"))
            n = config.get("num_hidden_layers") or (config.get("text_config") or {}).get("num_hidden_layers")
            if isinstance(n, int):
                counts.append(n)
        except Exception:  # not resolvable here: fall back to the other hints
            pass
    n = _find_key(run.config, _LAYER_COUNT_KEYS)
    if isinstance(n, int) and n > 0:
        counts.append(n)
    for model in recipe.get("models") or []:
        for value in (model.get("weight"), model.get("density")) if isinstance(model, dict) else ():
            for key in value if isinstance(value, dict) else ():
                match = _LAYER.match(str(key))
                if match:
                    counts.append(int(match.group(2) or match.group(1)) + 1)
    return max(counts) if counts else None


def layer_groups(run: Run) -> list[str]:
    n = layer_count(run)
    if n is None:
        return ["default"]
    return ["embed", *(f"layers.{i}" for i in range(n)), "norm", "lm_head"]


def recipe_matrix(run: Run, parameter: str) -> tuple[list[str], list[str], list[list[float]]] | None:
    """(source names, layer groups, values) of ``weight`` or ``density`` in the best recipe."""
    from evovlm.merge.recipe import resolve_param

    if not run.recipe:
        return None
    groups = layer_groups(run)
    names, rows = [], []
    for model in run.recipe.get("models") or []:
        if not isinstance(model, dict) or "model" not in model:
            continue
        value = model.get(parameter, 1.0)
        row = []
        for group in groups:
            try:
                row.append(float(resolve_param(value, group)))
            except Exception:  # a selector the library rejects: leave the cell blank
                row.append(float("nan"))
        names.append(str(model["model"]))
        rows.append(row)
    return (names, groups, rows) if rows else None


def dfs_source_names(run: Run) -> list[str]:
    """Names of the DFS sources (model A, model B) from the run config, when it says."""
    dfs = _find_key(run.config, ("dfs",))
    if isinstance(dfs, dict):
        return [str(dfs[k]) for k in ("model_a", "model_b") if dfs.get(k)]
    return []


# -- text ------------------------------------------------------------------------------------------

def summary_markdown(run: Run) -> str:
    if not (run.path / HISTORY).is_file():
        return f"⚠ `{run.path}` has no {HISTORY} (yet). Is it an `evovlm evolve` run directory?"
    best = run.best()
    gens = sorted({c.generation for c in run.candidates})
    status = "finished" if run.finished else "running or stopped"
    if run.updated_s_ago is not None:
        status += f" · history updated {run.updated_s_ago:.0f} s ago"
    lines = [f"**{run.path.name}** · {status}",
             f"generations: {len(gens)} · candidates: {len(run.candidates)} · failed: {len(run.failed)}"
             + (f" · unreadable lines skipped: {run.skipped_lines}" if run.skipped_lines else "")]
    if best is not None:
        lines.append(f"**best fitness so far: {best.fitness:.4g}** (generation {best.generation}, "
                     f"candidate {best.index}; {'higher' if run.maximize else 'lower'} is better)")
    else:
        lines.append("no scored candidate yet")
    if run.validation:
        pick = max if run.maximize else min
        generation, score = pick(run.validation, key=lambda item: item[1])
        lines.append(f"best validation score: {score:.4g} (generation {generation})")
    errors = [c for c in run.candidates if c.error][-3:]
    for c in errors:
        lines.append(f"- candidate {c.index} (generation {c.generation}) failed: {c.error[:200]}")
    if run.recipe_path is not None:
        lines.append(f"best recipe: `{run.recipe_path.name}`")
    return "  \n".join(lines)


def scores_table(run: Run) -> list[list[Any]]:
    """Source models against the best merged candidate (search fitness)."""
    rows: list[list[Any]] = [[Path(name).name or name, "source", round(score, 4)]
                             for name, score in sorted(run.baselines.items())]
    best = run.best()
    if best is not None:
        rows.append(["best merged", f"generation {best.generation}", round(best.fitness, 4)])
    return rows
