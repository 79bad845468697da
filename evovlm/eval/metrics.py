"""The paper's Japanese metrics: ROUGE-ja (ja-vlm-bench / VQA) and MGSM accuracy.

All scores are percentages (0-100), as in the paper's tables. A corpus score is
the plain mean of the per-sample scores, so it is deterministic; the published
code reports a bootstrap "mid" instead, which moves from run to run. Alongside
the mean we give a seeded percentile-bootstrap confidence interval.

Summaries are flat dicts: ``n``, each score ``<name>`` with ``<name>_ci_low`` /
``<name>_ci_high``, and the bootstrap settings used.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from evovlm.errors import EvoVLMError
from evovlm.eval.langid import prob_japanese
from evovlm.eval.numparse import extract_answer, extract_answer_legacy, parse_number

__all__ = [
    "METRICS",
    "extract_answer",
    "content_correct",
    "extract_answer_legacy",
    "item_columns",
    "is_pure_japanese",
    "mean_and_ci",
    "mgsm_sample",
    "parse_number",
    "rouge_ja_sample",
    "score_mgsm",
    "score_rouge_ja",
]

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_JA_THRESHOLD = 0.5
# ROUGE and language ID read at most this many characters of each text. MeCab crashes the
# process on texts of about a million characters, and ROUGE-L's table grows with the product of
# both lengths (10,000 characters a side take ~7 s); real replies are a few hundred characters.
MAX_ROUGE_CHARS = 10_000
_CONFIDENCE = 0.95
_ABS_TOL = 1e-6  # "18.00" == 18; answers are integers or short decimals
_LATIN = re.compile(r"[A-Za-zＡ-Ｚａ-ｚ]")
_KANA_KANJI = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")
_RESAMPLE_CHUNK = 100  # bounds bootstrap memory to chunk x n indices


def mean_and_ci(
    values: Sequence[float], *, seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95
) -> dict:
    """Plain mean plus a percentile-bootstrap CI: ``{"mean", "ci_low", "ci_high"}``.

    Resampling uses ``numpy.random.default_rng(seed)``, so the same inputs and seed
    always give the same interval.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("mean_and_ci needs a non-empty 1-D sequence of numbers")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    resampled_means = np.empty(n_resamples)
    for start in range(0, n_resamples, _RESAMPLE_CHUNK):
        stop = min(start + _RESAMPLE_CHUNK, n_resamples)
        picks = rng.integers(0, data.size, size=(stop - start, data.size))
        resampled_means[start:stop] = data[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(resampled_means, [tail, 100.0 - tail])
    return {"mean": float(data.mean()), "ci_low": float(low), "ci_high": float(high)}


def _summarise(columns: dict[str, list[float]], *, seed: int, n_resamples: int) -> dict:
    summary: dict = {"n": len(next(iter(columns.values())))}
    for name, values in columns.items():
        stats = mean_and_ci(values, seed=seed, n_resamples=n_resamples, confidence=_CONFIDENCE)
        summary[name] = stats["mean"]
        summary[f"{name}_ci_low"] = stats["ci_low"]
        summary[f"{name}_ci_high"] = stats["ci_high"]
    summary.update(ci_confidence=_CONFIDENCE, bootstrap_seed=seed, n_resamples=n_resamples)
    return summary


def _check_lengths(what: str, golds: Sequence, predictions: Sequence) -> None:
    if len(golds) != len(predictions):
        raise ValueError(f"{len(golds)} {what} but {len(predictions)} predictions")
    if not golds:
        raise EvoVLMError("nothing to score: no samples were given")


# --- ROUGE-ja -------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    # One scorer for the process: rouge-score stores the tokenizer, nothing per pair.
    from rouge_score import rouge_scorer

    from evovlm.eval.textnorm import MecabTokenizer

    return rouge_scorer.RougeScorer(list(_ROUGE_TYPES), tokenizer=MecabTokenizer())


def rouge_ja_sample(reference: str, prediction: str) -> dict:
    """ROUGE-1/2/L F-measure x100 with MeCab words, raw and under the Japanese rule.

    ``rougeL_ja``: when the reference is Japanese (P(ja) >= 0.5), a prediction with
    P(ja) < 0.5 is scored as the empty string, i.e. 0.
    Returns ``{"rouge1", "rouge2", "rougeL", "rougeL_ja", "pred_is_ja", "ref_is_ja"}``, and
    ``truncated_chars`` (each cut text's full length) when a text exceeds :data:`MAX_ROUGE_CHARS`:
    only its start is scored.
    """
    truncated = {name: len(text) for name, text in (("reference", reference), ("prediction", prediction))
                 if len(text) > MAX_ROUGE_CHARS}
    reference, prediction = reference[:MAX_ROUGE_CHARS], prediction[:MAX_ROUGE_CHARS]
    scores = _rouge_scorer().score(reference, prediction)
    record = {name: scores[name].fmeasure * 100.0 for name in _ROUGE_TYPES}
    ref_is_ja = prob_japanese(reference) >= _JA_THRESHOLD
    pred_is_ja = prob_japanese(prediction) >= _JA_THRESHOLD
    blanked = ref_is_ja and not pred_is_ja
    # rouge-score gives F = 0 whenever one side has no tokens, so a blanked
    # prediction needs no second scoring pass.
    record["rougeL_ja"] = 0.0 if blanked else record["rougeL"]
    record.update(pred_is_ja=pred_is_ja, ref_is_ja=ref_is_ja)
    if truncated:
        record["truncated_chars"] = truncated
    return record


def _mentions(text: str, value: str) -> bool:
    if value.isdigit():  # "3" must not be found inside "13"
        return re.search(rf"(?<!\d){re.escape(value)}(?!\d)", text) is not None
    return value.lower() in text.lower()


def content_correct(prediction: str, accepted: Sequence[str], wrong: Sequence[str],
                    other_numbers_wrong: bool = False) -> bool:
    """The reply names an accepted value and none of the wrong ones (listing every colour fails).

    ``other_numbers_wrong``: any number in the reply that is not accepted is wrong too, so a
    colour answer closed by "答えは8です。" fails although 8 is no answer the question can have."""
    if other_numbers_wrong and any(number not in accepted for number in re.findall(r"\d+", prediction)):
        return False
    return any(_mentions(prediction, value) for value in accepted) and not any(
        _mentions(prediction, value) for value in wrong)


def score_rouge_ja(
    references: Sequence[str],
    predictions: Sequence[str],
    *,
    contents: Sequence[dict | None] | None = None,
    bootstrap_seed: int = 0,
    n_resamples: int = 1000,
) -> tuple[dict, list[dict]]:
    """Corpus ROUGE-ja: (summary with rouge1/rouge2/rougeL/rougeL_ja + CIs, per-sample records).

    ``contents`` optionally gives each sample's ``{"accepted": [...], "wrong": [...]}`` values
    (e.g. the right and wrong colours, in any language). Then ``content`` (the reply names the
    right value and no wrong one) and ``content_ja`` (the same, in a Japanese reply) are scored too:
    ROUGE alone rewards a reply that is merely Japanese-shaped. An optional ``"accepted_ja"`` list
    narrows what ``content_ja`` accepts: "答えはredです。" is a Japanese reply, not a Japanese answer.
    ``"other_numbers_wrong": true`` makes every number not accepted a wrong value.
    """
    _check_lengths("references", references, predictions)
    samples = [rouge_ja_sample(ref, pred) for ref, pred in zip(references, predictions)]
    if contents is not None:
        _check_lengths("content specs", contents, predictions)
        if all(spec is not None for spec in contents):
            for record, prediction, spec in zip(samples, predictions, contents):
                wrong, numbers = spec.get("wrong", ()), bool(spec.get("other_numbers_wrong"))
                record["content"] = content_correct(prediction, spec["accepted"], wrong, numbers)
                named_ja = (record["content"] if spec.get("accepted_ja") is None
                            else content_correct(prediction, spec["accepted_ja"], wrong, numbers))
                record["content_ja"] = named_ja and record["pred_is_ja"]
    return _summarise(item_columns("rouge-ja", samples), seed=bootstrap_seed, n_resamples=n_resamples), samples


# --- MGSM -----------------------------------------------------------------------


def _gold_value(gold: str | float) -> float:
    if isinstance(gold, bool):
        raise ValueError(f"gold answer must be a number or a numeric string, got {gold!r}")
    if isinstance(gold, (int, float)):
        return float(gold)
    value = parse_number(gold)
    if value is None:
        raise ValueError(f"gold answer {gold!r} contains no number")
    return value


def is_pure_japanese(text: str) -> bool:
    """No Latin letter at all, and at least one kana or kanji (digits and symbols are neutral)."""
    return _LATIN.search(text) is None and _KANA_KANJI.search(text) is not None


def mgsm_sample(gold: str | float, prediction: str) -> dict:
    """Score one MGSM reply: ``{"extracted", "correct", "is_ja", "correct_ja", "is_pure", "correct_pure"}``.

    ``correct``: the extracted final number equals the gold (within 1e-6).
    ``correct_ja`` also needs the reply to be Japanese, P(ja) > 0.5 (strict, as in the paper).
    ``correct_pure`` is stricter still: a Japanese reply with no Latin letter anywhere, so a
    code-switched "The answer is 9.答え" cannot pass.
    """
    gold_value = _gold_value(gold)
    extracted = extract_answer(prediction)
    correct = extracted is not None and math.isclose(extracted, gold_value, rel_tol=1e-9, abs_tol=_ABS_TOL)
    is_ja = prob_japanese(prediction) > _JA_THRESHOLD
    is_pure = is_ja and is_pure_japanese(prediction)
    return {"extracted": extracted, "correct": correct, "is_ja": is_ja, "correct_ja": correct and is_ja,
            "is_pure": is_pure, "correct_pure": correct and is_pure}


def score_mgsm(
    golds: Sequence[str | float],
    predictions: Sequence[str],
    *,
    bootstrap_seed: int = 0,
    n_resamples: int = 1000,
) -> tuple[dict, list[dict]]:
    """MGSM accuracy in percent: (summary with acc/acc_ja + CIs, per-sample records)."""
    _check_lengths("gold answers", golds, predictions)
    samples = [mgsm_sample(gold, pred) for gold, pred in zip(golds, predictions)]
    return _summarise(item_columns("mgsm", samples), seed=bootstrap_seed, n_resamples=n_resamples), samples


_MGSM_COLUMNS = {"acc": "correct", "acc_ja": "correct_ja", "acc_pure": "correct_pure"}  # summary key <- sample field
_ROUGE_COLUMNS = ("rouge1", "rouge2", "rougeL", "rougeL_ja", "content", "content_ja")


def item_columns(metric: str, samples: Sequence[dict]) -> dict[str, list[float]]:
    """Each summary score's value on each of ``metric``'s per-sample records (the summary is their mean):
    100 or 0 for a right or wrong answer, the ROUGE F-measure as it is. ``content`` and ``content_ja``
    only where every record was scored for content."""
    if metric == "mgsm":
        fields = _MGSM_COLUMNS
    elif metric == "rouge-ja":
        fields = {name: name for name in _ROUGE_COLUMNS if samples and all(name in sample for sample in samples)}
    else:
        raise ValueError(f"no per-item scores for metric {metric!r}; known: {', '.join(METRICS)}")
    return {key: [100.0 * s[field] if isinstance(s[field], bool) else float(s[field]) for s in samples]
            for key, field in fields.items()}


METRICS: dict[str, Callable[..., tuple[dict, list[dict]]]] = {
    "rouge-ja": score_rouge_ja,
    "mgsm": score_mgsm,
}
