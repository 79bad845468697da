"""A smooth fitness for searches on the zoo: how likely a model finds the reference reply.

Accuracy on the 100 fitness problems is flat over nearly all layer paths (a DFS path that
is half right still scores 0 of 100), so CMA-ES gets no direction from it. The mean
log-probability of the full reference reply ("equation; 答えは…です。") rises steadily as a
path gets closer to a working one (run 23 of the zoo experiments). It is a fitness only:
models are still judged by accuracy on the held-out test split.

Use it in an evolve config as ``fitness: {callable: "evovlm.zoo.fitness:mgsm_ja_reply_logprob"}``;
``arguments: {problems: 25}`` scores the first 25 fitness problems only (4x cheaper; see
``evovlm zoo evolve``'s DFS run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evovlm.errors import EvoVLMError
from evovlm.eval.prompts import build_prompt
from evovlm.zoo.benchmarks import load_zoo, reference_replies
from evovlm.zoo.train import qa_batch

BATCH_SIZE = 50


def mgsm_ja_reply_logprob(model: Any, tokenizer: Any, problems: int | None = None) -> float:
    """Mean per-token log-probability of the reference replies to zoo-mgsm-ja's fitness split
    (its first ``problems`` problems; default all)."""
    return reply_logprob(model, tokenizer, "zoo-mgsm-ja", "fitness", problems)


def mgsm_ja_kanji_reply_logprob(model: Any, tokenizer: Any, problems: int | None = None) -> float:
    """The same on zoo-mgsm-ja-kanji's fitness split (numbers in kanji; the reply in digits)."""
    return reply_logprob(model, tokenizer, "zoo-mgsm-ja-kanji", "fitness", problems)


def mgsm_ja_both_reply_logprob(model: Any, tokenizer: Any, problems: int | None = None,
                               digits_weight: float = 0.5) -> float:
    """The two together (by default their mean): a path that reads kanji numerals and still reads digits."""
    if isinstance(digits_weight, bool) or not isinstance(digits_weight, (int, float)) or not 0 <= digits_weight <= 1:
        raise EvoVLMError(f"digits_weight: a number from 0 to 1, got {digits_weight!r}")
    kanji = mgsm_ja_kanji_reply_logprob(model, tokenizer, problems)
    return (1 - digits_weight) * kanji + digits_weight * mgsm_ja_reply_logprob(model, tokenizer, problems)


def mgsm_ja_exact_logprob(model: Any, tokenizer: Any, problems: int | None = None,
                          exact_weight: float = 1.0) -> float:
    """zoo-mgsm-ja alone: the share of reference replies reproduced token for token plus their mean
    log-probability, as :func:`mgsm_ja_both_exact_logprob` takes it on each benchmark."""
    return exact_logprob(model, tokenizer, "zoo-mgsm-ja", problems, exact_weight)


def mgsm_ja_both_exact_logprob(model: Any, tokenizer: Any, problems: int | None = None,
                               exact_weight: float = 1.0) -> float:
    """Kanji and digit problems alike: the share of reference replies the model reproduces token for
    token (teacher-forced argmax, what greedy decoding would write), plus the mean log-probability as
    the guide. The log-probability alone prefers paths whose answer digits go wrong, a few tokens of a
    long reply (run 63); this counts what accuracy counts, in the same one forward pass."""
    value = 0.0
    for benchmark in ("zoo-mgsm-ja-kanji", "zoo-mgsm-ja"):
        value += 0.5 * exact_logprob(model, tokenizer, benchmark, problems, exact_weight)
    return value


def exact_logprob(model: Any, tokenizer: Any, benchmark: str, problems: int | None = None,
                  exact_weight: float = 1.0) -> float:
    """``exact_weight`` x the share of exact replies + the mean reply log-probability, on ``benchmark``'s
    fitness split."""
    if isinstance(exact_weight, bool) or not isinstance(exact_weight, (int, float)) or exact_weight < 0:
        raise EvoVLMError(f"exact_weight: a number of at least 0, got {exact_weight!r}")
    exact, logprob = reply_scores(model, tokenizer, benchmark, "fitness", problems)
    return exact_weight * exact + logprob


def reply_logprob(model: Any, tokenizer: Any, benchmark: str, split: str, problems: int | None = None) -> float:
    """Mean over problems of the mean log-probability of each reply token, given the zoo-qa prompt."""
    return reply_scores(model, tokenizer, benchmark, split, problems)[1]


@torch.no_grad()
def reply_scores(model: Any, tokenizer: Any, benchmark: str, split: str,
                 problems: int | None = None) -> tuple[float, float]:
    """(share of problems whose whole reference reply is the model's argmax at every token, mean over
    problems of the mean log-probability of each reply token), given the zoo-qa prompt."""
    if problems is not None and (isinstance(problems, bool) or not isinstance(problems, int) or problems < 1):
        raise EvoVLMError(f"problems: a whole number of at least 1 (or none for all), got {problems!r}")
    samples = load_zoo(benchmark, split=split).samples[:problems]
    return score_replies(model, tokenizer, [sample.question for sample in samples],
                         reference_replies(benchmark, split)[:problems])


@torch.no_grad()
def score_replies(model: Any, tokenizer: Any, questions: Sequence[str], replies: Sequence[str]) -> tuple[float, float]:
    """:func:`reply_scores` for any zoo-qa ``questions`` and their full reference ``replies``."""
    prompts = [build_prompt("zoo-qa", question) for question in questions]
    replies = [" " + reply for reply in replies]  # as the zoo was trained
    device = next(model.parameters()).device
    exact, per_problem = [], []
    for start in range(0, len(prompts), BATCH_SIZE):
        some_prompts, some_replies = prompts[start:start + BATCH_SIZE], replies[start:start + BATCH_SIZE]
        # The reply as the training batches' "work": labelled, with no EOS after it.
        batch = qa_batch(tokenizer, some_prompts, [""] * len(some_prompts), works=some_replies)
        ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits.float()[:, :-1]
        targets, mask = ids[:, 1:], labels[:, 1:] != -100
        token_log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        exact.append(((logits.argmax(-1) == targets) | ~mask).all(1).float())
        per_problem.append((token_log_probs * mask).sum(1) / mask.sum(1))
    return float(torch.cat(exact).mean()), float(torch.cat(per_problem).mean())
