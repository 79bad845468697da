"""Runs: a config and a directory in, a searched, saved and re-scored model out.

``run_evolution(config, out_dir)`` is the Python API behind ``evovlm evolve`` (and what a
``evovlm zoo evolve`` can call). What RUN_DIR holds, and its format version, is defined in
:mod:`evovlm.evolve.rundir` (config.yaml, run.json, summary.json, and per stage history.jsonl,
state/, the best recipe or DFS path, fitness.png, result.json, model/). In ``ps+dfs`` mode the
DFS stage's model A is RUN_DIR/ps/model. ``resume=True`` continues a run from RUN_DIR alone.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from evovlm.errors import EvoVLMError
from evovlm.evolve.backends import Backend, make_backend
from evovlm.evolve.config import EvolveConfig, config_from_dict, load_config, with_overrides
from evovlm.evolve.evaluators import StageSpec, Task, load_causal_lm, make_genome
from evovlm.evolve.history import History
from evovlm.evolve.preflight import preflight
from evovlm.evolve.report import best_file_text, dfs_card, evolution_section, plot_fitness
from evovlm.evolve.rundir import (
    BEST_FILE,
    CONFIG_NAME,
    FORMAT_VERSION,
    LOCK_NAME,
    MODEL_DIR,
    PLOT_NAME,
    RESULT_NAME,
    RUN_INFO_NAME,
    SUMMARY_NAME,
    RunDir,
    Stage,
    run_info_text,
    stage_folder,
)
from evovlm.evolve.search import Best, calibrate, run_search
from evovlm.evolve.subset import SUBSET_NAME, SubsetPlan, build_plan
from evovlm.io.atomic import (
    ensure_writable_folder,
    make_temp_dir,
    replace_dir,
    sweep_stale,
    umask_permissions,
    write_atomic,
)


def run_evolution(config: EvolveConfig | dict | str | Path | None, out_dir: str | Path, *, resume: bool = False,
                  overwrite: bool = False, progress: bool | None = None, workers: int | None = None,
                  devices: list[str] | None = None, backend: str | None = None,
                  ray_address: str | None = None) -> dict:
    """Run (or, with ``resume``, continue) an evolution in ``out_dir``; returns the summary.

    ``config`` is a config file, a dict in the YAML format (callables allowed for ``fitness.callable``
    and ``fitness.synthetic``) or an :class:`EvolveConfig`; it is ignored on resume, which reads
    ``out_dir/config.yaml``. ``progress``, ``workers`` and ``devices`` override the runtime section.
    """
    out_dir = Path(out_dir)
    if resume:
        if not (out_dir / CONFIG_NAME).is_file():
            raise EvoVLMError(f"{out_dir} is not an evolution run directory (no {CONFIG_NAME}); nothing to resume")
    else:
        config = preflight(load_config(config) if isinstance(config, (str, Path)) else config_from_dict(config))
        _check_out_dir(out_dir, overwrite)  # before the folder is touched (the lock file goes into it)
        ensure_writable_folder(out_dir)
    with _locked(out_dir):  # nothing is deleted or written before the lock is held
        if resume:
            RunDir(out_dir)  # refuses a run of a newer format
            config = preflight(load_config(out_dir / CONFIG_NAME))
        else:
            _check_out_dir(out_dir, overwrite)
            _clear(out_dir)
            write_atomic(out_dir / CONFIG_NAME, config.to_yaml())
        if not (out_dir / RUN_INFO_NAME).is_file():  # a new run, or one made before run.json: format 1 too
            write_atomic(out_dir / RUN_INFO_NAME, run_info_text())
        config = with_overrides(config, workers=workers, devices=devices, progress=progress, backend=backend,
                                ray_address=ray_address)
        stages = config.stages()
        results: dict[str, dict] = {}
        model_a = None
        for stage in stages:
            folder = stage_folder(out_dir, stages, stage)
            done = folder / RESULT_NAME
            if done.is_file():
                results[stage] = json.loads(done.read_text(encoding="utf-8"))
            else:
                label = f"{stage} " if len(stages) > 1 else ""
                results[stage] = _run_stage(config, stage, folder, model_a, label=label)
            model_a = results[stage].get("model_dir")
        final = results[stages[-1]]
        summary = {"format_version": FORMAT_VERSION, "mode": config.mode, "seed": config.seed, "best": final["best"],
                   "metric": final.get("metric"), "test": final.get("test"), "model_dir": final.get("model_dir"),
                   "stages": results}
        write_atomic(out_dir / SUMMARY_NAME, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return summary


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """A new run goes into an empty folder, or replaces an earlier run with ``overwrite``; nothing else."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise EvoVLMError(f"{out_dir} exists and is not a folder; choose another --out")
    if not out_dir.exists() or not [p for p in out_dir.iterdir() if p.name != LOCK_NAME]:
        return
    if not overwrite:
        raise EvoVLMError(f"{out_dir} already exists and is not empty: continue it with --resume, "
                          "or choose another --out (or pass --overwrite)")
    if not (out_dir / CONFIG_NAME).is_file():
        raise EvoVLMError(f"{out_dir} is not an evolution run directory (no {CONFIG_NAME}); "
                          "--overwrite only replaces earlier runs, so nothing was deleted")


def _clear(out_dir: Path) -> None:
    """Delete an earlier run's files (the caller holds its lock, which stays)."""
    for path in out_dir.iterdir():
        if path.name == LOCK_NAME:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One process per run directory (the kernel drops the lock when the process dies, even on kill -9)."""
    with open(out_dir / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise EvoVLMError(f"another evovlm evolve is running in {out_dir}; nothing was changed") from None
        yield


def _run_stage(config: EvolveConfig, stage: str, stage_dir: Path, model_a: str | None, label: str) -> dict:
    config = config.for_stage(stage)
    spec = StageSpec(stage, config, model_a=model_a if stage == "dfs" and config.mode == "ps+dfs" else None)
    genome = make_genome(spec)
    title = ("" if config.mode == stage else f"{config.mode}: ") + f"{stage.upper()} search (seed {config.seed})"
    best_path = stage_dir / BEST_FILE[stage]
    progress = config.runtime.progress
    if config.fitness.kind == "benchmark" and config.fitness.subset is not None:
        spec = replace(spec, subset=_subset_plan(spec, genome, stage_dir, progress, label))

    def report(history: History, best: Best | None) -> None:
        if best is not None:
            metric = next((r.get("metric") for r in history.of_type("candidate") if r.get("metric")), None)
            write_atomic(best_path, best_file_text(stage, best, genome.describe(best.genome), metric))
        if config.runtime.plot:
            curve = Stage.from_records(stage, stage_dir, history.records)
            write_atomic(stage_dir / PLOT_NAME, plot_fitness([curve], title))

    with make_backend(spec) as backend:
        search = run_search(spec, genome, stage_dir, backend, progress=progress, label=label, on_generation=report)
        history = History(search.history_path)
        if search.best is None:
            raise EvoVLMError(f"every candidate failed: see the errors in {search.history_path}")
        report(history, search.best)
        metric = next((r.get("metric") for r in history.of_type("candidate") if r.get("metric")), None)
        test = _test_score(config, backend, history, search.best, genome) if config.test else None
        history.close()
    result = {"stage": stage, "best": search.best.to_dict(), "candidate": genome.describe(search.best.genome),
              "metric": metric, "generations": search.generations, "population": search.population,
              "trials": search.trials, "failed": search.failed, "test": test, "model_dir": None,
              "gene_names": genome.gene_names()}
    if config.runtime.save_model:
        saver = _save_ps_model if stage == "ps" else _save_dfs_model
        result["model_dir"] = str(saver(config, genome, search.best, stage_dir, result))
    write_atomic(stage_dir / RESULT_NAME, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def _subset_plan(spec: StageSpec, genome: Any, stage_dir: Path, progress: bool, label: str) -> SubsetPlan:
    """The stage's reduced-fitness plan: read from its folder on resume, else chosen from a calibration
    (each calibration candidate scored on every fitness item) and saved before the search starts."""
    fitness = spec.config.fitness
    settings = {**fitness.subset.model_dump(), "benchmark": fitness.benchmark, "split": fitness.split,
                "limit": fitness.limit, "data_seed": fitness.data_seed, "data": fitness.data}
    path = stage_dir / SUBSET_NAME
    if path.is_file():
        plan = SubsetPlan.read(path)
        if plan.settings != settings:
            raise EvoVLMError(f"{path} was chosen for other fitness settings ({plan.settings}) than this run's "
                              f"({settings}); was the config changed?")
        return plan
    stage_dir.mkdir(parents=True, exist_ok=True)
    with make_backend(spec) as backend:
        calibration = calibrate(spec, genome, backend, progress=progress, label=label)
    plan = build_plan(settings, calibration[0]["weights"], calibration)
    plan.write(stage_dir)
    return plan


def _test_score(config: EvolveConfig, backend: Backend, history: History, best: Best, genome: Any) -> dict:
    """Re-score the chosen candidate on the held-out test split (once; a resume reuses the record)."""
    previous = [r for r in history.of_type("test") if r["generation"] == best.generation and r["index"] == best.index]
    if previous:
        record = previous[-1]
    else:
        outcome = next(iter(backend.run([Task(best.generation, best.index, "test", best.genome)])))
        if outcome.fatal:
            raise EvoVLMError(outcome.error or "test scoring failed")
        record = {"type": "test", "generation": best.generation, "index": best.index, "fitness": outcome.fitness,
                  "metric": outcome.metric, "error": outcome.error, "score": outcome.score,
                  "wall_s": round(outcome.wall_s, 4), "genome": best.genome,
                  "candidate": genome.describe(best.genome)}
        history.append(record)
    test = config.test
    split, limit = (test.split, test.limit) if test.kind == "benchmark" else (None, None)
    return {"benchmark": test.source, "split": split, "limit": limit, "metric": record.get("metric"),
            "fitness": record.get("fitness"), "error": record.get("error"), "score": record.get("score")}


def _save_ps_model(config: EvolveConfig, genome: Any, best: Best, stage_dir: Path, result: dict) -> Path:
    from evovlm.merge.engine import merge_checkpoints

    recipe = genome.decode(best.genome)
    model_dir = merge_checkpoints(recipe, stage_dir / MODEL_DIR, overwrite=True, progress=config.runtime.progress)
    card = model_dir / "README.md"
    write_atomic(card, card.read_text(encoding="utf-8") + evolution_section(config, "ps", result))
    return model_dir


def _save_dfs_model(config: EvolveConfig, genome: Any, best: Best, stage_dir: Path, result: dict) -> Path:
    """Build the DFS model of the best candidate, keep only the layers it uses, save it atomically."""
    from evovlm.dfs.modeling import EvoDFSForCausalLM
    from evovlm.io.resolve import resolve_model_path
    from evovlm.merge.engine import TOKENIZER_FILES

    dfs = genome.config
    model_a = load_causal_lm(dfs.model_a, "cpu", "auto")
    model_b = load_causal_lm(dfs.model_b, "cpu", "auto")
    candidate = genome.decode(best.genome)
    model = EvoDFSForCausalLM.from_models(model_a, model_b, list(candidate.path), list(candidate.scales)).pruned()
    final = stage_dir / MODEL_DIR
    sweep_stale(stage_dir, ".model.partial-")  # left by a killed run
    tmp = make_temp_dir(stage_dir, ".model.partial-")
    try:
        model.save_pretrained(tmp)
        source = resolve_model_path(dfs.model_a)
        for name in TOKENIZER_FILES:
            if (source / name).is_file() and not (tmp / name).exists():
                shutil.copy2(source / name, tmp / name)
        (tmp / "README.md").write_text(dfs_card(config, model, dfs.model_a, dfs.model_b, result), encoding="utf-8")
        umask_permissions(tmp)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final

