"""``evovlm score FILE.jsonl --metric rouge-ja|mgsm``: score predictions made elsewhere.

Each JSONL line is an object with the gold text in ``reference`` (or ``answer``) and
the model's reply in ``prediction`` (or ``response``); the first key present wins.
Every input field is carried into the per-sample record, with the metric's fields
added (they win on a name clash). Input problems raise ``EvoVLMError`` naming the line.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from evovlm.argtypes import MAX_RESAMPLES, count
from evovlm.errors import EvoVLMError
from evovlm.io.atomic import write_atomic

# Mirrors metrics.METRICS; spelled out so that ``--help`` does not import MeCab/fastText.
METRIC_NAMES = ("rouge-ja", "mgsm")
GOLD_KEYS = ("reference", "answer")
PREDICTION_KEYS = ("prediction", "response")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="JSONL file, one {reference|answer, prediction|response} per line")
    parser.add_argument("--metric", required=True, choices=METRIC_NAMES, help="which metric to compute")
    parser.add_argument("--out", type=Path, help="write {summary, samples} JSON here")
    parser.add_argument("--seed", type=count(0), default=0,
                        help="seed of the bootstrap confidence intervals (default 0)")
    parser.add_argument("--n-resamples", type=count(1, MAX_RESAMPLES), default=1000,
                        help="bootstrap resamples (default 1000)")


def run(args: argparse.Namespace) -> int:
    records = read_jsonl(args.file)
    golds, predictions = _inputs(records, args.metric, args.file)

    from evovlm.eval.metrics import METRICS

    summary, scored = METRICS[args.metric](
        golds, predictions, bootstrap_seed=args.seed, n_resamples=args.n_resamples
    )
    summary = {"metric": args.metric, "file": str(args.file), **summary}
    samples = [{**record, **fields} for (_, record), fields in zip(records, scored)]
    print(format_summary(summary))
    cut = [lineno for (lineno, _), fields in zip(records, scored) if "truncated_chars" in fields]
    if cut:
        from evovlm.eval.metrics import MAX_ROUGE_CHARS

        print(f"note: {len(cut)} sample(s) longer than {MAX_ROUGE_CHARS:,} characters were scored on their first "
              f"{MAX_ROUGE_CHARS:,} (lines {', '.join(map(str, cut[:10]))}{', ...' if len(cut) > 10 else ''}; "
              "`truncated_chars` in their records)")
    if args.out is not None:
        write_json_atomic(args.out, {"summary": summary, "samples": samples})
        print(f"wrote {args.out}")
    return 0


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; any defect names its line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise EvoVLMError(f"{path}: no such file") from None
    except OSError as exc:
        raise EvoVLMError(f"{path}: cannot read ({exc.strerror or exc})") from None
    records = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) carry nothing
        where = f"{path}, line {lineno}"
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise EvoVLMError(f"{where}: not valid UTF-8") from None
        except json.JSONDecodeError as exc:
            raise EvoVLMError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise EvoVLMError(f"{where}: expected a JSON object, got {_json_type(record)}")
        records.append((lineno, record))
    if not records:
        raise EvoVLMError(f"{path}: empty file, nothing to score")
    return records


def _inputs(records: list[tuple[int, dict]], metric: str, path: Path) -> tuple[list, list[str]]:
    """Pull out and validate (golds, predictions) so that errors point at the line."""
    from evovlm.eval.numparse import parse_number  # light: stdlib only

    golds, predictions = [], []
    for lineno, record in records:
        where = f"{path}, line {lineno}"
        gold_key = _first_key(record, GOLD_KEYS, where)
        pred_key = _first_key(record, PREDICTION_KEYS, where)
        gold, prediction = record[gold_key], record[pred_key]
        if not isinstance(prediction, str):
            raise EvoVLMError(f"{where}: {pred_key!r} must be a string, got {_json_type(prediction)}")
        if metric == "mgsm":
            numeric = isinstance(gold, (int, float)) and not isinstance(gold, bool) and math.isfinite(gold)
            if not numeric and not (isinstance(gold, str) and parse_number(gold) is not None):
                raise EvoVLMError(f"{where}: gold {gold_key!r} must be a number, got {json.dumps(gold)}")
        elif not isinstance(gold, str):
            raise EvoVLMError(f"{where}: {gold_key!r} must be a string, got {_json_type(gold)}")
        golds.append(gold)
        predictions.append(prediction)
    return golds, predictions


def _first_key(record: dict, keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        if key in record:
            return key
    raise EvoVLMError(f"{where}: missing {keys[0]!r} (or {keys[1]!r})")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)


def format_summary(summary: dict) -> str:
    """A small fixed-width table: one row per score with its confidence interval."""
    level = round(summary["ci_confidence"] * 100)
    lines = [
        f"{summary['metric']} on {summary['n']} samples from {summary['file']} "
        f"({level}% bootstrap CI, {summary['n_resamples']} resamples, seed {summary['bootstrap_seed']})",
        f"  {'score':<10} {'mean':>8} {'ci_low':>8} {'ci_high':>8}",
    ]
    for name, value in summary.items():
        if f"{name}_ci_low" in summary:
            lines.append(
                f"  {name:<10} {value:8.2f} {summary[name + '_ci_low']:8.2f} {summary[name + '_ci_high']:8.2f}"
            )
    return "\n".join(lines)


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON via a temp file in the same folder + rename: never a half-written file."""
    folder = path.parent
    if not folder.is_dir():
        raise EvoVLMError(f"cannot write {path}: folder {folder} does not exist")
    try:
        write_atomic(path, json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
    except OSError as exc:
        raise EvoVLMError(f"cannot write {path}: {exc.strerror or exc}") from None
