"""The evolution config: YAML in, validated dataclasses out, resolved YAML back.

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
    validation: null            # optional, like fitness: scores each generation's best; the final
                                # model is the generation best with the best validation score
    test: {benchmark: zoo-mgsm-ja, split: test, metric: acc_ja}   # optional held-out re-score
    runtime: {workers: auto, devices: auto, dtype: null, save_model: true, plot: true, keep_states: auto}

``ps`` and ``dfs`` may each carry their own ``optimizer`` and ``budget`` keys, which
override the top-level ones for that stage.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Union

import yaml

from evovlm.dtypes import check_dtype
from evovlm.errors import EvoVLMError
from evovlm.io.yamlfile import read_yaml_file

MODES = ("ps", "dfs", "ps+dfs")
OPTIMIZERS = ("cma", "sep_cma")
SYNTHETIC = ("sphere",)
FROM_PS = "ps"  # dfs.model_a in ps+dfs mode


@dataclass
class OptimizerConfig:
    name: str = "cma"
    sigma: float = 1.0 / 6.0
    population: int | None = None  # default 4 + floor(3 ln n)
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: float = 0.5  # every gene's start (DFS init: a overrides the DFS genes)
    max_resampling: int | None = None  # default 100 up to 100 genes, else 1 (then clip to bounds)

    def population_for(self, n_genes: int) -> int:
        return self.population or 4 + math.floor(3 * math.log(n_genes))


@dataclass
class BudgetConfig:
    generations: int | None = None
    trials: int | None = None

    def generations_for(self, population: int) -> int:
        if self.generations is not None:
            return self.generations
        return math.ceil((self.trials or 100) / population)


@dataclass
class FitnessConfig:
    benchmark: str | None = None
    split: str | None = None
    limit: int | None = None
    data_seed: int | None = None
    data: str | None = None  # read the benchmark from this file/directory
    # a key of the evaluator's summary (default acc_ja for mgsm, rougeL_ja for rouge-ja), or
    # {key: weight}: the fitness is the weighted sum
    metric: Union[str, dict, None] = None
    generation: dict = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)  # modules that register benchmarks
    callable: Union[str, Callable, None] = None  # "module:function", fn(model, tokenizer_or_processor) -> float
    synthetic: Union[str, Callable, None] = None  # "sphere" or fn(genes) -> float: no model is loaded
    target: Union[float, list] = 0.5  # sphere: fitness = -sum((genes - target)^2)
    sleep_s: float = 0.0  # synthetic: pretend each candidate takes this long

    @property
    def kind(self) -> str:
        return "benchmark" if self.benchmark else "callable" if self.callable else "synthetic"


@dataclass
class ModelEntry:
    model: str
    weight: float | None = None  # a number pins the value (no gene)
    density: float | None = None


@dataclass
class PSConfig:
    models: list[ModelEntry]
    method: str = "dare_ties"
    base_model: str | None = None
    target: str | None = None
    group_size: Union[str, int] = "model"
    weight_range: tuple[float, float] = (0.0, 1.0)
    density_range: tuple[float, float] = (0.0, 1.0)
    parameters: dict = field(default_factory=dict)
    merge_seed: int = 0
    optimizer: dict = field(default_factory=dict)
    budget: dict = field(default_factory=dict)


@dataclass
class DFSConfig:
    model_a: str
    model_b: str
    repeats: int = 3
    scales: str = "matrix"
    scale_range: tuple[float, float] = (0.0, 2.0)
    init: str = "a"
    optimizer: dict = field(default_factory=dict)
    budget: dict = field(default_factory=dict)


@dataclass
class RuntimeConfig:
    workers: Union[int, str] = "auto"  # auto: one per GPU, else 1
    devices: Union[list, str] = "auto"  # auto: every GPU, else cpu
    dtype: str | None = None  # default: bf16/fp16 on GPU, fp32 on CPU
    save_model: bool = True
    plot: bool = True
    # Optimiser states kept: "auto" keeps all unless the genome is large (a 4288-gene DFS state holds a
    # 147 MB covariance matrix), then the last 5; or a number; or null for all.
    keep_states: Union[int, str, None] = "auto"
    progress: bool = True


@dataclass
class EvolveConfig:
    mode: str
    fitness: FitnessConfig
    seed: int = 0
    ps: PSConfig | None = None
    dfs: DFSConfig | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    validation: FitnessConfig | None = None
    test: FitnessConfig | None = None
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def stages(self) -> list[str]:
        return self.mode.split("+")

    def optimizer_for(self, stage: str) -> OptimizerConfig:
        overrides = getattr(self, stage).optimizer
        return _build(OptimizerConfig, {**_plain(self.optimizer), **overrides}, f"{stage}.optimizer", _check_optimizer)

    def budget_for(self, stage: str) -> BudgetConfig:
        overrides = getattr(self, stage).budget
        merged = dict(overrides) if overrides else _plain(self.budget)
        return _build(BudgetConfig, merged, f"{stage}.budget", _check_budget)

    def to_dict(self) -> dict:
        """The resolved config (every default filled in), as written to RUN_DIR/config.yaml."""
        order = ("mode", "seed", "ps", "dfs", "optimizer", "budget", "fitness", "validation", "test", "runtime")
        data = {key: _plain(getattr(self, key)) for key in order}
        for name in ("fitness", "validation", "test"):
            section = data.get(name)
            if section:
                for key in ("callable", "synthetic"):
                    if callable(section.get(key)):
                        function = section[key]
                        section[key] = f"{function.__module__}:{function.__qualname__}"
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# -- parsing -------------------------------------------------------------------------------
def load_config(path: str | Path) -> EvolveConfig:
    return config_from_dict(read_yaml_file(path, "config file"), where=str(path))


def config_from_dict(data: Any, where: str = "config", *, base_dir: str | Path | None = None) -> EvolveConfig:
    """Validate ``data``; local model directories become absolute paths so a resume works from anywhere."""
    if isinstance(data, EvolveConfig):
        return data
    if not isinstance(data, dict):
        raise EvoVLMError(f"{where}: expected a mapping at the top level")
    data = dict(data)
    _no_unknown(data, {f.name for f in fields(EvolveConfig)}, where)
    mode = data.get("mode", "ps" if "dfs" not in data else "dfs")
    if mode not in MODES:
        raise EvoVLMError(f"{where}: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EvoVLMError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    stages = mode.split("+")
    for stage in stages:
        if not isinstance(data.get(stage), dict):
            raise EvoVLMError(f"{where}: mode {mode} needs a '{stage}' section (a mapping)")
    for stage in ("ps", "dfs"):
        if stage not in stages and data.get(stage) is not None:
            raise EvoVLMError(f"{where}: a '{stage}' section is given but mode is {mode}; set mode: "
                              f"{'ps+dfs' if mode != 'ps+dfs' else mode} or remove it")
    if "fitness" not in data:
        raise EvoVLMError(f"{where}: missing 'fitness' (a benchmark, callable or synthetic objective)")
    config = EvolveConfig(
        mode=mode, seed=seed,
        fitness=_fitness(data["fitness"], f"{where}: fitness", base_dir),
        ps=_ps(data["ps"], f"{where}: ps", base_dir) if "ps" in stages else None,
        dfs=_dfs(data["dfs"], f"{where}: dfs", mode, base_dir) if "dfs" in stages else None,
        optimizer=_build(OptimizerConfig, data.get("optimizer") or {}, f"{where}: optimizer", _check_optimizer),
        budget=_build(BudgetConfig, data.get("budget") or {}, f"{where}: budget", _check_budget),
        validation=_fitness(data["validation"], f"{where}: validation", base_dir) if data.get("validation") else None,
        test=_fitness(data["test"], f"{where}: test", base_dir) if data.get("test") else None,
        runtime=_build(RuntimeConfig, data.get("runtime") or {}, f"{where}: runtime", _check_runtime),
    )
    sections = [s for s in (config.validation, config.test) if s is not None]
    if any((s.kind == "synthetic") != (config.fitness.kind == "synthetic") for s in sections):
        raise EvoVLMError(f"{where}: a synthetic objective scores genes, not models: fitness, validation and "
                          "test must all be synthetic or all score models (benchmark / callable)")
    for stage in stages:  # stage overrides must be valid too
        config.optimizer_for(stage)
        config.budget_for(stage)
    if mode == "ps+dfs" and not config.runtime.save_model:
        raise EvoVLMError(f"{where}: ps+dfs needs runtime.save_model: true (the PS model becomes DFS's model A)")
    if mode == "ps+dfs":
        require_causal_lm(config.ps.target or config.ps.base_model or config.ps.models[0].model,
                          f"{where}: ps+dfs: the PS result (model A) comes from")
    return config


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _no_unknown(data: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise EvoVLMError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _build(cls: type, data: Any, where: str, check: Callable[[Any, str], None] | None = None) -> Any:
    if not isinstance(data, dict):
        raise EvoVLMError(f"{where}: expected a mapping, got {data!r}")
    _no_unknown(data, {f.name for f in fields(cls)}, where)
    try:
        value = cls(**data)
    except TypeError as exc:
        raise EvoVLMError(f"{where}: {exc}") from None
    if check:
        check(value, where)
    return value


def _number(value: Any, where: str, *, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvoVLMError(f"{where}: expected a number, got {value!r}")
    if positive and value <= 0:
        raise EvoVLMError(f"{where}: must be positive, got {value!r}")
    if minimum is not None and value < minimum:
        raise EvoVLMError(f"{where}: must be at least {minimum}, got {value!r}")
    return float(value)


def _count(value: Any, where: str, *, allow_none: bool = True, minimum: int = 1) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EvoVLMError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _range(value: Any, where: str, *, within: tuple[float, float] | None = None) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise EvoVLMError(f"{where}: expected [low, high], got {value!r}")
    low, high = _number(value[0], f"{where}[0]"), _number(value[1], f"{where}[1]")
    if not low < high:
        raise EvoVLMError(f"{where}: low {low} must be below high {high}")
    if within and not (within[0] <= low and high <= within[1]):
        raise EvoVLMError(f"{where}: [{low}, {high}] must lie within [{within[0]}, {within[1]}]")
    return (low, high)


def _check_optimizer(opt: OptimizerConfig, where: str) -> None:
    if opt.name not in OPTIMIZERS:
        raise EvoVLMError(f"{where}.name: unknown optimiser {opt.name!r}; use one of {', '.join(OPTIMIZERS)}")
    opt.sigma = _number(opt.sigma, f"{where}.sigma", positive=True)
    # Below 4, CMA-ES's rank-mu covariance update has no weight (cmaes divides by zero).
    opt.population = _count(opt.population, f"{where}.population", minimum=4)
    opt.bounds = _range(opt.bounds, f"{where}.bounds")
    opt.mean = _number(opt.mean, f"{where}.mean")
    if not opt.bounds[0] <= opt.mean <= opt.bounds[1]:
        raise EvoVLMError(f"{where}.mean {opt.mean} lies outside the bounds {list(opt.bounds)}")
    opt.max_resampling = _count(opt.max_resampling, f"{where}.max_resampling")


def _check_budget(budget: BudgetConfig, where: str) -> None:
    if budget.generations is not None and budget.trials is not None:
        raise EvoVLMError(f"{where}: give generations or trials, not both")
    budget.generations = _count(budget.generations, f"{where}.generations")
    budget.trials = _count(budget.trials, f"{where}.trials")


def _check_runtime(runtime: RuntimeConfig, where: str) -> None:
    if runtime.workers != "auto":
        _count(runtime.workers, f"{where}.workers", allow_none=False)
    if runtime.devices != "auto" and (not isinstance(runtime.devices, list) or not runtime.devices
                                      or not all(isinstance(d, str) for d in runtime.devices)):
        raise EvoVLMError(f"{where}.devices: 'auto' or a list such as [cuda:0, cuda:1], got {runtime.devices!r}")
    if runtime.dtype is not None:
        check_dtype(runtime.dtype, f"{where}.dtype")
    if runtime.keep_states != "auto":
        runtime.keep_states = _count(runtime.keep_states, f"{where}.keep_states")
    for name in ("save_model", "plot", "progress"):
        if not isinstance(getattr(runtime, name), bool):
            raise EvoVLMError(f"{where}.{name}: expected true or false, got {getattr(runtime, name)!r}")


def _model_ref(ref: Any, where: str, base_dir: str | Path | None) -> str:
    """Check the reference now (a clear error before any work) and make local paths absolute."""
    from evovlm.io.resolve import prefixed, resolve_model_path

    if not isinstance(ref, str) or not ref.strip():
        raise EvoVLMError(f"{where}: expected a model reference (directory, PREFIX:NAME or HF repo id), got {ref!r}")
    local = Path(base_dir or ".") / Path(ref).expanduser()
    if not prefixed(ref) and local.is_dir():
        return str(local.resolve())
    resolve_model_path(ref)  # raises a clear EvoVLMError when missing
    return ref


def _ps(data: dict, where: str, base_dir: str | Path | None) -> PSConfig:
    from evovlm.merge.methods import ALIASES, METHODS

    data = dict(data)
    _no_unknown(data, {f.name for f in fields(PSConfig)}, where)
    method = ALIASES.get(str(data.get("method", "dare_ties")), str(data.get("method", "dare_ties")))
    if method not in METHODS:
        raise EvoVLMError(f"{where}.method: unknown merge method {data.get('method')!r}; known: {', '.join(METHODS)}")
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise EvoVLMError(f"{where}.models: a non-empty list of models to merge is required")
    entries = []
    for index, entry in enumerate(models):
        spot = f"{where}.models[{index}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise EvoVLMError(f"{spot}: a model reference or {{model: REF, weight: W, density: D}}")
        _no_unknown(entry, {"model", "weight", "density"}, spot)
        pinned = {k: _number(entry[k], f"{spot}.{k}") for k in ("weight", "density") if entry.get(k) is not None}
        if not 0.0 <= pinned.get("density", 0.0) <= 1.0:
            raise EvoVLMError(f"{spot}.density {pinned['density']} outside [0, 1]")
        entries.append(ModelEntry(_model_ref(entry["model"], f"{spot}.model", base_dir), **pinned))
    data["models"] = entries
    data["method"] = method
    if METHODS[method].needs_base and not data.get("base_model"):
        raise EvoVLMError(f"{where}: method {method} needs a base_model (task vectors are taken against it)")
    for key in ("base_model", "target"):
        if data.get(key) is not None:
            data[key] = _model_ref(data[key], f"{where}.{key}", base_dir)
    group_size = data.get("group_size", "model")
    if group_size not in ("model", "layer") and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                                 or group_size < 1):
        raise EvoVLMError(f"{where}.group_size: 'model', 'layer' or a positive number of decoder blocks, "
                          f"got {group_size!r}")
    data["group_size"] = 1 if group_size == "layer" else group_size
    data["weight_range"] = _range(data.get("weight_range", (0.0, 1.0)), f"{where}.weight_range")
    data["density_range"] = _range(data.get("density_range", (0.0, 1.0)), f"{where}.density_range", within=(0.0, 1.0))
    if not isinstance(data.get("parameters") or {}, dict):
        raise EvoVLMError(f"{where}.parameters: a mapping such as {{lambda: 1.0, normalize: false}}")
    data["parameters"] = dict(data.get("parameters") or {})
    data["merge_seed"] = _count(data.get("merge_seed", 0), f"{where}.merge_seed", allow_none=False, minimum=0)
    for key in ("optimizer", "budget"):
        if not isinstance(data.get(key) or {}, dict):
            raise EvoVLMError(f"{where}.{key}: expected a mapping")
        data[key] = dict(data.get(key) or {})
    return PSConfig(**data)  # evolve.preflight builds its genome's first recipe


def _dfs(data: dict, where: str, mode: str, base_dir: str | Path | None) -> DFSConfig:
    data = dict(data)
    _no_unknown(data, {f.name for f in fields(DFSConfig)}, where)
    for key in ("model_a", "model_b"):
        if key not in data:
            raise EvoVLMError(f"{where}: missing {key}")
    if data["model_a"] == FROM_PS:
        if mode != "ps+dfs":
            raise EvoVLMError(f"{where}.model_a: 'ps' (the PS result) only works in mode ps+dfs")
    else:
        data["model_a"] = _model_ref(data["model_a"], f"{where}.model_a", base_dir)
        require_causal_lm(data["model_a"], f"{where}.model_a")
    data["model_b"] = _model_ref(data["model_b"], f"{where}.model_b", base_dir)
    require_causal_lm(data["model_b"], f"{where}.model_b")
    if mode == "ps+dfs" and data["model_a"] != FROM_PS:
        raise EvoVLMError(f"{where}.model_a: in ps+dfs mode model A is the PS result: write model_a: ps")
    data["repeats"] = _count(data.get("repeats", 3), f"{where}.repeats", allow_none=False)
    if data.get("scales", "matrix") not in ("matrix", "none"):
        raise EvoVLMError(f"{where}.scales: 'matrix' (the paper's M x M W) or 'none', got {data['scales']!r}")
    data["scale_range"] = _range(data.get("scale_range", (0.0, 2.0)), f"{where}.scale_range")
    if data.get("init", "a") not in ("a", "a-first", "uniform"):
        raise EvoVLMError(f"{where}.init: 'a' (start from model A, its layers in the middle repetition), "
                          f"'a-first' (in the first) or 'uniform' (every gene at the mean), got {data['init']!r}")
    for key in ("optimizer", "budget"):
        if not isinstance(data.get(key) or {}, dict):
            raise EvoVLMError(f"{where}.{key}: expected a mapping")
        data[key] = dict(data.get(key) or {})
    return DFSConfig(**data)


def require_causal_lm(ref: str, where: str) -> None:
    """DFS runs decoder layers of Mistral/Llama causal LMs (not a VLM's tower)."""
    from evovlm.arch import CAUSAL_LM_ARCHITECTURES, architecture_of
    from evovlm.io.checkpoint import read_model_config
    from evovlm.io.resolve import resolve_model_path

    architecture = architecture_of(read_model_config(resolve_model_path(ref), ref))
    if architecture not in CAUSAL_LM_ARCHITECTURES:
        raise EvoVLMError(f"{where} {ref}: DFS merges causal LMs ({', '.join(sorted(CAUSAL_LM_ARCHITECTURES))}), "
                          f"not {architecture}")


def _fitness(data: Any, where: str, base_dir: str | Path | None) -> FitnessConfig:
    if isinstance(data, str):
        data = {"benchmark": data}
    spec = _build(FitnessConfig, data, where)
    given = [k for k in ("benchmark", "callable", "synthetic") if getattr(spec, k)]
    if len(given) != 1:
        raise EvoVLMError(f"{where}: give exactly one of benchmark, callable or synthetic (got "
                          f"{', '.join(given) or 'none'})")
    if spec.limit is not None:
        _count(spec.limit, f"{where}.limit")
    if isinstance(spec.metric, dict):
        if not spec.metric or not all(isinstance(key, str) for key in spec.metric):
            raise EvoVLMError(f"{where}.metric: a summary key, or a non-empty mapping of keys to weights")
        spec.metric = {key: _number(weight, f"{where}.metric.{key}") for key, weight in spec.metric.items()}
    elif spec.metric is not None and not isinstance(spec.metric, str):
        raise EvoVLMError(f"{where}.metric: a summary key, or a mapping of keys to weights, got {spec.metric!r}")
    if spec.data_seed is not None:
        _count(spec.data_seed, f"{where}.data_seed", minimum=0)
    if not isinstance(spec.generation, dict):
        raise EvoVLMError(f"{where}.generation: a mapping of generation overrides, e.g. {{max_new_tokens: 256}}")
    if not isinstance(spec.imports, list) or not all(isinstance(m, str) for m in spec.imports):
        raise EvoVLMError(f"{where}.imports: a list of module names")
    if spec.data is not None:
        local = Path(base_dir or ".") / Path(spec.data).expanduser()
        if not local.exists():
            raise EvoVLMError(f"{where}.data: {spec.data} does not exist")
        spec.data = str(local.resolve())
    if spec.benchmark:
        if spec.generation:
            from evovlm.eval.runners import GenerationSettings

            GenerationSettings().with_overrides(**spec.generation)  # unknown keys / bad values: clear error
        spec.generation = dict(spec.generation)
    if spec.synthetic is not None and isinstance(spec.synthetic, str) and ":" not in spec.synthetic \
            and spec.synthetic not in SYNTHETIC:
        raise EvoVLMError(f"{where}.synthetic: {spec.synthetic!r} is neither a built-in objective "
                          f"({', '.join(SYNTHETIC)}) nor 'module:function'")
    for key in ("callable", "synthetic"):
        value = getattr(spec, key)
        if isinstance(value, str) and value not in SYNTHETIC:
            import_callable(value, f"{where}.{key}")
    spec.sleep_s = _number(spec.sleep_s, f"{where}.sleep_s", minimum=0.0)
    return spec


def import_callable(ref: str | Callable, where: str = "callable") -> Callable:
    """``"package.module:function"`` -> the function (callables pass through)."""
    import importlib

    if callable(ref):
        return ref
    module_name, _, attr = str(ref).partition(":")
    if not module_name or not attr:
        raise EvoVLMError(f"{where}: expected 'module:function', got {ref!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise EvoVLMError(f"{where}: cannot import {ref!r} ({exc})") from None
    if not callable(target):
        raise EvoVLMError(f"{where}: {ref!r} is not callable")
    return target


def with_overrides(config: EvolveConfig, **runtime: Any) -> EvolveConfig:
    """A copy with runtime settings replaced (CLI flags left unset keep the config's)."""
    chosen = {k: v for k, v in runtime.items() if v is not None}
    if not chosen:
        return config
    updated = _build(RuntimeConfig, {**asdict(config.runtime), **chosen}, "runtime", _check_runtime)
    return replace(config, runtime=updated)
