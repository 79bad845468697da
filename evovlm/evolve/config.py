"""The evolution config: a declarative schema (pydantic v2), YAML in, resolved YAML back.

::

    mode: ps                    # ps | dfs | ps+dfs (PS first; its result is DFS's model A)
    seed: 0                     # CMA-ES sampling; the same seed gives the same run
    ps:
      method: dare_ties         # dare_ties (default) | ties | task_arithmetic | linear | dare_linear
      base_model: zoo:base
      target: null              # e.g. a VLM whose language tower receives the merge
      models: [zoo:ja, zoo:math]            # or {model: REF, weight: 1.0} to pin a value (no gene)
      group_size: model         # model (one group: EvoLLM-JP's 2 genes per model) | N decoder blocks per group
      weight_range: [0, 1]      # a gene g in [0, 1] maps to lo + g * (hi - lo)
      density_range: [0, 1]
      parameters: {}            # method options: lambda, normalize, rescale
      merge_seed: 0             # DARE masks
      score_sources: false      # also score each source alone in generation 0 (a baseline; not told to CMA-ES)
    dfs:
      model_a: zoo:ja           # embeddings, tokenizer, head, first and last block; "ps" in ps+dfs
      model_b: zoo:math
      repeats: 3                # r: the M layers laid out r times, T = M * r indicator genes
      scales: matrix            # matrix (M x M genes, the paper's W) | none (all 1)
      scale_range: [0, 2]
      init: a                   # a: start at model A itself, its layers in the middle repetition |
                                # a-first | uniform: every gene 0.5
    optimizer: {name: cma, sigma: 0.1667, population: null, bounds: [0, 1], mean: 0.5}
    budget: {trials: 100}       # or {generations: G}; trials round up to whole generations
    fitness:                    # exactly one of benchmark, callable, synthetic (`fitness: NAME` = a benchmark)
      benchmark: zoo-mgsm-ja
      split: fitness
      limit: 100
      data_seed: null           # for generated benchmarks: a fresh draw instead of a split
      metric: acc_ja            # a key of the evaluator's summary, or weights of several:
                                # {content_ja: 1.0, rougeL_ja: 0.01} (content first, ROUGE breaks ties)
      generation: {max_new_tokens: 256}
      subset: null              # reduced fitness: {method: irt | entropy | stratified | random, size: 20,
                                #   seed: 0, estimator: irt | mean, calibration: 8, rerank: 5} (evolve.subset)
                                # a callable instead of a benchmark: {callable: "module:function",
                                #   arguments: {problems: 25}} -> fn(model, tokenizer, **arguments)
    validation: null            # optional, like fitness: scores each generation's best; the final
                                # model is the generation best with the best validation score
    test: {benchmark: zoo-mgsm-ja, split: test, metric: acc_ja}   # optional held-out re-score
    runtime: {workers: auto, devices: auto, dtype: null, save_model: true, plot: true, keep_states: auto,
              backend: local, ray_address: null,   # backend ray: Ray actors, on a cluster at ray_address
              shards: 1}                # ray: split each candidate's benchmark into shards for free actors

``ps`` and ``dfs`` may each carry their own ``optimizer``, ``budget``, ``fitness`` and ``test``
keys, which override the top-level ones for that stage (``fitness`` and ``test``: whole sections).

This module checks what the config itself says. What needs the world outside it (model
references, config.json files, user callables, benchmarks, genomes) is checked by
:func:`evovlm.evolve.preflight.preflight`, once, before a run does any work.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    PlainSerializer,
    Strict,
    Tag,
    field_validator,
    model_validator,
)

from evovlm.dtypes import DTYPE_NAMES
from evovlm.io.yamlfile import read_yaml_file
from evovlm.schema import Count, NonNegativeInt, Number, Range, Section, finite, parse

MODES = ("ps", "dfs", "ps+dfs")
SYNTHETIC = ("sphere",)
FROM_PS = "ps"  # dfs.model_a in ps+dfs mode
Population = Annotated[int, Strict(), Field(ge=4)]  # below 4, CMA-ES's rank-mu update has no weight
Overrides = Annotated[dict[str, Any], BeforeValidator(lambda value: {} if value is None else value)]


def _function_ref(value: Any) -> Any:
    if callable(value) or (isinstance(value, str) and value.strip()):
        return value
    raise ValueError(f"expected 'module:function' or a Python callable, got {value!r}")


def function_name(value: Any) -> str:
    """A function reference as written in YAML: a Python callable becomes ``module:qualname``."""
    return f"{value.__module__}:{value.__qualname__}" if callable(value) else str(value)


# imported by preflight, not here; written back to YAML as ``module:qualname``
FunctionRef = Annotated[Any, AfterValidator(_function_ref), PlainSerializer(function_name)]


class OptimizerConfig(Section):
    name: Literal["cma", "sep_cma"] = "cma"
    sigma: Annotated[Number, Field(gt=0)] = 1.0 / 6.0
    population: Optional[Population] = None  # default 4 + floor(3 ln n)
    bounds: Range = (0.0, 1.0)
    mean: Number = 0.5  # every gene's start (DFS init: a overrides the DFS genes)
    max_resampling: Optional[Count] = None  # default 100 up to 100 genes, else 1 (then clip to bounds)

    @model_validator(mode="after")
    def _mean_inside(self) -> "OptimizerConfig":
        if not self.bounds[0] <= self.mean <= self.bounds[1]:
            raise ValueError(f"mean {self.mean} lies outside the bounds {list(self.bounds)}")
        return self

    def population_for(self, n_genes: int) -> int:
        return self.population or 4 + math.floor(3 * math.log(n_genes))


class BudgetConfig(Section):
    generations: Optional[Count] = None
    trials: Optional[Count] = None

    @model_validator(mode="after")
    def _one(self) -> "BudgetConfig":
        if self.generations is not None and self.trials is not None:
            raise ValueError("give generations or trials, not both")
        return self

    def generations_for(self, population: int) -> int:
        if self.generations is not None:
            return self.generations
        return math.ceil((self.trials or 100) / population)


class SubsetConfig(Section):
    """Reduced fitness (:mod:`evovlm.evolve.subset`): score each candidate on ``size`` chosen items."""

    method: Literal["irt", "entropy", "stratified", "random"]
    size: Count
    seed: NonNegativeInt = 0
    estimator: Literal["irt", "mean"] = "irt"  # irt: estimate the whole set's score; mean: the subset's
    calibration: NonNegativeInt = 8  # random merges scored item by item first, besides the sources and the start
    rerank: NonNegativeInt = 5  # the best this many are re-scored on the whole set; the best there is the result


class BenchmarkFitness(Section):
    """Score the candidate model on a benchmark (built in, registered by a plugin or ``imports``)."""

    kind: ClassVar[str] = "benchmark"
    benchmark: str
    split: Optional[str] = None
    limit: Optional[Count] = None
    data_seed: Optional[NonNegativeInt] = None
    data: Optional[str] = None  # read the benchmark from this file/directory
    # a key of the evaluator's summary (default acc_ja for mgsm, rougeL_ja for rouge-ja), or
    # {key: weight}: the fitness is the weighted sum
    metric: Union[str, dict[str, float], None] = None
    generation: dict[str, Any] = Field(default_factory=dict)
    imports: list[str] = Field(default_factory=list)  # modules that register benchmarks
    subset: Optional[SubsetConfig] = None  # fitness only: a few items per candidate, the rest estimated

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, metric: Any) -> Any:
        if metric is None or isinstance(metric, str):
            return metric
        if not isinstance(metric, dict):
            raise ValueError(f"a summary key, or a mapping of keys to weights, got {metric!r}")
        if not metric or not all(isinstance(key, str) for key in metric):
            raise ValueError("a summary key, or a non-empty mapping of keys to weights")
        for key, weight in metric.items():
            if not finite(weight):
                raise ValueError(f".{key}: expected a number, got {weight!r}")
        return {key: float(weight) for key, weight in metric.items()}

    @property
    def source(self) -> str:
        return self.benchmark


class CallableFitness(Section):
    """``fn(model, tokenizer_or_processor, **arguments) -> float``, named ``module:function``."""

    kind: ClassVar[str] = "callable"
    callable: FunctionRef
    arguments: dict[str, Any] = Field(default_factory=dict)  # keyword arguments: fn(model, tokenizer, **arguments)

    @property
    def source(self) -> str:
        return function_name(self.callable)


class SyntheticFitness(Section):
    """Scores genes, not models: ``sphere`` or ``fn(genes) -> float``. No model is loaded."""

    kind: ClassVar[str] = "synthetic"
    synthetic: FunctionRef
    target: Any = 0.5  # sphere: fitness = -sum((genes - target)^2); a number or one per gene
    sleep_s: Annotated[float, Field(ge=0)] = 0.0  # pretend each candidate takes this long

    @field_validator("synthetic")
    @classmethod
    def _objective(cls, value: Any) -> Any:
        if isinstance(value, str) and ":" not in value and value not in SYNTHETIC:
            raise ValueError(f"{value!r} is neither a built-in objective ({', '.join(SYNTHETIC)}) "
                             "nor 'module:function'")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, target: Any) -> Any:
        values = target if isinstance(target, list) else [target]
        if not values or not all(finite(value) for value in values):
            raise ValueError(f"a number, or a list of one number per gene, got {target!r}")
        return target

    @property
    def source(self) -> str:
        return function_name(self.synthetic)


FITNESS_KINDS = {cls.kind: cls for cls in (BenchmarkFitness, CallableFitness, SyntheticFitness)}


def _fitness_kind(data: Any) -> str | None:
    """The tag of a fitness section: which one of its kind keys it has (None: not exactly one)."""
    if isinstance(data, tuple(FITNESS_KINDS.values())):
        return f"fitness={data.kind}"
    given = [kind for kind in FITNESS_KINDS if isinstance(data, dict) and data.get(kind) is not None]
    return f"fitness={given[0]}" if len(given) == 1 else None


FitnessConfig = Annotated[
    Union[tuple(Annotated[cls, Tag(f"fitness={kind}")] for kind, cls in FITNESS_KINDS.items())],  # type: ignore
    Discriminator(_fitness_kind, custom_error_type="fitness_kind",
                  custom_error_message="give exactly one of benchmark, callable or synthetic"),
]


class ModelEntry(Section):
    model: str
    weight: Optional[Number] = None  # a number pins the value (no gene)
    density: Optional[Number] = None

    @field_validator("density")
    @classmethod
    def _share(cls, density: float | None) -> float | None:
        if density is not None and not 0.0 <= density <= 1.0:
            raise ValueError(f"{density} outside [0, 1]")
        return density


class StageSection(Section):
    """What a stage section may override: the top-level optimizer and budget (keys), fitness and test
    (whole sections; in ps+dfs, PS can be evolved on one task and the DFS on top of it on another)."""

    optimizer: Overrides = Field(default_factory=dict)
    budget: Overrides = Field(default_factory=dict)
    fitness: Optional[FitnessConfig] = None
    test: Optional[FitnessConfig] = None

    @field_validator("fitness", "test", mode="before")
    @classmethod
    def _benchmark_name(cls, section: Any) -> Any:
        return _named_benchmark(section)


class PSConfig(StageSection):
    models: list[ModelEntry] = Field(min_length=1)
    method: str = "dare_ties"
    base_model: Optional[str] = None
    target: Optional[str] = None
    group_size: Union[Literal["model"], int] = "model"
    weight_range: Range = (0.0, 1.0)
    density_range: Range = (0.0, 1.0)
    parameters: Overrides = Field(default_factory=dict)  # checked with the first recipe, by preflight
    merge_seed: NonNegativeInt = 0
    score_sources: Annotated[bool, Strict()] = False

    @field_validator("models", mode="before")
    @classmethod
    def _entries(cls, models: Any) -> Any:
        if not isinstance(models, list) or not models:
            raise ValueError("a non-empty list of models to merge is required")
        return [{"model": entry} if isinstance(entry, str) else entry for entry in models]

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, method: Any) -> str:
        from evovlm.merge.recipe import canonical_method  # torch: imported when a PS section is read

        return canonical_method(method)

    @field_validator("group_size", mode="before")
    @classmethod
    def _group_size(cls, size: Any) -> Any:
        if size == "layer":
            return 1
        if size != "model" and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"'model', 'layer' or a positive number of decoder blocks, got {size!r}")
        return size

    @field_validator("density_range")
    @classmethod
    def _within_unit(cls, span: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 <= span[0] and span[1] <= 1.0):
            raise ValueError(f"[{span[0]}, {span[1]}] must lie within [0.0, 1.0]")
        return span

    @model_validator(mode="after")
    def _base(self) -> "PSConfig":
        from evovlm.merge.methods import METHODS

        if METHODS[self.method].needs_base and not self.base_model:
            raise ValueError(f"method {self.method} needs a base_model (task vectors are taken against it)")
        return self


class DFSConfig(StageSection):
    model_a: str
    model_b: str
    repeats: Count = 3
    scales: Literal["matrix", "none"] = "matrix"  # the paper's M x M W, or all 1
    scale_range: Range = (0.0, 2.0)
    # a: start from model A, its layers in the middle repetition; a-first: in the first; uniform: every gene at the mean
    init: Literal["a", "a-first", "uniform"] = "a"


class RuntimeConfig(Section):
    workers: Union[Literal["auto"], Count] = "auto"  # auto: one per GPU, else 1
    devices: Union[Literal["auto"], list[str]] = "auto"  # auto: every GPU, else cpu
    dtype: Optional[Literal[tuple(DTYPE_NAMES)]] = None  # type: ignore[valid-type]  # default: bf16/fp16 on GPU
    save_model: Annotated[bool, Strict()] = True
    plot: Annotated[bool, Strict()] = True
    # Optimiser states kept: "auto" keeps all unless the genome is large (a 4288-gene DFS state holds a
    # 147 MB covariance matrix), then the last 5; or a number; or null for all.
    keep_states: Union[Literal["auto"], Count, None] = "auto"
    progress: Annotated[bool, Strict()] = True
    # local: this process, or a pool of processes; ray: one Ray actor per worker (evovlm.evolve.ray_backend),
    # on the cluster at ray_address (host:port, or "auto"), else on a local Ray started for the run
    backend: Literal["local", "ray"] = "local"
    ray_address: Optional[str] = None
    # ray: each candidate's benchmark is split into this many shards (at generation-batch boundaries),
    # taken by whichever actor is free, so a generation does not wait on one slow actor's last candidate
    shards: Count = 1

    @field_validator("workers", "keep_states", mode="before")
    @classmethod
    def _count_or_auto(cls, value: Any) -> Any:
        if value == "auto" or value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"'auto' or an integer >= 1, got {value!r}")
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, devices: Any) -> Any:
        if devices != "auto" and (not isinstance(devices, list) or not devices
                                  or not all(isinstance(d, str) for d in devices)):
            raise ValueError(f"'auto' or a list such as [cuda:0, cuda:1], got {devices!r}")
        return devices


def _named_benchmark(section: Any) -> Any:
    return {"benchmark": section} if isinstance(section, str) else section


class EvolveConfig(Section):
    mode: Literal["ps", "dfs", "ps+dfs"]
    seed: NonNegativeInt = 0
    ps: Optional[PSConfig] = None
    dfs: Optional[DFSConfig] = None
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    fitness: FitnessConfig
    validation: Optional[FitnessConfig] = None
    test: Optional[FitnessConfig] = None
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        mode = data.setdefault("mode", "ps" if "dfs" not in data else "dfs")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if "fitness" not in data:
            raise ValueError("missing 'fitness' (a benchmark, callable or synthetic objective)")
        for key in ("fitness", "validation", "test"):
            data[key] = _named_benchmark(data.get(key)) or None
        for key in ("optimizer", "budget", "runtime"):
            if data.get(key) is None:
                data.pop(key, None)
        stages = mode.split("+")
        for stage in stages:
            if not isinstance(data.get(stage), (dict, Section)):
                raise ValueError(f"mode {mode} needs a '{stage}' section (a mapping)")
        for stage in ("ps", "dfs"):
            if stage not in stages and data.get(stage) is not None:
                raise ValueError(f"a '{stage}' section is given but mode is {mode}; set mode: "
                                 f"{'ps+dfs' if mode != 'ps+dfs' else mode} or remove it")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "EvolveConfig":
        staged = [getattr(stage, key) for stage in (self.ps, self.dfs) if stage is not None
                  for key in ("fitness", "test")]
        sections = [s for s in (self.validation, self.test, *staged) if s is not None]
        if any((s.kind == "synthetic") != (self.fitness.kind == "synthetic") for s in sections):
            raise ValueError("a synthetic objective scores genes, not models: fitness, validation and "
                             "test must all be synthetic or all score models (benchmark / callable)")
        if self.dfs is not None:
            if self.dfs.model_a == FROM_PS and self.mode != "ps+dfs":
                raise ValueError("dfs.model_a: 'ps' (the PS result) only works in mode ps+dfs")
            if self.mode == "ps+dfs" and self.dfs.model_a != FROM_PS:
                raise ValueError("dfs.model_a: in ps+dfs mode model A is the PS result: write model_a: ps")
        if self.mode == "ps+dfs" and not self.runtime.save_model:
            raise ValueError("ps+dfs needs runtime.save_model: true (the PS model becomes DFS's model A)")
        tests = [(f"{name}.test", getattr(stage, "test")) for name, stage in (("ps", self.ps), ("dfs", self.dfs))
                 if stage is not None]
        for role, section in (("validation", self.validation), ("test", self.test), *tests):
            if getattr(section, "subset", None) is not None:
                raise ValueError(f"{role}.subset: only the fitness is reduced; {role} scores the whole set")
        subset = getattr(self.fitness, "subset", None)
        if subset is not None and subset.rerank and self.validation is not None:
            raise ValueError("fitness.subset.rerank and validation both choose the final model: give the "
                             "validation section or rerank > 0, not both (rerank: 0 keeps validation's choice)")
        if self.runtime.shards > 1:
            if self.runtime.backend != "ray":
                raise ValueError("runtime.shards: only the ray backend shards candidates (set runtime.backend: ray)")
            if self.fitness.kind != "benchmark":
                raise ValueError("runtime.shards: only a benchmark fitness can be split into shards, "
                                 f"not a {self.fitness.kind} one")
        return self

    def stages(self) -> list[str]:
        return self.mode.split("+")

    def for_stage(self, stage: str) -> "EvolveConfig":
        """This config as ``stage`` runs it: the stage's own ``fitness`` and ``test`` replace the top-level
        ones (in ps+dfs, PS can be evolved on one task and the DFS on top of it on another)."""
        section = getattr(self, stage)
        update = {key: getattr(section, key) for key in ("fitness", "test") if getattr(section, key) is not None}
        return self.model_copy(update=update) if update else self

    def optimizer_for(self, stage: str) -> OptimizerConfig:
        overrides = getattr(self, stage).optimizer
        merged = {**self.optimizer.model_dump(), **overrides}
        return parse(OptimizerConfig, merged, "config", (stage, "optimizer"))

    def budget_for(self, stage: str) -> BudgetConfig:
        overrides = getattr(self, stage).budget
        merged = dict(overrides) if overrides else self.budget.model_dump()
        return parse(BudgetConfig, merged, "config", (stage, "budget"))

    def to_dict(self) -> dict:
        """The resolved config (every default filled in), as written to RUN_DIR/config.yaml."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# -- parsing -------------------------------------------------------------------------------
def load_config(path: str | Path) -> EvolveConfig:
    return config_from_dict(read_yaml_file(path, "config file"), where=str(path))


def config_from_dict(data: Any, where: str = "config") -> EvolveConfig:
    """``data`` (the YAML document) validated; errors name the key (``config: ps.models[1].density``)."""
    if isinstance(data, EvolveConfig):
        return data
    config = parse(EvolveConfig, data, where)
    for stage in config.stages():  # a stage's overrides must be valid too
        config.optimizer_for(stage)
        config.budget_for(stage)
    return config


def with_overrides(config: EvolveConfig, **runtime: Any) -> EvolveConfig:
    """A copy with runtime settings replaced (CLI flags left unset keep the config's)."""
    chosen = {k: v for k, v in runtime.items() if v is not None}
    if not chosen:
        return config
    updated = parse(RuntimeConfig, {**config.runtime.model_dump(), **chosen}, "runtime")
    return config.model_copy(update={"runtime": updated})

