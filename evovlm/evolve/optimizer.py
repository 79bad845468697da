"""CMA-ES (``cmaes``) with exact save/restore in a data format.

A restored optimiser must ask exactly the candidates the original would have asked: that is
what makes a resumed run identical to an uninterrupted one. The state is a safetensors file
(the arrays, bit for bit) whose metadata holds the scalars as JSON: nothing in a run folder is
ever unpickled, so resuming a run someone sent you runs no code of theirs.

A state is restored through cmaes' public constructor (dimension, population, bounds, ...);
only what a search changes (mean, step size, covariance and its cached eigendecomposition,
evolution paths, generation, the random generator, the stopping history) is then set on the
new object. Those are private fields of ``cmaes``: each is checked to exist, and the constants
the constructor derives (recombination weights, learning rates) are checked to equal the
saved ones, so a cmaes release that renames a field or changes a default gives a clear error
instead of a silently different search.

Ask and tell run with one BLAS thread: a multi-threaded eigendecomposition rounds differently
with the thread count (seen as 2e-16 in a DFS genome), so without the limit a run would depend
on OMP_NUM_THREADS and the machine's cores, not only on its seed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from evovlm.errors import EvoVLMError
from evovlm.evolve.config import OptimizerConfig
from evovlm.io.atomic import write_atomic

STATE_FORMAT = 2  # 1 was a pickle (no longer read)
_STATE_NAME = re.compile(r"^gen-(\d+)\.safetensors$")
_PICKLED_STATE = re.compile(r"^gen-(\d+)\.pkl$")
_META_KEY = "evovlm_optimizer"
# What a search changes; None-able arrays are the cached eigendecomposition (None until first ask).
# The stopping tolerances scale with the first step size, which the constructor no longer sees.
_DYNAMIC = ("_mean", "_sigma", "_C", "_D", "_B", "_p_sigma", "_pc", "_g", "_funhist_values",
            "_tolx", "_tolxup", "_tolfun", "_tolconditioncov",
            "_Emean", "_ESigma", "_Vmean", "_VSigma", "_eta_mean", "_eta_Sigma")  # the last six: lr_adapt
# What the constructor derives from its arguments: must come out the same on restore.
_DERIVED = ("_n_dim", "_popsize", "_mu", "_mu_eff", "_cc", "_c1", "_cmu", "_c_sigma", "_d_sigma", "_chi_n",
            "_weights", "_bounds", "_n_max_resampling", "_funhist_term", "_lr_adapt")


class Optimizer:
    """Ask a whole generation, tell its values (lower is better), save, restore."""

    def __init__(self, engine, name: str) -> None:
        self.engine = engine
        self.name = name

    @classmethod
    def create(cls, config: OptimizerConfig, mean: np.ndarray, seed: int) -> "Optimizer":
        from cmaes import CMA, SepCMA

        mean = np.asarray(mean, dtype=float)
        bounds = np.tile(np.asarray(config.bounds, dtype=float), (mean.size, 1))
        resampling = config.max_resampling or (100 if mean.size <= 100 else 1)
        engine_class = CMA if config.name == "cma" else SepCMA
        engine = engine_class(mean=mean, sigma=config.sigma, bounds=bounds, n_max_resampling=resampling, seed=seed,
                              population_size=config.population_for(mean.size))
        return cls(engine, config.name)

    @property
    def population_size(self) -> int:
        return self.engine.population_size

    @property
    def generation(self) -> int:
        """Generations told so far: the index of the next generation to ask."""
        return self.engine.generation

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.engine.mean, dtype=float)

    def ask_generation(self) -> list[np.ndarray]:
        with threadpool_limits(limits=1, user_api="blas"):
            return [np.asarray(self.engine.ask(), dtype=float) for _ in range(self.population_size)]

    def tell(self, genomes: Sequence[np.ndarray], values: Sequence[float]) -> None:
        with threadpool_limits(limits=1, user_api="blas"):
            self.engine.tell([(np.asarray(g, dtype=float), float(v)) for g, v in zip(genomes, values)])

    # -- persistence -------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename): a crash leaves the old state or the new one."""
        import cmaes
        from safetensors.numpy import save

        fields = vars(self.engine)
        arrays, scalars = {}, {}
        for name in (*_DYNAMIC, *_DERIVED):
            if name not in fields:
                continue
            value = fields[name]
            if isinstance(value, np.ndarray):
                arrays[name] = np.ascontiguousarray(value)
            else:
                scalars[name] = None if value is None else value.item() if isinstance(value, np.generic) else value
        kind, key, position, has_gauss, gauss = self.engine._rng.get_state()
        arrays["rng.key"] = np.asarray(key, dtype=np.uint32)
        meta = {"format": STATE_FORMAT, "name": self.name, "class": type(self.engine).__name__,
                "cmaes": getattr(cmaes, "__version__", "unknown"), "scalars": scalars,
                "rng": {"kind": kind, "pos": int(position), "has_gauss": int(has_gauss), "gauss": float(gauss)}}
        write_atomic(path, save(arrays, metadata={_META_KEY: json.dumps(meta)}))

    @classmethod
    def load(cls, path: Path) -> "Optimizer":
        """Restore a state written by :meth:`save`; a damaged or foreign file is an :class:`EvoVLMError`."""
        meta, arrays = _read_state(path)
        from cmaes import CMA, SepCMA

        engines = {"CMA": CMA, "SepCMA": SepCMA}
        scalars = meta["scalars"]
        try:
            engine_class = engines[meta["class"]]
            arguments = dict(mean=arrays["_mean"], sigma=float(scalars["_sigma"]), bounds=arrays["_bounds"],
                             n_max_resampling=int(scalars["_n_max_resampling"]), seed=0,
                             population_size=int(scalars["_popsize"]))
            if engine_class is CMA:
                arguments["lr_adapt"] = bool(scalars.get("_lr_adapt", False))
            engine = engine_class(**arguments)
        except (KeyError, TypeError, ValueError) as exc:
            raise EvoVLMError(f"optimiser state {path} is incomplete or damaged "
                              f"({type(exc).__name__}: {exc})") from None
        fields = vars(engine)
        saved_with = f"saved with cmaes {meta.get('cmaes')}, this is cmaes {_cmaes_version()}"
        for name in _DERIVED:
            if name in fields or name in scalars or name in arrays:
                saved = arrays[name] if name in arrays else scalars.get(name)
                if name not in fields or not _same(fields[name], saved):
                    raise EvoVLMError(f"cannot resume from {path}: cmaes computes {name} differently now "
                                      f"({saved_with}); install the cmaes the run was started with")
        for name in _DYNAMIC:
            if name not in arrays and name not in scalars:
                continue
            if name not in fields:
                raise EvoVLMError(f"cannot resume from {path}: cmaes has no field {name} any more ({saved_with}); "
                                  "install the cmaes the run was started with")
            value = arrays[name] if name in arrays else scalars[name]
            if isinstance(fields[name], np.generic) and not isinstance(value, np.ndarray):
                value = type(fields[name])(value)
            setattr(engine, name, value)
        rng = meta["rng"]
        engine._rng = np.random.RandomState()
        try:
            engine._rng.set_state((rng["kind"], arrays["rng.key"], rng["pos"], rng["has_gauss"], rng["gauss"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvoVLMError(f"optimiser state {path}: bad random-generator state ({exc})") from None
        return cls(engine, meta["name"])


def _read_state(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = json.loads((handle.metadata() or {})[_META_KEY])
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, SafetensorError, KeyError, ValueError) as exc:
        raise EvoVLMError(f"cannot read optimiser state {path}: not an evovlm optimiser state "
                          f"({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or not isinstance(meta.get("scalars"), dict) \
            or not isinstance(meta.get("rng"), dict):
        raise EvoVLMError(f"{path} is not an evovlm optimiser state (format {STATE_FORMAT})")
    return meta, arrays


def _same(current: Any, saved: Any) -> bool:
    if isinstance(current, np.ndarray) or isinstance(saved, np.ndarray):
        return isinstance(saved, np.ndarray) and np.array_equal(np.asarray(current), saved)
    return (current.item() if isinstance(current, np.generic) else current) == saved


def _cmaes_version() -> str:
    import cmaes

    return getattr(cmaes, "__version__", "unknown")


def state_path(state_dir: Path, generation: int) -> Path:
    """The state saved after ``generation`` (0-based) was told."""
    return state_dir / f"gen-{generation:04d}.safetensors"


def latest_state(state_dir: Path) -> tuple[int, Path] | None:
    """(generation, path) of the newest saved state, or None."""
    if not state_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in state_dir.iterdir() if (m := _STATE_NAME.match(p.name))]
    if not found and (pickled := sorted(p.name for p in state_dir.iterdir() if _PICKLED_STATE.match(p.name))):
        raise EvoVLMError(f"{state_dir} holds optimiser states in the old pickle format ({pickled[-1]}), which "
                          "evovlm no longer reads: unpickling runs code from the run folder. Start the run again "
                          "in a new folder.")
    return max(found) if found else None


def prune_states(state_dir: Path, keep: int | None) -> None:
    """Keep only the ``keep`` newest states (all when ``keep`` is None)."""
    if keep is None or not state_dir.is_dir():
        return
    found = sorted((int(m.group(1)), p) for p in state_dir.iterdir() if (m := _STATE_NAME.match(p.name)))
    for _, path in found[:-keep]:
        path.unlink(missing_ok=True)
