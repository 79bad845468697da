"""Candidate evaluators: genes in, fitness out. One lives in each worker.

* :class:`PSEvaluator` holds the base and sources in memory (:class:`ResidentSources`) and
  one live target model; a candidate is merged straight into it (no checkpoint per candidate).
* :class:`DFSEvaluator` holds models A and B once, wrapped in one :class:`EvoDFSForCausalLM`
  storing all their layers; a candidate only changes the path and scales it runs.
* :class:`SyntheticEvaluator` scores the genes themselves (no model): tests and benchmarks
  of the search loop.

Scores come from a registered benchmark of the evaluator (any name, split, limit, data seed,
generation overrides, metric key), or from a ``callable(model, tokenizer_or_processor)``.
A candidate that raises or scores NaN becomes an :class:`Outcome` with an ``error``; problems
no candidate can escape (an unknown metric key) are ``fatal`` and stop the run.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from evovlm.errors import EvoVLMError
from evovlm.evolve.config import FROM_PS, EvolveConfig, FitnessConfig
from evovlm.evolve.preflight import import_callable, load_fitness_benchmark, require_causal_lm
from evovlm.evolve.subset import SubsetPlan

ROLES = ("fitness", "validation", "test")
CALIBRATION = "calibration"  # a Task role: the fitness section on the whole set, with each item's scores
DEFAULT_METRIC = {"mgsm": "acc_ja", "rouge-ja": "rougeL_ja"}  # the paper's scores for MGSM-JA and VQA


class FatalEvaluationError(EvoVLMError):
    """A problem with the setup, not the candidate: every candidate would fail the same way."""


@dataclass
class Task:
    generation: int
    index: int
    role: str
    genes: list[float]
    shard: int = 0  # with shards > 1: this task generates only shard ``shard`` of the candidate's fitness set
    shards: int = 1


@dataclass
class Outcome:
    generation: int
    index: int
    role: str
    fitness: float | None = None
    score: dict | None = None
    metric: str | None = None
    error: str | None = None
    traceback: str | None = None
    fatal: bool = False
    wall_s: float = 0.0
    merge_s: float = 0.0
    eval_s: float = 0.0
    worker: str = ""
    responses: dict[int, str] | None = None  # a shard's responses by sample index (no fitness yet)
    items: dict | None = None  # calibration: {"weights": the metric's, "columns": each score's value per item}


@dataclass
class StageSpec:
    """Everything a worker needs to build its evaluator (picklable)."""

    stage: str  # "ps" | "dfs"
    config: EvolveConfig
    model_a: str | None = None  # DFS: the resolved model A (the PS model in ps+dfs)
    subset: SubsetPlan | None = None  # reduced fitness: the items each candidate is scored on

    def fitness_for(self, role: str) -> FitnessConfig:
        spec = getattr(self.config, "fitness" if role == CALIBRATION else role)
        if spec is None:
            raise FatalEvaluationError(f"no '{role}' section in the config")
        return spec


def make_genome(spec: StageSpec):
    """The genome of a stage (reads only config.json files)."""
    from evovlm.evolve.genome import DFSGenome, PSGenome, num_decoder_layers

    bounds = spec.config.optimizer_for(spec.stage).bounds
    if spec.stage == "ps":
        return PSGenome(spec.config.ps, bounds=bounds)
    dfs = spec.config.dfs
    model_a = spec.model_a or dfs.model_a
    if model_a == FROM_PS:
        raise EvoVLMError("the DFS stage needs the PS model: run the PS stage first")
    require_causal_lm(model_a, "dfs.model_a")
    return DFSGenome(dfs.model_copy(update={"model_a": model_a}), num_decoder_layers(model_a),
                     num_decoder_layers(dfs.model_b), bounds=bounds)


def build_evaluator(spec: StageSpec, device: str | None = None, threads: int | None = None) -> "Evaluator":
    if spec.config.fitness.kind == "synthetic":
        return SyntheticEvaluator(spec)
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(spec.config.seed)
    return (PSEvaluator if spec.stage == "ps" else DFSEvaluator)(spec, device)


class Evaluator:
    """Turns a :class:`Task` into an :class:`Outcome`; never raises for a bad candidate."""

    def __init__(self, spec: StageSpec) -> None:
        self.spec = spec
        self.worker = f"{os.uname().nodename}:{os.getpid()}"
        self._applied: tuple[float, ...] | None = None

    def apply(self, genes: np.ndarray) -> None:
        """Make the live model the candidate (merge / set path)."""

    def score(self, role: str, genes: np.ndarray) -> tuple[float, dict | None, str | None]:
        raise NotImplementedError

    def shard_responses(self, role: str, shard: int, shards: int) -> dict[int, str]:
        raise FatalEvaluationError("only a model scored on a benchmark can be evaluated in shards")

    def calibrate(self) -> tuple[float, dict, str, dict]:
        raise FatalEvaluationError("fitness.subset: only a model scored on a benchmark has items to choose from")

    def evaluate(self, task: Task) -> Outcome:
        outcome = Outcome(task.generation, task.index, task.role, worker=self.worker)
        started = time.perf_counter()
        try:
            genes = np.asarray(task.genes, dtype=float)
            if tuple(task.genes) != self._applied:  # the next shard of the same candidate needs no re-merge
                self._applied = None
                self.apply(genes)
                self._applied = tuple(task.genes)
            merged = time.perf_counter()
            outcome.merge_s = merged - started
            if task.role == CALIBRATION:
                outcome.fitness, outcome.score, outcome.metric, outcome.items = self.calibrate()
                outcome.eval_s = time.perf_counter() - merged
                outcome.wall_s = time.perf_counter() - started
                return outcome
            if task.shards > 1:
                outcome.responses = self.shard_responses(task.role, task.shard, task.shards)
                outcome.eval_s = time.perf_counter() - merged
                outcome.wall_s = time.perf_counter() - started
                return outcome
            fitness, outcome.score, outcome.metric = self.score(task.role, genes)
            outcome.eval_s = time.perf_counter() - merged
            if fitness is None or not math.isfinite(float(fitness)):
                raise ValueError(f"fitness is {fitness}")
            outcome.fitness = float(fitness)
        except FatalEvaluationError as exc:
            outcome.error, outcome.fatal = str(exc), True
        except Exception as exc:  # the candidate failed: logged, worst fitness, the run goes on
            outcome.error = f"{type(exc).__name__}: {exc}"
            outcome.traceback = traceback.format_exc(limit=8)
        outcome.wall_s = time.perf_counter() - started
        return outcome


class SyntheticEvaluator(Evaluator):
    """Scores the genes: ``sphere`` (-sum((genes - target)^2), optimum at ``target``) or ``fn(genes)``."""

    def __init__(self, spec: StageSpec) -> None:
        super().__init__(spec)
        self.functions = {}
        for role in ROLES:
            fitness = getattr(spec.config, role)
            if fitness is not None and fitness.kind == "synthetic":
                self.functions[role] = fitness

    def score(self, role: str, genes: np.ndarray) -> tuple[float, dict | None, str | None]:
        fitness = self.functions[role]
        if fitness.sleep_s:
            time.sleep(fitness.sleep_s)
        if fitness.synthetic == "sphere":
            return -float(np.sum((genes - np.asarray(fitness.target, dtype=float)) ** 2)), None, "sphere"
        function = import_callable(fitness.synthetic, f"{role}.synthetic")
        return function(genes), None, getattr(function, "__name__", "synthetic")


class _ModelEvaluator(Evaluator):
    """Shared scoring of the live model (``self.runner``) on benchmarks or callables."""

    runner: Any

    def __init__(self, spec: StageSpec, device: str | None) -> None:
        super().__init__(spec)
        self.genome = make_genome(spec)
        self.device = device
        self._scorers: dict[str, Any] = {}

    def _load_runner(self, ref: str):
        from evovlm.eval.runners import load_runner
        from evovlm.io.resolve import resolve_model_path

        return load_runner(resolve_model_path(ref), device=self.device, dtype=self.spec.config.runtime.dtype)

    def _scorer(self, role: str):
        if role not in self._scorers:
            subset = self.spec.subset if role == "fitness" else None
            self._scorers[role] = make_scorer(self.spec.fitness_for(role), role, subset)
        return self._scorers[role]

    def calibrate(self) -> tuple[float, dict, str, dict]:
        scorer = self._scorer(CALIBRATION)
        if not isinstance(scorer, BenchmarkScorer):
            raise FatalEvaluationError("fitness.subset: only a benchmark fitness has items to choose from")
        return scorer.with_items(self.runner)

    def score(self, role: str, genes: np.ndarray) -> tuple[float, dict | None, str | None]:
        return self._scorer(role)(self.runner)

    def shard_responses(self, role: str, shard: int, shards: int) -> dict[int, str]:
        scorer = self._scorer(role)
        if not isinstance(scorer, BenchmarkScorer):
            raise FatalEvaluationError(f"{role}: only a benchmark fitness can be evaluated in shards, "
                                       f"not a callable")
        return scorer.shard_responses(self.runner, shard, shards)


class PSEvaluator(_ModelEvaluator):
    def __init__(self, spec: StageSpec, device: str | None) -> None:
        from evovlm.merge.engine import ResidentSources

        super().__init__(spec, device)
        template = self.genome.decode(self.genome.initial_mean(0.5 * (self.genome.b0 + self.genome.b1)))
        self.runner = self._load_runner(template.target_ref())
        self.resident = ResidentSources.load(template).placed_for(self.runner.model.device)

    def apply(self, genes: np.ndarray) -> None:
        from evovlm.merge.engine import merge_into_module

        merge_into_module(self.runner.model, self.genome.decode(genes), self.resident)


class DFSEvaluator(_ModelEvaluator):
    def __init__(self, spec: StageSpec, device: str | None) -> None:
        super().__init__(spec, device)
        runner_a = self._load_runner(self.genome.config.model_a)
        model_b = load_causal_lm(self.genome.config.model_b, runner_a.device, runner_a.dtype)
        from evovlm.dfs.modeling import EvoDFSForCausalLM
        from evovlm.eval.runners import make_runner

        self.model = EvoDFSForCausalLM.from_models(runner_a.model, model_b)
        self.runner = make_runner(self.model, runner_a.tokenizer, name="dfs-candidate")

    def apply(self, genes: np.ndarray) -> None:
        candidate = self.genome.decode(genes)
        self.model.set_path(list(candidate.path), list(candidate.scales))


def load_causal_lm(ref: str, device: Any, dtype: Any):
    from transformers import AutoModelForCausalLM

    from evovlm.dfs import register
    from evovlm.io.checkpoint import check_weights_format
    from evovlm.io.resolve import resolve_model_path

    register()
    path = resolve_model_path(ref)
    check_weights_format(ref, path, None)  # evolution reads safetensors only
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, trust_remote_code=False,
                                                     dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise EvoVLMError(f"cannot load {ref} as a causal LM: {exc}") from None
    return model.to(device).eval()


# -- scorers ---------------------------------------------------------------------------------
def make_scorer(fitness: FitnessConfig, section: str = "fitness", subset: SubsetPlan | None = None):
    """``scorer(runner) -> (fitness, summary, metric)`` for one fitness section (a :class:`BenchmarkScorer`
    for a benchmark, which can also score a candidate in shards)."""
    if fitness.kind == "callable":
        function = import_callable(fitness.callable, "callable")

        def call(runner: Any) -> tuple[float, dict | None, str | None]:
            value = function(runner.model, getattr(runner, "processor", runner.tokenizer), **fitness.arguments)
            return float(value), None, getattr(function, "__name__", "callable")
        return call
    if fitness.kind != "benchmark":
        raise FatalEvaluationError("a synthetic objective cannot score a model")
    return BenchmarkScorer(fitness, section, subset)


class BenchmarkScorer:
    """A fitness section's benchmark, metric and generation settings.

    Called with a runner, it generates on the whole fitness set and scores. In shards, each shard
    generates a share of the generation batches (:func:`shard_batches`) and :meth:`combine` scores
    all the responses at once, so a sharded fitness equals the unsharded one bit for bit: the same
    batches produce the same responses, and the same function scores them.

    With a ``subset`` plan it generates on the plan's items only, and the plan turns their scores
    into the fitness (an estimate of the whole set's, or the subset's mean).
    """

    def __init__(self, fitness: FitnessConfig, section: str, subset: SubsetPlan | None = None) -> None:
        from dataclasses import replace

        from evovlm.eval.evaluate import generation_settings

        try:
            self.bench = load_fitness_benchmark(fitness, section)
            self.settings = generation_settings(self.bench, fitness.generation or None)
        except EvoVLMError as exc:  # every candidate would fail on it
            raise FatalEvaluationError(str(exc)) from None
        self.subset = subset
        if subset is not None:
            if subset.n_items != len(self.bench.samples):
                raise FatalEvaluationError(f"the subset was chosen from {subset.n_items} fitness items, but the "
                                           f"fitness set has {len(self.bench.samples)}")
            self.bench = replace(self.bench, samples=[self.bench.samples[i] for i in subset.items])
        metric = fitness.metric or DEFAULT_METRIC.get(self.bench.metric, "acc_ja")
        self.weights = metric if isinstance(metric, dict) else {metric: 1.0}
        self.label = metric if isinstance(metric, str) else " + ".join(
            key if weight == 1 else f"{weight:g}*{key}" for key, weight in self.weights.items())

    def __call__(self, runner: Any) -> tuple[float, dict | None, str | None]:
        return self.combine(dict(enumerate(self._answer(runner, None))))

    def _answer(self, runner: Any, batches: range | None) -> list[str | None]:
        samples = self.bench.samples
        images = [s.image for s in samples] if self.bench.kind == "vqa" else None
        return runner.answer([s.question for s in samples], self.settings, images=images, progress=False,
                             batches=batches)

    def shard_responses(self, runner: Any, shard: int, shards: int) -> dict[int, str]:
        responses = self._answer(runner, shard_batches(len(self.bench.samples), self.settings.batch_size, shard,
                                                       shards))
        return {index: response for index, response in enumerate(responses) if response is not None}

    def combine(self, responses: dict[int, str]) -> tuple[float, dict | None, str | None]:
        """The fitness of a candidate from all its responses (by sample index)."""
        fitness, summary, columns = self._score(responses)
        if self.subset is not None:
            return self.subset.estimate(columns), summary, f"{self.label} ({self._subset_label()})"
        return fitness, summary, self.label

    def with_items(self, runner: Any) -> tuple[float, dict, str, dict]:
        """The fitness and summary on every item, and the metric's weights with each of its scores' values
        on each item (calibration)."""
        fitness, summary, columns = self._score(dict(enumerate(self._answer(runner, None))))
        return fitness, summary, self.label, {"weights": dict(self.weights),
                                              "columns": {key: columns[key] for key in self.weights}}

    def _score(self, responses: dict[int, str]) -> tuple[float, dict, dict[str, list[float]]]:
        """(weighted fitness, summary, per-item columns) of all the responses."""
        from evovlm.eval.evaluate import SUMMARY_META, score_responses
        from evovlm.eval.metrics import item_columns

        missing = [index for index in range(len(self.bench.samples)) if index not in responses]
        if missing:
            raise ValueError(f"no response to {len(missing)} of the {len(self.bench.samples)} fitness samples")
        summary, samples = score_responses(self.bench, [responses[index] for index in range(len(self.bench.samples))])
        missing_keys = [key for key in self.weights if key not in summary or key in SUMMARY_META]
        if missing_keys:
            keys = [k for k in summary if k not in SUMMARY_META and not k.endswith(("_ci_low", "_ci_high"))]
            raise FatalEvaluationError(f"metric {missing_keys[0]!r} is not a score of {self.bench.name}; "
                                       f"its scores: {', '.join(keys)}")
        fitness = sum(weight * float(summary[key]) for key, weight in self.weights.items())
        return fitness, summary, item_columns(self.bench.metric, samples)

    def _subset_label(self) -> str:
        plan = self.subset
        return (f"irt estimate from {len(plan.items)} of {plan.n_items} items, {plan.method} subset"
                if plan.estimator == "irt" else f"mean of a {plan.method} subset of {len(plan.items)} items")


def shard_batches(samples: int, batch_size: int, shard: int, shards: int) -> range:
    """The generation batches (of ``ceil(samples / batch_size)``) that shard ``shard`` of ``shards`` generates:
    contiguous, every batch in exactly one shard, sizes differing by at most one batch."""
    batches = -(-samples // batch_size)
    return range(shard * batches // shards, (shard + 1) * batches // shards)
