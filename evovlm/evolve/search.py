"""The CMA-ES search loop of one stage, resumable from its own directory.

Per generation: ask the whole population, evaluate the candidates not already in the history
(a resumed generation re-asks the very same candidates from the saved optimiser state and
only evaluates the ones that were in flight), append one history line per candidate as it
finishes, tell, optionally score the generation's best on the validation split, save the
optimiser state, append a ``generation`` line, and refresh the best-so-far file and the plot.

CMA-ES minimises, so it is told ``-fitness``; a failed candidate is told a value worse than
any real one (only ranks matter to CMA-ES).

A genome whose start is a model in its own right (DFS with ``init: a``: model A itself) has
that start scored once, as an extra candidate of generation 0 (index = population) that
CMA-ES is not told about; it can be chosen as the best, so such a stage never ends below its
starting model on the fitness split.

With a reduced fitness (``fitness.subset``), the ``rerank`` best candidates are re-scored on the
whole fitness set once the generations are done, and the best of them there is the result: a
score on 20 items flatters the luckiest candidate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evovlm.errors import EvoVLMError
from evovlm.evolve.backends import Backend
from evovlm.evolve.evaluators import CALIBRATION, Outcome, StageSpec, Task
from evovlm.evolve.history import History
from evovlm.evolve.optimizer import Optimizer, latest_state, prune_states, state_path
from evovlm.evolve.rundir import HISTORY_NAME, STATE_DIR, Stage
from evovlm.schema import finite

FAILED_VALUE = 1e30  # told to CMA-ES for a failed candidate: ranked last


@dataclass
class Best:
    generation: int
    index: int
    genome: list[float]
    fitness: float
    validation: float | None = None
    rerank: float | None = None  # reduced fitness: its score on the whole fitness set

    def to_dict(self) -> dict:
        data = {"generation": self.generation, "index": self.index, "fitness": self.fitness,
                "validation": self.validation, "genome": self.genome}
        return data if self.rerank is None else {**data, "rerank": self.rerank}


@dataclass
class SearchResult:
    best: Best | None
    generations: int
    population: int
    trials: int
    failed: int
    history_path: Path


def _record(outcome: Outcome, genes: list[float], candidate: Any) -> dict:
    record = {"type": "candidate" if outcome.role == "fitness" else outcome.role,
              "generation": outcome.generation, "index": outcome.index, "fitness": outcome.fitness,
              "metric": outcome.metric, "error": outcome.error, "wall_s": round(outcome.wall_s, 4),
              "merge_s": round(outcome.merge_s, 4), "eval_s": round(outcome.eval_s, 4), "worker": outcome.worker,
              "genome": genes, "candidate": candidate, "score": outcome.score}
    if outcome.traceback:
        record["traceback"] = outcome.traceback
    return record


def _generation_record(generation: int, records: dict[int, dict], wall_s: float | None) -> dict:
    scores = [(r["fitness"], i) for i, r in sorted(records.items()) if r.get("fitness") is not None]
    best_fitness, best_index = max(scores, key=lambda s: (s[0], -s[1])) if scores else (None, None)
    return {"type": "generation", "generation": generation, "population": len(records),
            "best_fitness": best_fitness, "best_index": best_index,
            "mean_fitness": float(np.mean([s for s, _ in scores])) if scores else None,
            "failed": len(records) - len(scores), "wall_s": None if wall_s is None else round(wall_s, 3)}


def choose_best(history: History, generations: int, use_validation: bool) -> Best | None:
    """The final choice among the first ``generations``: best re-ranked candidate (reduced fitness), best
    validation among generation bests, or best fitness overall, by the rule of
    :meth:`evovlm.evolve.rundir.Stage.best` (the app shows a live run's choice with the same rule)."""
    records = [r for r in history.records if isinstance(r.get("generation"), int) and r["generation"] < generations]
    choice = Stage.from_records("", history.path.parent, records).best(use_validation)
    if choice is None:
        return None
    chosen = choice.candidate
    return Best(chosen.generation, chosen.index, chosen.genome, chosen.fitness, choice.validation, choice.rerank)


def run_search(spec: StageSpec, genome: Any, stage_dir: Path, backend: Backend, *, progress: bool = True,
               label: str = "", on_generation: Callable[[History, Best | None], None] | None = None) -> SearchResult:
    """Run (or resume) the search of one stage in ``stage_dir``; returns the best candidate."""
    from evovlm.progress import progress_bar

    config = spec.config
    opt_config, budget = config.optimizer_for(spec.stage), config.budget_for(spec.stage)
    stage_dir.mkdir(parents=True, exist_ok=True)
    state_dir = stage_dir / STATE_DIR
    history = History(stage_dir / HISTORY_NAME)
    optimizer = _start_or_resume(state_dir, opt_config, genome, config.seed)
    population = optimizer.population_size
    total = budget.generations_for(population)
    use_validation = config.validation is not None
    keep_states = config.runtime.keep_states
    if keep_states == "auto":
        keep_states = None if genome.size <= 1000 else 5
    _check_history_holds(history, optimizer.generation, population)
    _close_told_generations(history, optimizer.generation)

    outer = progress_bar(total=total, initial=min(optimizer.generation, total), desc=f"{label}generations",
                         unit="gen", disable=not progress, position=0)
    try:
        for generation in range(optimizer.generation, total):
            started = time.perf_counter()
            genomes = optimizer.ask_generation()
            extras = _extras(spec, genome, opt_config) if generation == 0 else []
            genomes = [*genomes, *(genes for _, genes in extras)]
            done = _finished_before_a_crash(history, generation, genomes)
            todo = [Task(generation, i, "fitness", genomes[i].tolist()) for i in range(len(genomes)) if i not in done]
            inner = progress_bar(total=len(genomes), initial=len(done), desc=f"{label}generation {generation}",
                                 unit="cand", leave=False, disable=not progress, position=1)
            for outcome in backend.run(todo):
                if outcome.fatal:
                    raise EvoVLMError(outcome.error or "evaluation failed")
                genes = genomes[outcome.index].tolist()
                record = _record(outcome, genes, genome.describe(genes))
                if outcome.index >= population:  # scored but not told (see above)
                    kind, _ = extras[outcome.index - population]
                    record.update({"start": True} if kind == "start" else {"source": kind})
                history.append(record)
                done[outcome.index] = record
                inner.update(1)
                if outcome.error and progress:
                    inner.write(f"{label}generation {generation} candidate {outcome.index} failed: {outcome.error}")
            inner.close()
            fitness = [done[i]["fitness"] for i in range(population)]
            if all(f is None for f in fitness):  # a setup problem (e.g. out of memory), not bad candidates
                raise EvoVLMError(f"every candidate of generation {generation} failed, e.g. {done[0]['error']}; "
                                  f"see {history.path}; fix the cause and continue with --resume")
            optimizer.tell(genomes[:population], [FAILED_VALUE if f is None else -f for f in fitness])
            if use_validation:
                _validate_generation_best(history, backend, genome, generation, done, label)
            optimizer.save(state_path(state_dir, generation))
            prune_states(state_dir, keep_states)
            history.append(_generation_record(generation, done, time.perf_counter() - started))
            best = choose_best(history, total, use_validation)
            outer.update(1)
            if best is not None:
                outer.set_postfix(best=f"{best.fitness:.4g}")
            if on_generation is not None:
                on_generation(history, best)
        subset = getattr(config.fitness, "subset", None)
        if spec.subset is not None and subset.rerank:
            _rerank(history, backend, genome, total, subset.rerank, label, progress)
    finally:
        outer.close()
        history.close()
    final = {(r["generation"], r["index"]): r for r in history.of_type("candidate")}  # a retry replaces a failure
    told = [r for key, r in final.items() if key[0] < total]
    return SearchResult(best=choose_best(history, total, use_validation), generations=total, population=population,
                        trials=len(told), failed=sum(1 for r in told if r.get("fitness") is None),
                        history_path=history.path)


def _extras(spec: Any, genome: Any, opt_config: Any) -> list[tuple[str, np.ndarray]]:
    """Generation 0's candidates beyond the population: the starting model (kind "start") and, with
    ``ps.score_sources``, each source alone (kind: the source's reference)."""
    extras = [("start", genome.initial_mean(opt_config.mean))] if getattr(genome, "start_is_a_model", False) else []
    if spec.stage == "ps" and spec.config.ps.score_sources:
        extras += genome.source_genes()
    return extras


def _start_or_resume(state_dir: Path, opt_config: Any, genome: Any, seed: int) -> Optimizer:
    """A fresh optimiser, or the one saved after the last finished generation."""
    latest = latest_state(state_dir)
    if latest is None:
        return Optimizer.create(opt_config, genome.initial_mean(opt_config.mean), seed)
    optimizer = Optimizer.load(latest[1])
    if optimizer.engine.dim != genome.size or optimizer.generation != latest[0] + 1:
        raise EvoVLMError(f"{latest[1]} does not match this run's config ({optimizer.engine.dim} genes saved, "
                          f"{genome.size} in the genome): was the config changed?")
    return optimizer


def _finished_before_a_crash(history: History, generation: int, genomes: list) -> dict[int, dict]:
    """Candidates of ``generation`` scored before a crash, by index: they are reused. Failed ones are
    tried again (a deterministic failure fails again the same way; a transient one may not)."""
    done = {i: r for i, r in history.candidates(generation).items() if r.get("fitness") is not None}
    for index, record in done.items():
        if index >= len(genomes) or record["genome"] != genomes[index].tolist():
            raise EvoVLMError(f"{history.path}: candidate {index} of generation {generation} differs from "
                              "what the saved optimiser state asks: the history and the state disagree "
                              "(was the config or the seed changed?)")
    return done


def _check_history_holds(history: History, told: int, population: int) -> None:
    """Every generation the saved optimiser state was told must have all its candidates in the history: without
    them the run's best would be chosen from what is left, silently (a deleted or truncated history.jsonl)."""
    for record in history.of_type("candidate"):  # evolve writes a finite number, or null for a failure
        fitness = record.get("fitness")
        if fitness is not None and not finite(fitness):
            raise EvoVLMError(f"{history.path}: candidate {record.get('index')} of generation "
                              f"{record.get('generation')} has fitness {fitness!r}, which evolve never writes: was "
                              "the history edited? Restore it, or start the run again with --overwrite")
    lost = [generation for generation in range(told) if len(history.candidates(generation)) < population]
    if lost:
        span = f"{lost[0]}" if len(lost) == 1 else f"{lost[0]}-{lost[-1]}" if lost[-1] - lost[0] == len(lost) - 1 \
            else ", ".join(map(str, lost[:5])) + (", ..." if len(lost) > 5 else "")
        raise EvoVLMError(f"{history.path} lacks candidates of generation(s) {span}, which the saved optimiser state "
                          f"says were scored: was the history deleted or cut short? Restore it, or start the run again "
                          f"with --overwrite")


def _close_told_generations(history: History, told: int) -> None:
    """A crash between saving a state and logging its generation line: add the missing lines."""
    closed = {r["generation"] for r in history.of_type("generation")}
    for generation in range(told):
        if generation not in closed:
            history.append(_generation_record(generation, history.candidates(generation), None))


def _rerank(history: History, backend: Backend, genome: Any, generations: int, count: int, label: str,
            progress: bool) -> None:
    """Re-score the ``count`` best candidates of a reduced-fitness search on the whole fitness set (once; a
    resume scores only those not done): the final choice is the best of them there, not the luckiest subset
    score (see :meth:`evovlm.evolve.rundir.Stage.best`)."""
    from evovlm.progress import progress_bar

    scored = [r for r in history.of_type("candidate") if r.get("fitness") is not None and "source" not in r
              and r["generation"] < generations]
    top = sorted(scored, key=lambda r: (-r["fitness"], r["generation"], r["index"]))[:count]
    done = {(r["generation"], r["index"]) for r in history.of_type("rerank")}
    tasks = [Task(r["generation"], r["index"], CALIBRATION, r["genome"]) for r in top
             if (r["generation"], r["index"]) not in done]
    bar = progress_bar(total=len(top), initial=len(top) - len(tasks), desc=f"{label}re-rank on the whole set",
                       unit="cand", disable=not progress)
    for outcome in backend.run(tasks):
        if outcome.fatal:
            raise EvoVLMError(outcome.error or "re-ranking failed")
        genes = next(t.genes for t in tasks if (t.generation, t.index) == (outcome.generation, outcome.index))
        record = {**_record(outcome, genes, genome.describe(genes)), "type": "rerank"}
        history.append(record)
        bar.update(1)
    bar.close()


def _validate_generation_best(history: History, backend: Backend, genome: Any, generation: int,
                              done: dict[int, dict], label: str) -> None:
    if any(r["generation"] == generation for r in history.of_type("validation")):
        return  # scored before a crash
    scores = [(r["fitness"], i) for i, r in done.items() if r.get("fitness") is not None]
    if not scores:
        return
    _, index = max(scores, key=lambda s: (s[0], -s[1]))
    genes = done[index]["genome"]
    for outcome in backend.run([Task(generation, index, "validation", genes)]):
        if outcome.fatal:
            raise EvoVLMError(outcome.error or "validation failed")
        history.append(_record(outcome, genes, genome.describe(genes)))


def calibration_genomes(spec: StageSpec, genome: Any, count: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(label, genes) scored item by item before a reduced-fitness search: each source as the space renders
    it alone (PS), the search's start, and ``count`` merges drawn uniformly inside the bounds (seeded)."""
    opt_config = spec.config.optimizer_for(spec.stage)
    chosen = list(genome.source_genes()) if spec.stage == "ps" else []
    chosen.append(("start", genome.initial_mean(opt_config.mean)))
    low, high = opt_config.bounds
    rng = np.random.default_rng([seed, 1])  # not the search's stream
    chosen += [(f"random {k}", rng.uniform(low, high, genome.size)) for k in range(count)]
    return chosen


def calibrate(spec: StageSpec, genome: Any, backend: Backend, *, progress: bool = True,
              label: str = "") -> list[dict]:
    """Score the calibration candidates on every fitness item: one entry per candidate, with ``right``,
    its values of the main score on each item (see :mod:`evovlm.evolve.subset`)."""
    from evovlm.evolve.subset import main_key
    from evovlm.progress import progress_bar

    settings = spec.config.fitness.subset
    candidates = calibration_genomes(spec, genome, settings.calibration, settings.seed)
    tasks = [Task(-1, index, CALIBRATION, genes.tolist()) for index, (_, genes) in enumerate(candidates)]
    entries: dict[int, dict] = {}
    bar = progress_bar(total=len(tasks), desc=f"{label}calibration", unit="cand", disable=not progress)
    for outcome in backend.run(tasks):
        if outcome.error or outcome.items is None:
            raise EvoVLMError(f"fitness.subset: calibration candidate {outcome.index} "
                              f"({candidates[outcome.index][0]}) failed: {outcome.error}")
        weights, columns = outcome.items["weights"], outcome.items["columns"]
        entries[outcome.index] = {"label": candidates[outcome.index][0], "genome": tasks[outcome.index].genes,
                                  "fitness": outcome.fitness, "wall_s": round(outcome.wall_s, 4),
                                  "weights": weights, "right": columns[main_key(weights)]}
        bar.update(1)
    bar.close()
    return [entries[index] for index in sorted(entries)]

