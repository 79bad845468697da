"""``backend: ray``: candidates evaluated by Ray actors, on one machine or a cluster.

Each actor holds one evaluator (its resident sources and live model, built on its first task) and
evaluates any number of candidates; on a cluster there is one actor per GPU. Ray does the work:
:class:`ray.util.ActorPool` hands the next candidate to whichever actor is free, so a slow actor
never holds a generation back while others idle, and an actor whose process dies is restarted by
Ray and its call retried (``max_restarts``, ``max_task_retries``), so no candidate is lost and the
run's history holds it once. Nothing here starts Ray unless a config asks for it.

With ``shards`` > 1 each candidate becomes candidate x shard tasks: a shard generates a contiguous share
of the fitness benchmark's generation batches, free actors take the next shard as they finish, and
the driver scores a candidate once all its shards are in, with the benchmark's own metric on all the
responses (:class:`~evovlm.evolve.evaluators.BenchmarkScorer`), so its fitness is the unsharded one
bit for bit. A shard lost with its actor is retried like any call; the history holds each candidate once.

Without ``ray_address`` a local Ray is started for the run (and stopped after it); with one
(``host:port`` or ``auto``) the run joins that cluster: every node needs evovlm installed and the
models at the same path or in its HF cache.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from typing import Any, Iterator, Sequence

from evovlm.errors import EvoVLMError, option
from evovlm.evolve.backend import Backend
from evovlm.evolve.evaluators import (
    CALIBRATION,
    FatalEvaluationError,
    Outcome,
    StageSpec,
    Task,
    build_evaluator,
    make_scorer,
)

RESTARTS = 3  # a dying actor is restarted this often, and its call retried


class _Worker:
    """The body of one Ray actor: an evaluator, built once, for every candidate it is given."""

    def __init__(self, spec: StageSpec, device: str, threads: int | None) -> None:
        self.spec, self.device, self.threads = spec, device, threads
        self.evaluator: Any = None

    def evaluate(self, task: Task) -> Outcome:
        if self.evaluator is None:
            try:
                self.evaluator = build_evaluator(self.spec, self.device, self.threads)
            except Exception as exc:  # cannot load models etc.: the run stops with the reason
                return Outcome(task.generation, task.index, task.role, fatal=True,
                               error=f"Ray actor on {self.device} could not start: {type(exc).__name__}: {exc}")
        return self.evaluator.evaluate(task)


class RayBackend(Backend):
    """``workers`` actors (default: one per GPU of the cluster, else one)."""

    def __init__(self, spec: StageSpec, *, workers: int | None = None, address: str | None = None,
                 shards: int = 1) -> None:
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise EvoVLMError("runtime.backend: ray needs Ray: pip install 'evovlm[ray]'") from None
        self._ray, self._started = ray, False
        self.spec, self.shards = spec, shards
        self._scorers: dict[str, Any] = {}  # role -> the driver's BenchmarkScorer, to combine shards
        if not ray.is_initialized():
            # A local Ray sees this process's import path, so callables named in the config import there too.
            env = {} if address else {"runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}}}
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                         **env)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise EvoVLMError(f"cannot start or join Ray (ray_address {address!r}): {exc}") from None
            self._started = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.workers = workers or max(1, gpus)
        per_actor = {"num_gpus": 1} if gpus >= self.workers else {"num_cpus": 1}
        cpus = int(ray.cluster_resources().get("CPU", 1))
        threads = None if gpus else max(1, cpus // self.workers)
        device = "cuda" if gpus >= self.workers else "cpu"  # Ray gives each GPU actor its own visible GPU
        actor = ray.remote(_Worker).options(max_restarts=RESTARTS, max_task_retries=RESTARTS, **per_actor)
        self._actors = [actor.remote(spec, device, threads) for _ in range(self.workers)]
        self._pool = ActorPool(self._actors)

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            # calibration and re-ranking need each item's score, which only a whole candidate's outcome carries
            if self.shards == 1 or any(task.role == CALIBRATION for task in tasks):
                yield from self._pool.map_unordered(lambda actor, task: actor.evaluate.remote(task), list(tasks))
                return
            parts = [replace(task, shard=shard, shards=self.shards) for task in tasks for shard in range(self.shards)]
            pending: dict[tuple[int, int, str], list[Outcome]] = {}
            for part in self._pool.map_unordered(lambda actor, task: actor.evaluate.remote(task), parts):
                key = (part.generation, part.index, part.role)
                pending.setdefault(key, []).append(part)
                if len(pending[key]) == self.shards:
                    yield self._combined(pending.pop(key))
        except (RayActorError, RayTaskError) as exc:
            raise EvoVLMError(f"a Ray actor failed {RESTARTS + 1} times ({type(exc).__name__}); "
                              f"resume the run with {option('resume')}") from None

    def _combined(self, parts: list[Outcome]) -> Outcome:
        """One candidate's outcome from its shards: their responses scored together, their times summed."""
        first = parts[0]
        outcome = Outcome(first.generation, first.index, first.role,
                          worker=",".join(sorted({part.worker for part in parts})),
                          wall_s=sum(p.wall_s for p in parts), merge_s=sum(p.merge_s for p in parts),
                          eval_s=sum(p.eval_s for p in parts))
        failed = next((part for part in parts if part.error), None)
        if failed is not None:
            outcome.error, outcome.traceback, outcome.fatal = failed.error, failed.traceback, failed.fatal
            return outcome
        try:
            if first.role not in self._scorers:
                subset = self.spec.subset if first.role == "fitness" else None  # the shards answered its items
                self._scorers[first.role] = make_scorer(self.spec.fitness_for(first.role), first.role, subset)
            responses = {index: text for part in parts for index, text in (part.responses or {}).items()}
            fitness, outcome.score, outcome.metric = self._scorers[first.role].combine(responses)
            if not math.isfinite(float(fitness)):
                raise ValueError(f"fitness is {fitness}")
            outcome.fitness = float(fitness)
        except FatalEvaluationError as exc:
            outcome.error, outcome.fatal = str(exc), True
        except Exception as exc:  # scoring this candidate failed: logged, worst fitness, the run goes on
            outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome

    def close(self) -> None:
        for actor in getattr(self, "_actors", []):
            self._ray.kill(actor)
        self._actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False
