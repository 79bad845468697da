"""The interface every place that evaluates candidates implements (evolve.backends, evolve.ray_backend)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator, Sequence

from evovlm.evolve.evaluators import Outcome, Task


class Backend(ABC):
    workers: int = 1

    @abstractmethod
    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        """Evaluate ``tasks``; yield each outcome as soon as it is known."""

    def close(self) -> None:
        """Release workers and models."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
