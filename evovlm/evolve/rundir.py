"""The run directory of ``evovlm evolve``: its file names, its format version and its reader.

Layout, format version 1 (a one-stage mode keeps the stage's files in RUN_DIR itself; ``ps+dfs``
keeps them in RUN_DIR/ps and RUN_DIR/dfs)::

    config.yaml            the resolved config (defaults filled in, local paths absolute); written first
    run.json               {"format_version": 1, "evovlm_version": ...}; written with config.yaml
    summary.json           the final result, with format_version; written last: the run is finished
    STAGE/history.jsonl    one record per line (evovlm.evolve.history): candidate, validation, test, generation,
                           rerank (reduced fitness: the best candidates re-scored on the whole fitness set)
    STAGE/state/           the optimiser state after each generation (gen-NNNN.safetensors)
    STAGE/best_recipe.yaml PS: the best recipe so far (a recipe `evovlm merge` accepts)
    STAGE/best_dfs.yaml    DFS: the best layer path so far: ``path`` ("A:0", "B:3", ...) and ``scales``
    STAGE/fitness.png      the fitness curve (evovlm.evolve.report.plot_fitness)
    STAGE/subset.json      reduced fitness only: the items each candidate is scored on, the fitted IRT model
                           and the calibration candidates' scores (owned by evovlm.evolve.subset)
    STAGE/result.json      the stage's result; its presence marks the stage finished
    STAGE/model/           the stage's best model (runtime.save_model)

A run written before run.json existed has no format_version anywhere: it is version 1.

:class:`RunDir` reads folders it cannot trust (the app shows whatever lies in its runs folder): it
opens only regular files that resolve inside the run folder, at most MAX_FILE_BYTES each (histories
line by line), counts and skips history lines it cannot use (a live run's last line may be half
written), and turns damaged files into messages (``problems``). It raises one error, for a run of
a newer format: guessing at one would show wrong numbers.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from evovlm import __version__
from evovlm.errors import EvoVLMError

FORMAT_VERSION = 1
CONFIG_NAME = "config.yaml"
RUN_INFO_NAME = "run.json"
SUMMARY_NAME = "summary.json"
LOCK_NAME = ".lock"
HISTORY_NAME = "history.jsonl"
STATE_DIR = "state"
BEST_FILE = {"ps": "best_recipe.yaml", "dfs": "best_dfs.yaml"}
PLOT_NAME = "fitness.png"
RESULT_NAME = "result.json"
MODEL_DIR = "model"
MODES = {"ps": ["ps"], "dfs": ["dfs"], "ps+dfs": ["ps", "dfs"]}
MAX_FILE_BYTES = 16 * 2**20  # a config, best file or result; histories are read line by line
_ORIGIN = re.compile(r"^([AB]):(\d+)$")  # a DFS layer: model A or B, layer number


def stage_folder(run_dir: Path, stages: Sequence[str], stage: str) -> Path:
    """Where a stage's files go: the run folder itself in a one-stage mode, RUN_DIR/STAGE in ps+dfs."""
    return run_dir if len(stages) == 1 else run_dir / stage


def run_info_text() -> str:
    """The content of run.json."""
    return json.dumps({"format_version": FORMAT_VERSION, "evovlm_version": __version__}) + "\n"


def looks_like_run(path: Path) -> bool:
    """config.yaml beside run.json (or, in runs made before run.json, beside a history)."""
    marks = (RUN_INFO_NAME, HISTORY_NAME, *(f"{stage}/{HISTORY_NAME}" for stage in BEST_FILE))
    return (path / CONFIG_NAME).is_file() and any((path / mark).is_file() for mark in marks)


def _number(value: Any) -> float | None:
    """A finite number, or None (evolve writes a failed candidate's fitness as null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # a JSON integer beyond any float
        return None
    return number if math.isfinite(number) else None


_MAX_COUNT = 2**53  # beyond it a number is no generation or index evolve wrote (and JSON replies cannot carry it)


def _count(value: Any) -> bool:
    """A whole number from 0 to 2^53 (a generation, an index, a version)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT


@dataclass(frozen=True)
class Candidate:
    """One scored genome: a history record of type candidate, validation or test."""

    stage: str
    generation: int
    index: int
    fitness: float | None  # None: the candidate failed (see error)
    error: str | None = None
    genome: list[float] | None = None
    candidate: dict | None = None  # decoded: the recipe (PS) or {path, scales} (DFS)
    metric: str | None = None
    wall_s: float | None = None
    merge_s: float | None = None
    eval_s: float | None = None
    start: bool = False  # the stage's starting model itself (DFS init: a), not told to CMA-ES
    source: str | None = None  # a source alone (ps.score_sources): a baseline, never the stage's result

    @classmethod
    def from_record(cls, stage: str, record: dict) -> Candidate | None:
        """None for a record evolve would not write (no generation, index or fitness)."""
        if not _count(record.get("generation")) or not _count(record.get("index")) or "fitness" not in record:
            return None
        genome, candidate, metric = record.get("genome"), record.get("candidate"), record.get("metric")
        return cls(stage, record["generation"], record["index"], _number(record["fitness"]),
                   error=str(record["error"]) if record.get("error") else None,
                   genome=list(genome) if isinstance(genome, list) and all(_number(g) is not None for g in genome)
                   else None,
                   candidate=candidate if isinstance(candidate, dict) else None,
                   metric=metric if isinstance(metric, str) else None,
                   wall_s=_number(record.get("wall_s")), merge_s=_number(record.get("merge_s")),
                   eval_s=_number(record.get("eval_s")), start=record.get("start") is True,
                   source=record["source"] if isinstance(record.get("source"), str) else None)


@dataclass(frozen=True)
class Choice:
    """Evolve's choice of a stage's best candidate, with its validation score when validation ran, or its
    whole-fitness-set score when a reduced-fitness search re-ranked its best candidates."""

    candidate: Candidate
    validation: float | None = None
    rerank: float | None = None


@dataclass
class Stage:
    """One search stage (ps or dfs): its history and, as far as written, its best file, result and model."""

    name: str
    path: Path
    candidates: list[Candidate] = field(default_factory=list)  # the last record per (generation, index)
    validations: list[Candidate] = field(default_factory=list)  # each generation's best, re-scored
    tests: list[Candidate] = field(default_factory=list)  # the chosen candidate on the held-out test
    reranks: list[Candidate] = field(default_factory=list)  # reduced fitness: the best ones on the whole set
    skipped_lines: int = 0  # history lines that are no record evolve writes (or half written)
    best_text: str = ""  # best_recipe.yaml / best_dfs.yaml as written
    best_recipe: dict | None = None  # PS
    best_path: list[tuple[str, int]] | None = None  # DFS: (model "A" or "B", layer) in path order
    best_scales: list[float] | None = None  # DFS: the scale entering each layer of the path
    result: dict | None = None  # result.json
    model_dir: Path | None = None
    updated: float | None = None  # when the history last changed (epoch seconds)

    @classmethod
    def from_records(cls, name: str, path: Path, records: Iterable[dict]) -> Stage:
        """A stage from history records (evolve's in-memory ones, or lines read back)."""
        stage, candidates = cls(name, Path(path)), {}
        for record in records:
            kind = record.get("type")
            if kind == "generation":
                continue  # a summary of the candidates, derived from them where needed
            known = kind in ("candidate", "validation", "test", "rerank")
            item = Candidate.from_record(name, record) if known else None
            if item is None:
                stage.skipped_lines += 1
            elif kind == "candidate":
                candidates[(item.generation, item.index)] = item  # a retry after a crash replaces a failure
            else:
                {"validation": stage.validations, "test": stage.tests, "rerank": stage.reranks}[kind].append(item)
        stage.candidates = sorted(candidates.values(), key=lambda c: (c.generation, c.index))
        return stage

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def failed(self) -> list[Candidate]:
        return [c for c in self.candidates if c.fitness is None]

    @property
    def searched(self) -> list[Candidate]:
        """The candidates of the search (the starting model included), without the source baselines."""
        return [c for c in self.candidates if c.source is None]

    @property
    def sources(self) -> list[Candidate]:
        """Each source scored alone on the fitness set (``ps.score_sources``)."""
        return [c for c in self.candidates if c.source is not None]

    @property
    def metric(self) -> str | None:
        return next((c.metric for c in self.candidates if c.metric), None)

    def best(self, use_validation: bool = True) -> Choice | None:
        """Evolve's choice (evovlm.evolve.search uses this rule): after a reduced-fitness search, the re-ranked
        candidate with the best score on the whole fitness set; else the generation best with the best
        validation score when validation ran, else the best fitness. Ties go to the earlier candidate
        (after the higher search fitness, for re-ranks and validation)."""
        by_key = {(c.generation, c.index): c for c in self.candidates}

        def best_rescored(rescores: list[Candidate]) -> tuple[Candidate, Candidate] | None:
            """(re-score, its candidate) with the best re-score; ties: higher search fitness, then earlier."""
            pairs = [(r, by_key[(r.generation, r.index)]) for r in rescores
                     if r.fitness is not None and (r.generation, r.index) in by_key]
            return max(pairs, key=lambda p: (p[0].fitness, p[1].fitness if p[1].fitness is not None else -math.inf,
                                             -p[0].generation, -p[0].index), default=None)

        reranked = best_rescored(self.reranks)
        if reranked:
            return Choice(reranked[1], rerank=reranked[0].fitness)
        validated = best_rescored(self.validations) if use_validation else None
        if validated:
            return Choice(validated[1], validated[0].fitness)
        ok = [c for c in self.searched if c.fitness is not None]
        return Choice(max(ok, key=lambda c: (c.fitness, -c.generation, -c.index))) if ok else None


class RunDir:
    """A run folder as evolve wrote it, finished or live, read defensively (see the module's docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.problems: list[str] = []  # damaged or refused files, as messages
        self.format_version = self._format_version()

    def _format_version(self) -> int:
        """The version run.json and summary.json declare; 1 where neither does (runs made before versions)."""
        info = self._read_json(self.path / RUN_INFO_NAME)
        declared = []
        for name, data in ((RUN_INFO_NAME, info), (SUMMARY_NAME, self.summary)):
            version = data.get("format_version") if isinstance(data, dict) else None
            if _count(version) and version > FORMAT_VERSION:
                raise EvoVLMError(f"{self.path} was written by a newer EvoVLM (run format {version}; this EvoVLM "
                                  f"{__version__} reads format {FORMAT_VERSION}): upgrade evovlm to read it")
            if _count(version):
                declared.append(version)
            elif version is not None:
                self.problems.append(f"`{name}`: format_version {str(version)[:40]!r} is not a whole number; "
                                     f"read as format {FORMAT_VERSION}")
        if info is not None and not isinstance(info, dict):
            self.problems.append(f"`{RUN_INFO_NAME}` is not a JSON object; read as format {FORMAT_VERSION}")
        return max(declared, default=1)

    # -- files, kept inside the run folder ------------------------------------------------------------

    def _inside(self, path: Path) -> bool:
        """A regular file that really lies in the run folder: a symlink such as
        ``best_recipe.yaml -> /etc/passwd`` is not followed out of it."""
        try:
            return path.is_file() and path.resolve().is_relative_to(self.path.resolve())
        except (OSError, RuntimeError, ValueError):  # symlink loops, NUL bytes
            return False

    def _name(self, path: Path) -> str:
        return path.relative_to(self.path).as_posix() if path.is_relative_to(self.path) else str(path)

    def _read_text(self, path: Path) -> str | None:
        """A file's text, or None: missing (silently), or outside the run, too big, unreadable (noted)."""
        if not self._inside(path):
            try:
                there = path.is_symlink() or path.exists()
            except (OSError, ValueError):
                there = False
            if there:
                self.problems.append(f"`{self._name(path)}` is not a file inside the run folder: not read")
            return None
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                self.problems.append(f"`{self._name(path)}` is larger than {MAX_FILE_BYTES // 2**20} MiB: not read")
                return None
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self.problems.append(f"`{self._name(path)}` cannot be read ({exc.strerror or type(exc).__name__})")
            return None

    def _read_json(self, path: Path) -> Any:
        return self._parse(path, json.loads, "JSON")

    def _read_yaml(self, path: Path) -> Any:
        return self._parse(path, yaml.safe_load, "YAML")

    def _parse(self, path: Path, parse: Any, kind: str) -> Any:
        text = self._read_text(path)
        try:
            return None if text is None else parse(text)
        except (ValueError, RecursionError, yaml.YAMLError):  # json's errors are ValueErrors
            self.problems.append(f"`{self._name(path)}` is not valid {kind}: not read")
            return None

    def _read_history(self, path: Path) -> tuple[list[dict], int, float | None]:
        """(records, unreadable lines, modification time) of a history.jsonl."""
        records: list[dict] = []
        skipped, updated = 0, None
        if not self._inside(path):
            self._read_text(path)  # notes a history that leads out of the folder
            return records, skipped, updated
        try:
            updated = path.stat().st_mtime
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except (ValueError, RecursionError):  # a live run's half-written last line, or junk
                        record = None
                    if isinstance(record, dict):
                        records.append(record)
                    else:
                        skipped += 1
        except OSError as exc:
            self.problems.append(f"`{self._name(path)}` cannot be read ({exc.strerror or type(exc).__name__})")
        return records, skipped, updated

    # -- what the run holds -----------------------------------------------------------------------------

    @cached_property
    def config(self) -> dict:
        """The resolved config as written (a plain mapping; {} when missing or damaged)."""
        data = self._read_yaml(self.path / CONFIG_NAME)
        if data is not None and not isinstance(data, dict):
            self.problems.append(f"`{CONFIG_NAME}` is not a mapping: not read")
        return data if isinstance(data, dict) else {}

    @cached_property
    def summary(self) -> dict | None:
        """summary.json: written last, so present only when the run finished."""
        data = self._read_json(self.path / SUMMARY_NAME)
        return data if isinstance(data, dict) else None

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @cached_property
    def mode(self) -> str | None:
        mode = self.config.get("mode") or (self.summary or {}).get("mode")
        if mode is not None and mode not in MODES:
            self.problems.append(f"unknown mode {str(mode)[:40]!r}; one of {', '.join(MODES)} was expected")
        return mode if mode in MODES else None

    @cached_property
    def stage_names(self) -> list[str]:
        if self.mode is not None:
            return MODES[self.mode]
        # no readable config: the layout tells
        nested = [stage for stage in MODES["ps+dfs"] if (self.path / stage / HISTORY_NAME).is_file()]
        return nested or (["dfs"] if (self.path / BEST_FILE["dfs"]).is_file() else ["ps"])

    @cached_property
    def stages(self) -> list[Stage]:
        """The stages begun so far, in order."""
        found = []
        for name in self.stage_names:
            folder = stage_folder(self.path, self.stage_names, name)
            if (folder / HISTORY_NAME).exists() or (folder / RESULT_NAME).exists():
                found.append(self._read_stage(name, folder))
        return found

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def final(self) -> Stage | None:
        """The last stage begun: its best is the run's."""
        return self.stages[-1] if self.stages else None

    @property
    def model_dir(self) -> Path | None:
        """The run's best model (in ps+dfs the DFS stage's), once saved."""
        return self.final.model_dir if self.final is not None else None

    @property
    def updated_s_ago(self) -> float | None:
        times = [s.updated for s in self.stages if s.updated is not None]
        return max(0.0, time.time() - max(times)) if times else None

    def _read_stage(self, name: str, folder: Path) -> Stage:
        records, skipped, updated = self._read_history(folder / HISTORY_NAME)
        stage = Stage.from_records(name, folder, records)
        stage.skipped_lines += skipped
        stage.updated = updated
        result = self._read_json(folder / RESULT_NAME)
        stage.result = result if isinstance(result, dict) else None
        population = (stage.result or {}).get("population")
        if _count(population):  # runs written before records carried "start"
            stage.candidates = [replace(c, start=True) if c.generation == 0 and c.index >= population else c
                                for c in stage.candidates]
        best_file = folder / BEST_FILE[name]
        stage.best_text = self._read_text(best_file) or ""
        try:
            best = yaml.safe_load(stage.best_text) if stage.best_text else None
        except (yaml.YAMLError, RecursionError, ValueError):
            best = None
            self.problems.append(f"`{self._name(best_file)}` is not valid YAML: not read")
        if best is not None and not _read_best(stage, best):
            self.problems.append(f"`{self._name(best_file)}` is not a best {name.upper()} file: not read")
        if self._inside(folder / MODEL_DIR / "config.json"):
            stage.model_dir = folder / MODEL_DIR
        return stage


def _read_best(stage: Stage, data: Any) -> bool:
    """Fill the stage's best recipe (PS) or path and scales (DFS) from its best file; False if malformed."""
    if not isinstance(data, dict):
        return False
    if stage.name == "ps":
        ok = isinstance(data.get("models"), list)
        stage.best_recipe = data if ok else None
        return ok
    path, scales = data.get("path"), data.get("scales")
    if not isinstance(path, list) or not isinstance(scales, list) or len(path) != len(scales):
        return False
    origins = [_ORIGIN.match(item) if isinstance(item, str) else None for item in path]
    numbers = [_number(s) for s in scales]
    if not all(origins) or any(n is None for n in numbers):
        return False
    stage.best_path = [(m.group(1), int(m.group(2))) for m in origins]
    stage.best_scales = numbers
    return True
