"""Evolutionary model merging: CMA-ES over parameter space (PS), data-flow space (DFS) and PS+DFS.

Python API::

    from evovlm.evolve import run_evolution
    summary = run_evolution("examples/evolve-ps-tiny.yaml", "out/run")     # or a dict / EvolveConfig
    summary = run_evolution(None, "out/run", resume=True)                    # after a crash

Modules: ``config`` (YAML schema and checks), ``genome`` (genes <-> recipes / DFS paths),
``optimizer`` (CMA-ES with exact save/restore), ``history`` (crash-safe JSONL),
``evaluators`` and ``backends`` (candidate scoring, serial or a process pool),
``search`` (the generation loop), ``runs`` (stages, final model, test re-score), ``report``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_evolution", "load_config", "config_from_dict"]


def __getattr__(name: str) -> Any:  # keep `import evovlm.evolve` cheap
    if name == "run_evolution":
        from evovlm.evolve.runs import run_evolution

        return run_evolution
    if name in ("load_config", "config_from_dict"):
        from evovlm.evolve import config

        return getattr(config, name)
    raise AttributeError(name)
