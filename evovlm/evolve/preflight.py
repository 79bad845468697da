"""The checks of an evolution config that need more than the config itself, before any work.

:mod:`evovlm.evolve.config` validates a config's shape and values; this builds what the run
will build (each PS genome's first recipe, the benchmarks it names), so that a space no recipe
can come from, or a benchmark typo, fails now with the config's location, not in a worker after
the models have loaded.
"""

from __future__ import annotations

from evovlm.evolve.config import EvolveConfig
from evovlm.evolve.evaluators import load_fitness_benchmark
from evovlm.evolve.genome import PSGenome


def preflight(config: EvolveConfig) -> None:
    """Raise :class:`~evovlm.errors.EvoVLMError` on the first problem, naming where it is."""
    if config.ps is not None:
        PSGenome(config.ps, num_layers=None).check("config: ps")
    for name in ("fitness", "validation", "test"):
        section = getattr(config, name)
        if section is not None and section.kind == "benchmark":
            load_fitness_benchmark(section, name)
