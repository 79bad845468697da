"""CMA-ES (``cmaes``) with exact save/restore.

A restored optimiser must ask exactly the candidates the original would have asked: that is
what makes a resumed run identical to an uninterrupted one. ``cmaes``' own pickling is not
exact for that: it drops the random generator (an unpickled CMA gets an unseeded one), and it
stores the covariance matrix as its upper triangle, which the original process would have
symmetrised as (C + C^T) / 2 - a last-bit difference that changes every later sample. So
the optimiser's attributes are pickled as they are, with the generator's state beside them.

For the same reason ask and tell run with one BLAS thread: a multi-threaded eigendecomposition
rounds differently with the thread count (seen as 2e-16 in a DFS genome), so without the limit a
run would depend on OMP_NUM_THREADS and the machine's cores, not only on its seed.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from evovlm.errors import EvoVLMError
from evovlm.evolve.config import OptimizerConfig
from evovlm.io.atomic import write_atomic

STATE_FORMAT = 1
_STATE_NAME = re.compile(r"^gen-(\d+)\.pkl$")


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
        """Pickle atomically (temp file, fsync, rename): a crash leaves the old state or the new one."""
        attributes = {k: v for k, v in vars(self.engine).items() if k != "_rng"}  # bypass __getstate__
        state = {"format": STATE_FORMAT, "name": self.name, "class": type(self.engine).__name__,
                 "attributes": attributes, "rng": self.engine._rng.get_state()}
        write_atomic(path, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))

    @classmethod
    def load(cls, path: Path) -> "Optimizer":
        try:
            with open(path, "rb") as handle:
                state = pickle.load(handle)  # our own file, written by save()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            raise EvoVLMError(f"cannot read optimiser state {path}: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise EvoVLMError(f"{path} is not an evovlm optimiser state (format {STATE_FORMAT})")
        from cmaes import CMA, SepCMA

        engine_class = {"CMA": CMA, "SepCMA": SepCMA}[state["class"]]
        engine = engine_class.__new__(engine_class)
        vars(engine).update(state["attributes"])
        engine._rng = np.random.RandomState()
        engine._rng.set_state(state["rng"])
        return cls(engine, state["name"])


def state_path(state_dir: Path, generation: int) -> Path:
    """The state saved after ``generation`` (0-based) was told."""
    return state_dir / f"gen-{generation:04d}.pkl"


def latest_state(state_dir: Path) -> tuple[int, Path] | None:
    """(generation, path) of the newest saved state, or None."""
    if not state_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in state_dir.iterdir() if (m := _STATE_NAME.match(p.name))]
    return max(found) if found else None


def prune_states(state_dir: Path, keep: int | None) -> None:
    """Keep only the ``keep`` newest states (all when ``keep`` is None)."""
    if keep is None or not state_dir.is_dir():
        return
    found = sorted((int(m.group(1)), p) for p in state_dir.iterdir() if (m := _STATE_NAME.match(p.name)))
    for _, path in found[:-keep]:
        path.unlink(missing_ok=True)
