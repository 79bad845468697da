"""``history.jsonl``: one JSON record per line, append-only and crash-safe.

Every line is written whole, flushed and fsynced before the run goes on, so after a crash
(even ``kill -9``) the file holds every finished record and at most one torn last line. On
opening, a torn last line is cut off (appending after it would glue two records together).

Records (``type``; :class:`evovlm.evolve.rundir.RunDir` reads them back):
  * ``candidate``: generation, index, genome, candidate (recipe / path), fitness (null when it
    failed), metric, score (the evaluator's summary), error, wall_s, merge_s, eval_s, worker;
    ``start: true`` on the stage's starting model (DFS ``init: a``), scored but not told to CMA-ES;
  * ``validation``: a generation's best candidate re-scored on the validation split;
  * ``test``: the chosen candidate re-scored on the held-out test split;
  * ``generation``: the end of a generation: best/mean fitness, best index, failures, time.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

from evovlm.errors import EvoVLMError


def _clean(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class History:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: list[dict] = list(self._read_and_repair())
        self._handle = None

    def _read_and_repair(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.splitlines(keepends=True)
        good_end = 0
        for number, line in enumerate(lines, 1):
            last = number == len(lines)
            if not line.endswith(b"\n"):
                break  # torn last line: written partly when the process died
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    if last:
                        break
                    raise EvoVLMError(f"{self.path}: line {number} is not valid JSON; the history is damaged "
                                      "(only a torn last line is repaired automatically)") from None
                yield record
            good_end += len(line)
        if good_end < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, record: dict) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(_clean(record), ensure_ascii=False, allow_nan=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records.append(record)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def of_type(self, kind: str) -> list[dict]:
        return [r for r in self.records if r.get("type") == kind]

    def candidates(self, generation: int) -> dict[int, dict]:
        """The last record per candidate index of one generation."""
        return {r["index"]: r for r in self.records if r.get("type") == "candidate" and r["generation"] == generation}
