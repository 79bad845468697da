"""Where candidates are evaluated: in this process, or in a pool of worker processes.

A backend takes a batch of :class:`Task` and yields :class:`Outcome` as they finish (any
order). Each worker builds its own evaluator once (its own resident models) and keeps it
for every task it gets. A multi-machine backend only has to implement :class:`Backend`.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Iterator, Sequence

from evovlm.errors import EvoVLMError
from evovlm.evolve.backend import Backend
from evovlm.evolve.config import RuntimeConfig
from evovlm.evolve.evaluators import Evaluator, Outcome, StageSpec, Task, build_evaluator


class SerialBackend(Backend):
    """One evaluator in this process, built on first use."""

    def __init__(self, spec: StageSpec, device: str | None = None) -> None:
        self.spec = spec
        self.device = device
        self._evaluator: Evaluator | None = None

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        for task in tasks:
            if self._evaluator is None:
                self._evaluator = build_evaluator(self.spec, self.device)
            yield self._evaluator.evaluate(task)

    def close(self) -> None:
        self._evaluator = None


# -- worker processes ---------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(spec: StageSpec, devices: "multiprocessing.Queue", threads: int) -> None:
    _WORKER.update(spec=spec, device=devices.get(), threads=threads, evaluator=None)


def _run_in_worker(task: Task) -> Outcome:
    if _WORKER["evaluator"] is None:
        try:
            _WORKER["evaluator"] = build_evaluator(_WORKER["spec"], _WORKER["device"], _WORKER["threads"])
        except Exception as exc:  # cannot load models etc.: the whole run must stop, with the reason
            return Outcome(task.generation, task.index, task.role, fatal=True,
                           error=f"worker on {_WORKER['device']} could not start: {type(exc).__name__}: {exc}")
    return _WORKER["evaluator"].evaluate(task)


class ProcessPoolBackend(Backend):
    """``workers`` spawned processes; worker k uses ``devices[k % len(devices)]``."""

    def __init__(self, spec: StageSpec, devices: Sequence[str], workers: int) -> None:
        context = multiprocessing.get_context("spawn")  # fork + CUDA or threads is unsafe
        queue = context.Queue()
        for k in range(workers):
            queue.put(devices[k % len(devices)])
        cpu_workers = sum(1 for k in range(workers) if devices[k % len(devices)] == "cpu")
        threads = max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                         initargs=(spec, queue, threads))

    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        from concurrent.futures.process import BrokenProcessPool

        pending = {self._pool.submit(_run_in_worker, task) for task in tasks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BrokenProcessPool as exc:
            raise EvoVLMError(f"a worker process died ({exc}); resume the run with --resume") from None
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def resolve_devices(runtime: RuntimeConfig) -> list[str]:
    if runtime.devices != "auto":
        return list(runtime.devices)
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def make_backend(spec: StageSpec) -> Backend:
    """Serial for one worker, else a process pool (auto: one worker per GPU); Ray actors with ``backend: ray``."""
    runtime = spec.config.runtime
    synthetic = spec.config.fitness.kind == "synthetic"
    if runtime.backend == "ray":
        from evovlm.evolve.ray_backend import RayBackend

        return RayBackend(spec, workers=None if runtime.workers == "auto" else runtime.workers,
                          address=runtime.ray_address, shards=runtime.shards)
    devices = ["cpu"] if synthetic and runtime.devices == "auto" else resolve_devices(runtime)
    workers = runtime.workers if runtime.workers != "auto" else (1 if synthetic else len(devices))
    if workers == 1:
        return SerialBackend(spec, devices[0])
    return ProcessPoolBackend(spec, devices, workers)
