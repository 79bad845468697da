"""The one step that checks an evolution config against the world, before any work.

:mod:`evovlm.evolve.config` checks what a config says; this checks what it refers to: every
model reference resolves (local folders become absolute paths, so a resume works from anywhere),
DFS models are causal LMs, user callables import, benchmarks and data files load, generation
overrides are known, and each PS genome's first recipe can be built. A typo fails here with
the config's location, not in a worker after the models have loaded.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable

from evovlm.errors import EvoVLMError
from evovlm.evolve.config import FROM_PS, SYNTHETIC, EvolveConfig, function_name
from evovlm.evolve.genome import PSGenome

WHERE = "config"


def preflight(config: EvolveConfig, *, base_dir: str | Path | None = None) -> EvolveConfig:
    """``config`` with its references resolved; raises :class:`EvoVLMError` on the first problem."""
    update: dict[str, Any] = {}
    if config.ps is not None:
        update["ps"] = _resolve_ps(config, base_dir)
    if config.dfs is not None:
        update["dfs"] = _resolve_dfs(config, base_dir)
    for name in ("fitness", "validation", "test"):
        section = getattr(config, name)
        if section is not None:
            update[name] = _check_fitness(section, name, base_dir)
    for stage in config.stages():  # a stage's own fitness and test
        sections = {name: _check_fitness(getattr(update[stage], name), f"{stage}.{name}", base_dir)
                    for name in ("fitness", "test") if getattr(update[stage], name) is not None}
        update[stage] = update[stage].model_copy(update=sections)
    config = config.model_copy(update=update)
    if config.ps is not None:
        PSGenome(config.ps, num_layers=None).check(f"{WHERE}: ps")
    return config


def _resolve_ps(config: EvolveConfig, base_dir: str | Path | None):
    ps = config.ps
    models = [entry.model_copy(update={"model": model_ref(entry.model, f"{WHERE}: ps.models[{i}].model", base_dir)})
              for i, entry in enumerate(ps.models)]
    refs = {key: model_ref(getattr(ps, key), f"{WHERE}: ps.{key}", base_dir)
            for key in ("base_model", "target") if getattr(ps, key) is not None}
    resolved = ps.model_copy(update={"models": models, **refs})
    if config.mode == "ps+dfs":
        require_causal_lm(resolved.target or resolved.base_model or resolved.models[0].model,
                          f"{WHERE}: ps+dfs: the PS result (model A) comes from")
    return resolved


def _resolve_dfs(config: EvolveConfig, base_dir: str | Path | None):
    refs = {}
    for key in ("model_a", "model_b"):
        ref = getattr(config.dfs, key)
        if ref != FROM_PS:
            refs[key] = model_ref(ref, f"{WHERE}: dfs.{key}", base_dir)
            require_causal_lm(refs[key], f"{WHERE}: dfs.{key}")
    return config.dfs.model_copy(update=refs)


def _check_fitness(section: Any, name: str, base_dir: str | Path | None) -> Any:
    where = f"{WHERE}: {name}"
    if section.kind == "callable":
        function = import_callable(section.callable, f"{where}.callable")
        try:  # a misspelt argument: an error now, not a TypeError in every candidate
            inspect.signature(function).bind(None, None, **section.arguments)
        except TypeError as exc:
            raise EvoVLMError(f"{where}.arguments: {function_name(section.callable)} cannot take "
                              f"{section.arguments}: {exc}") from None
        except ValueError:  # no signature to check (a builtin)
            pass
    if section.kind == "synthetic" and section.synthetic not in SYNTHETIC:
        import_callable(section.synthetic, f"{where}.synthetic")
    if section.kind != "benchmark":
        return section
    if section.data is not None:
        local = Path(base_dir or ".") / Path(section.data).expanduser()
        if not local.exists():
            raise EvoVLMError(f"{where}.data: {section.data} does not exist")
        section = section.model_copy(update={"data": str(local.resolve())})
    if section.generation:
        from evovlm.eval.runners import GenerationSettings

        GenerationSettings().with_overrides(**section.generation)  # unknown keys / bad values: clear error
    load_fitness_benchmark(section, name)
    return section


def model_folder(ref: str, base_dir: str | Path | None = None) -> tuple[Path, bool]:
    """(folder, whether it is a local folder) of a model reference; a local folder may be relative to
    ``base_dir`` (the config's folder), anything else is :func:`~evovlm.io.resolve.resolve_model_path`'s."""
    from evovlm.io.resolve import prefixed, resolve_model_path

    local = Path(base_dir or ".") / Path(ref).expanduser()
    if not prefixed(ref) and local.is_dir():
        return local.resolve(), True
    return resolve_model_path(ref), False


def model_ref(ref: str, where: str, base_dir: str | Path | None = None) -> str:
    """Check a model reference now (a clear error before any work); local folders become absolute."""
    if not ref.strip():
        raise EvoVLMError(f"{where}: expected a model reference (directory, PREFIX:NAME or HF repo id), got {ref!r}")
    try:
        folder, local = model_folder(ref, base_dir)
    except EvoVLMError as exc:
        raise EvoVLMError(f"{where}: {exc}") from None
    return str(folder) if local else ref


def require_causal_lm(ref: str, where: str) -> None:
    """DFS runs decoder layers of Mistral/Llama causal LMs (not a VLM's tower)."""
    from evovlm.arch import CAUSAL_LM_ARCHITECTURES, architecture_of
    from evovlm.io.checkpoint import read_model_config
    from evovlm.io.resolve import resolve_model_path

    architecture = architecture_of(read_model_config(resolve_model_path(ref), ref))
    if architecture not in CAUSAL_LM_ARCHITECTURES:
        raise EvoVLMError(f"{where} {ref}: DFS merges causal LMs ({', '.join(sorted(CAUSAL_LM_ARCHITECTURES))}), "
                          f"not {architecture}")


def import_callable(ref: str | Callable, where: str = "callable") -> Callable:
    """``"package.module:function"`` -> the function (callables pass through)."""
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


def load_fitness_benchmark(fitness: Any, section: str = "fitness"):
    """The benchmark a fitness section names (importing the modules that register it first).

    Errors name the config's keys (``fitness.data_seed``), not command-line options.
    """
    from evovlm.errors import option_style
    from evovlm.eval.benchmarks import load_benchmark

    for module in fitness.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise EvoVLMError(f"cannot import {module!r} (listed in {section}.imports): {exc}") from None
    with option_style(lambda key: f"{section}.{key}"):  # a plugin's benchmark loads with the plugins
        return load_benchmark(fitness.benchmark, split=fitness.split, data_seed=fitness.data_seed, path=fitness.data,
                              limit=fitness.limit)
