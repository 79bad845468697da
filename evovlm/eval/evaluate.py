"""Run a model on a benchmark, score it, and build/write the results JSON.

Results schema (version 1), read later by the app's case-study browser::

    {
      "schema_version": 1,
      "model": str,                 # what the user passed / the runner's name
      "bench": str, "kind": "math"|"vqa", "metric": "mgsm"|"rouge-ja",
      "split": str|null, "data_seed": int|null, "data_source": str,
      "config": {template, max_new_tokens, num_beams, repetition_penalty, stop_strings,
                 batch_size, runner, device, dtype, limit, bootstrap_seed, n_resamples},
      "summary": {n, <score>, <score>_ci_low, <score>_ci_high, ...},   # from evovlm.eval.metrics
      "timing": {"generate_s", "score_s", "samples_per_s"},
      "samples": [SAMPLE, ...],
      "created": ISO-8601 UTC time, "evovlm_version": str
    }

Every SAMPLE has all of :data:`SAMPLE_FIELDS`; fields that do not apply to the metric are null.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evovlm import __version__
from evovlm.errors import EvoVLMError
from evovlm.eval.benchmarks import Benchmark
from evovlm.eval.runners import BaseRunner, GenerationSettings, Runner, VLMRunner, make_runner
from evovlm.io.atomic import write_atomic

SCHEMA_VERSION = 1
SAMPLE_FIELDS: dict[str, str] = {
    "index": "position in the benchmark",
    "id": "sample id from the dataset",
    "question": "the question (before the prompt template)",
    "reference": "gold answer",
    "response": "model output, cut at the first stop string and stripped",
    "image": "image path or dataset identifier (never pixels); null for text",
    "is_ja": "response judged Japanese (mgsm: P(ja) > 0.5, rouge-ja: >= 0.5)",
    "extracted": "mgsm: number read from the response",
    "correct": "mgsm: extracted == gold",
    "correct_ja": "mgsm: correct and Japanese",
    "is_pure": "mgsm: Japanese with no Latin letter and some kana/kanji",
    "correct_pure": "mgsm: correct and pure Japanese",
    "rouge1": "rouge-ja: ROUGE-1 F x100",
    "rouge2": "rouge-ja: ROUGE-2 F x100",
    "rougeL": "rouge-ja: ROUGE-L F x100",
    "rougeL_ja": "rouge-ja: ROUGE-L with non-Japanese replies to Japanese references scored 0",
    "ref_is_ja": "rouge-ja: reference judged Japanese",
    "content": "rouge-ja with content specs: names the right value and no wrong one",
    "content_ja": "rouge-ja with content specs: content and Japanese",
    "truncated_chars": "rouge-ja: {text: full length} when a text over 10,000 characters was scored on its start",
}


def generation_settings(benchmark: Benchmark, generation: GenerationSettings | dict | None = None
                        ) -> GenerationSettings:
    """The settings :func:`evaluate` generates with: the benchmark's, with ``generation`` applied."""
    if generation is None:
        return benchmark.generation.validated()
    if isinstance(generation, GenerationSettings):
        return generation.validated()
    return benchmark.generation.with_overrides(**generation)


def _sample_record(index: int, sample: Any, response: str, scored: dict) -> dict:
    record = dict.fromkeys(SAMPLE_FIELDS)
    record.update(index=index, id=sample.id, question=sample.question, reference=sample.reference,
                  response=response, image=sample.image_ref)
    record.update({k: v for k, v in scored.items() if k in SAMPLE_FIELDS})
    if "pred_is_ja" in scored:  # rouge-ja names it after the prediction; one name for both metrics
        record["is_ja"] = scored["pred_is_ja"]
    return record


def evaluate(
    runner_or_model: Runner | Any,
    benchmark: Benchmark,
    *,
    tokenizer: Any = None,
    limit: int | None = None,
    generation: GenerationSettings | dict | None = None,
    model_name: str | None = None,
    bootstrap_seed: int = 0,
    n_resamples: int = 1000,
    progress: bool = True,
) -> dict:
    """Generate on ``benchmark`` and score; returns the results dict (see module docstring).

    ``runner_or_model`` is a runner, or a loaded model with its ``tokenizer`` (tokenizer or processor).
    ``generation`` is full settings, or a dict of overrides of the benchmark's defaults.
    """
    if isinstance(runner_or_model, BaseRunner):
        runner = runner_or_model
    elif tokenizer is None:
        raise EvoVLMError("evaluate() needs tokenizer= (a tokenizer or processor) when given a bare model")
    else:
        runner = make_runner(runner_or_model, tokenizer, name=model_name)
    if limit is not None and limit < 1:
        raise EvoVLMError(f"limit must be a positive number of samples, got {limit}")
    settings = generation_settings(benchmark, generation)
    samples = benchmark.samples[:limit]
    if not samples:
        raise EvoVLMError(f"benchmark {benchmark.name} has no samples")
    with_images = benchmark.kind == "vqa"
    if with_images and not isinstance(runner, VLMRunner):
        raise EvoVLMError(f"{benchmark.name} asks questions about images: it needs a vision-language model, "
                          f"but {runner.name} is a text-only causal LM")

    started = time.perf_counter()
    responses = runner.answer([s.question for s in samples], settings,
                              images=[s.image for s in samples] if with_images else None, progress=progress)
    generated = time.perf_counter()
    summary, scored = score_responses(benchmark, responses, samples=samples, bootstrap_seed=bootstrap_seed,
                                      n_resamples=n_resamples)
    scored_at = time.perf_counter()

    config = settings.to_dict()
    config.update(runner=runner.kind, device=str(runner.device), dtype=str(runner.dtype).removeprefix("torch."),
                  limit=limit, bootstrap_seed=bootstrap_seed, n_resamples=n_resamples)
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model_name or runner.name,
        "bench": benchmark.name,
        "kind": benchmark.kind,
        "metric": benchmark.metric,
        "split": benchmark.split,
        "data_seed": benchmark.data_seed,
        "data_source": benchmark.source,
        "config": config,
        "summary": summary,
        "timing": {
            "generate_s": round(generated - started, 3),
            "score_s": round(scored_at - generated, 3),
            "samples_per_s": round(len(samples) / max(generated - started, 1e-9), 3),
        },
        "samples": [_sample_record(i, s, r, sc) for i, (s, r, sc) in enumerate(zip(samples, responses, scored))],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "evovlm_version": __version__,
    }


def score_responses(benchmark: Benchmark, responses: Sequence[str], *, samples: Sequence[Any] | None = None,
                    bootstrap_seed: int = 0, n_resamples: int = 1000) -> tuple[dict, list[dict]]:
    """(summary, per-sample scores) of ``responses`` to ``samples`` (default: all of the benchmark's), with
    the benchmark's metric: what :func:`evaluate` computes once it has generated."""
    from evovlm.eval.metrics import METRICS

    samples = benchmark.samples if samples is None else samples
    extra = {}
    if benchmark.metric == "rouge-ja" and any(s.content for s in samples):
        extra["contents"] = [s.content for s in samples]
    return METRICS[benchmark.metric]([s.reference for s in samples], list(responses), bootstrap_seed=bootstrap_seed,
                                     n_resamples=n_resamples, **extra)


def write_results(results: dict, path: str | os.PathLike) -> Path:
    """Write ``results`` as JSON atomically (temp file + rename): readers never see half a file."""
    path = Path(path)
    if path.is_dir():
        raise EvoVLMError(f"--out {path} is a directory; give a file name such as {path / 'results.json'}")
    return write_atomic(path, json.dumps(results, ensure_ascii=False, indent=2) + "\n")


SUMMARY_META = {"n", "ci_confidence", "bootstrap_seed", "n_resamples"}  # in a summary, not scores


def format_summary(results: dict) -> str:
    """A small text table: one row per score with its bootstrap confidence interval."""
    summary = results["summary"]
    lines = [
        f"{results['bench']} ({results.get('split') or '-'}, n={summary.get('n', len(results['samples']))}) "
        f"- {results['model']}",
        f"{'metric':<12}{'value':>9}  {'CI':<20}",
    ]
    for name, value in summary.items():
        if name in SUMMARY_META or name.endswith(("_ci_low", "_ci_high")) or not isinstance(value, (int, float)):
            continue
        low, high = summary.get(f"{name}_ci_low"), summary.get(f"{name}_ci_high")
        ci = f"[{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
        lines.append(f"{name:<12}{value:>9.2f}  {ci:<20}")
    timing = results.get("timing", {})
    if timing:
        lines.append(f"generation {timing['generate_s']:.1f}s ({timing['samples_per_s']:.2f} samples/s), "
                     f"scoring {timing['score_s']:.1f}s")
    return "\n".join(lines)
