"""Case-study browser logic: read ``evovlm eval`` results files, pair two of them, filter and sort.

Pure functions over the results schema of :mod:`evovlm.eval.evaluate` (version 1), so the UI stays a
thin layer and the logic is testable without a browser.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evovlm.app.generate import UserError
from evovlm.schema import finite

# Per-sample scores the browser can compare, best first for each metric.
METRIC_FIELDS = {
    "rouge-ja": ["content_ja", "rougeL_ja", "content", "rougeL", "rouge1", "rouge2"],
    "mgsm": ["correct_ja", "correct"],
}
# A per-sample field's corpus score in the summary, where the names differ (the rest are equal:
# rougeL_ja per sample and per corpus); the summary's accuracies are percentages.
SUMMARY_KEYS = {"correct": "acc", "correct_ja": "acc_ja", "correct_pure": "acc_pure"}
FILTERS = ["all", "A wins", "B wins", "ties"]
SORTS = ["index", "A − B (largest first)", "B − A (largest first)", "|A − B| (largest first)"]
MAX_RESULTS_BYTES = 200 * 1024 * 1024


@dataclass
class Results:
    path: str
    model: str
    bench: str
    metric: str
    summary: dict
    samples: list[dict]

    def label(self) -> str:
        return f"{self.model} on {self.bench}"


@dataclass
class Case:
    key: str
    index: int
    id: str
    question: str
    reference: str
    image: str | None
    a: dict
    b: dict | None
    score_a: float | None
    score_b: float | None

    @property
    def diff(self) -> float | None:
        if self.score_a is None or self.score_b is None:
            return None
        return self.score_a - self.score_b


_cache: OrderedDict[tuple[str, float, int], Results] = OrderedDict()
_cache_lock = threading.Lock()


def read_results(path: str | os.PathLike) -> Results:
    """Parse a results file (cached by path, mtime and size: the browser re-reads on every click)."""
    path = Path(path)
    try:
        stat = path.stat()
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        raise UserError(f"結果ファイルが見つかりません。Results file not found: {path.name!r}") from None
    key = (str(path), stat.st_mtime, stat.st_size)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if stat.st_size > MAX_RESULTS_BYTES:
        raise UserError(f"{path.name} is too large ({stat.st_size / 1e6:.0f} MB).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        raise UserError(f"{path.name} is not a results JSON file.") from None
    except RecursionError:
        raise UserError(f"{path.name} is nested too deeply to be a results file.") from None
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise UserError(f"{path.name} is not an `evovlm eval` results file (no 'samples' list).")
    if data.get("schema_version", 1) != 1:
        raise UserError(f"{path.name}: results schema version {data.get('schema_version')} "
                        "is not supported (expected 1).")
    samples = [s for s in data["samples"] if isinstance(s, dict)]
    metric = str(data.get("metric") or _guess_metric(samples))
    summary = data.get("summary")
    results = Results(path=str(path), model=str(data.get("model", path.stem))[:200],
                      bench=str(data.get("bench", "?"))[:200], metric=metric,
                      summary=summary if isinstance(summary, dict) else {}, samples=samples)
    with _cache_lock:
        _cache[key] = results
        while len(_cache) > 16:
            _cache.popitem(last=False)
    return results


def _guess_metric(samples: list[dict]) -> str:
    return "mgsm" if any("correct" in s for s in samples) else "rouge-ja"


def metric_choices(*results: Results | None) -> list[str]:
    """Score fields present in every loaded file, the metric's headline score first."""
    loaded = [r for r in results if r is not None]
    if not loaded:
        return []
    preferred = METRIC_FIELDS.get(loaded[0].metric, [])
    numeric = [f for f in preferred if all(any(_score(s, f) is not None for s in r.samples) for r in loaded)]
    return numeric or preferred


def _score(sample: dict, field: str) -> float | None:
    value = sample.get(field)
    if isinstance(value, bool):
        return 100.0 if value else 0.0  # accuracy in percent, like ROUGE
    if finite(value):  # NaN or inf is no score (JSON from elsewhere)
        return float(value)
    return None


def _key(sample: dict, position: int, by_id: bool) -> str:
    return str(sample.get("id")) if by_id else str(sample.get("index", position))


def pair(a: Results, b: Results | None, metric: str) -> list[Case]:
    """One case per sample of A (and the matching sample of B, by id when ids are unique, else by index)."""
    def unique_ids(r: Results) -> bool:
        ids = [s.get("id") for s in r.samples]
        return all(i is not None for i in ids) and len(set(map(str, ids))) == len(ids)

    by_id = unique_ids(a) and (b is None or unique_ids(b))
    b_samples = {_key(s, i, by_id): s for i, s in enumerate(b.samples)} if b else {}
    cases = []
    for position, sample in enumerate(a.samples):
        key = _key(sample, position, by_id)
        other = b_samples.get(key) if b else None
        if b is not None and other is None:
            continue  # not answered by B: nothing to compare
        index = sample.get("index", position)
        cases.append(Case(
            key=key, index=index if isinstance(index, int) and not isinstance(index, bool) else position,
            id=str(sample.get("id", key)),
            question=str(sample.get("question") or ""), reference=str(sample.get("reference") or ""),
            image=sample.get("image"), a=sample, b=other,
            score_a=_score(sample, metric), score_b=_score(other, metric) if other else None,
        ))
    return cases


def select(cases: list[Case], which: str = "all", sort: str = "index", search: str = "") -> list[Case]:
    """Filter (A wins / B wins / ties), search the texts, and sort."""
    def keep(case: Case) -> bool:
        d = case.diff
        if which == "A wins":
            return d is not None and d > 0
        if which == "B wins":
            return d is not None and d < 0
        if which == "ties":
            return d is not None and d == 0
        return True

    needle = (search or "").strip().casefold()

    def matches(case: Case) -> bool:
        if not needle:
            return True
        texts = [case.id, case.question, case.reference, str(case.a.get("response") or "")]
        if case.b:
            texts.append(str(case.b.get("response") or ""))
        return any(needle in t.casefold() for t in texts)

    chosen = [c for c in cases if keep(c) and matches(c)]
    if sort == SORTS[1]:
        chosen.sort(key=lambda c: -(c.diff if c.diff is not None else float("-inf")))
    elif sort == SORTS[2]:
        chosen.sort(key=lambda c: c.diff if c.diff is not None else float("inf"))
    elif sort == SORTS[3]:
        chosen.sort(key=lambda c: -abs(c.diff) if c.diff is not None else 0.0)
    else:
        chosen.sort(key=lambda c: c.index)
    return chosen


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def table(cases: list[Case]) -> list[list[Any]]:
    rows = []
    for position, case in enumerate(cases):
        question = case.question.replace("\n", " ")
        rows.append([position, case.id, question[:80] + ("…" if len(question) > 80 else ""),
                     _fmt(case.score_a), _fmt(case.score_b), _fmt(case.diff)])
    return rows


TABLE_HEADERS = ["#", "id", "question", "A", "B", "A − B"]


def summary_markdown(a: Results, b: Results | None, cases: list[Case], shown: int, metric: str) -> str:
    lines = [f"**A**: {a.label()}" + (f" · **B**: {b.label()}" if b else "")]
    if b is not None and a.bench != b.bench:
        lines.append(f"⚠ The files are on different benchmarks ({a.bench} vs {b.bench}); samples are paired by "
                     "id or index.")
    key = SUMMARY_KEYS.get(metric, metric)

    def score(r: Results) -> str:
        value = r.summary.get(key)
        return "–" if not isinstance(value, (int, float)) else f"{value:.2f}"

    lines.append(f"{key}: A = {score(a)}" + (f", B = {score(b)}" if b else ""))
    if b is not None:
        wins_a = sum(1 for c in cases if c.diff is not None and c.diff > 0)
        wins_b = sum(1 for c in cases if c.diff is not None and c.diff < 0)
        ties = sum(1 for c in cases if c.diff == 0)
        lines.append(f"{len(cases)} paired samples: A wins {wins_a}, B wins {wins_b}, ties {ties}.")
    lines.append(f"Showing {shown} of {len(cases)}.")
    text = "  \n".join(lines)
    both = right_wrong_table(cases, metric, a, b)
    return f"{text}\n\n{both}" if both else text


def difference_histogram(cases: list[Case], width: float = 10.0) -> Any:
    """How many paired samples fall in each bin of A − B: exact ties at 0, the rest in bins of ``width``
    points labelled by their end away from 0 (+10 holds (0, 10]); a right/wrong metric gives the three
    bars -100, 0 and +100. Empty without B."""
    import pandas as pd

    diffs = [c.diff for c in cases if c.diff is not None and math.isfinite(c.diff)]  # 1e308 − (−1e308) is inf
    counts: dict[float, int] = {}
    for diff in diffs:
        centre = 0.0 if diff == 0 else math.copysign(min(math.ceil(abs(diff) / width), 100 / width) * width, diff)
        counts[centre] = counts.get(centre, 0) + 1
    rows = [(f"{centre:+.0f}" if centre else "0", count) for centre, count in sorted(counts.items())]
    return pd.DataFrame(rows, columns=["A − B", "samples"])


def right_wrong_table(cases: list[Case], metric: str, a: Results, b: Results | None) -> str:
    """Which model was right, as a 2x2 table, for a right/wrong per-sample field ("" otherwise)."""
    if b is None or not cases or not all(isinstance(c.a.get(metric), bool) and c.b is not None
                                         and isinstance(c.b.get(metric), bool) for c in cases):
        return ""
    counts = {(ra, rb): 0 for ra in (True, False) for rb in (True, False)}
    for case in cases:
        counts[(case.a[metric], case.b[metric])] += 1
    return "\n".join([f"| {metric} | B ({b.model}) right | B wrong |", "|---|---|---|",
                      f"| **A ({a.model}) right** | {counts[(True, True)]} | {counts[(True, False)]} |",
                      f"| **A wrong** | {counts[(False, True)]} | {counts[(False, False)]} |"])


def detail_markdown(case: Case, metric: str, a: Results, b: Results | None) -> str:
    def extras(sample: dict) -> str:
        parts = [f"{metric} = {_fmt(_score(sample, metric))}"]
        for field in ("extracted", "correct", "is_ja"):
            if sample.get(field) is not None:
                parts.append(f"{field} = {sample[field]}")
        return ", ".join(parts)

    lines = [f"**sample {case.index}** (id `{case.id}`)", f"- **A** ({a.model}): {extras(case.a)}"]
    if b is not None and case.b is not None:
        lines.append(f"- **B** ({b.model}): {extras(case.b)}")
    return "\n".join(lines)
