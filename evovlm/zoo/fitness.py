"""A smooth fitness for searches on the zoo: how likely a model finds the reference reply.

Accuracy on the 100 fitness problems is flat over nearly all layer paths (a DFS path that
is half right still scores 0 of 100), so CMA-ES gets no direction from it. The mean
log-probability of the full reference reply ("equation; 答えは…です。") rises steadily as a
path gets closer to a working one (run 23 of the zoo experiments). It is a fitness only:
models are still judged by accuracy on the held-out test split.

Use it in an evolve config as ``fitness: {callable: "evovlm.zoo.fitness:mgsm_ja_reply_logprob"}``.
"""

from __future__ import annotations

from typing import Any

import torch

from evovlm.eval.prompts import build_prompt
from evovlm.zoo.benchmarks import load_zoo, reference_replies

BATCH_SIZE = 50


def mgsm_ja_reply_logprob(model: Any, tokenizer: Any) -> float:
    """Mean per-token log-probability of the reference replies to zoo-mgsm-ja's fitness split."""
    return reply_logprob(model, tokenizer, "zoo-mgsm-ja", "fitness")


@torch.no_grad()
def reply_logprob(model: Any, tokenizer: Any, benchmark: str, split: str) -> float:
    """Mean over problems of the mean log-probability of each reply token, given the zoo-qa prompt."""
    questions = [sample.question for sample in load_zoo(benchmark, split=split).samples]
    replies = reference_replies(benchmark, split)
    device = next(model.parameters()).device
    per_problem = []
    for start in range(0, len(questions), BATCH_SIZE):
        ids, attention, scored = _teacher_forcing_batch(tokenizer, questions[start:start + BATCH_SIZE],
                                                        replies[start:start + BATCH_SIZE])
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        token_log_probs = log_probs.gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)
        mask = scored[:, 1:].to(device)
        per_problem.append((token_log_probs * mask).sum(1) / mask.sum(1))
    return float(torch.cat(per_problem).mean())


def _teacher_forcing_batch(tokenizer: Any, questions: list[str], replies: list[str]):
    """Right-padded prompt + " " + reply ids, attention mask, and a mask of the reply tokens."""
    rows, reply_masks = [], []
    for question, reply in zip(questions, replies):
        prompt_ids = tokenizer(build_prompt("zoo-qa", question))["input_ids"]
        reply_ids = tokenizer(" " + reply, add_special_tokens=False)["input_ids"]  # as the zoo was trained
        rows.append(prompt_ids + reply_ids)
        reply_masks.append([0.0] * len(prompt_ids) + [1.0] * len(reply_ids))
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    attention = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    scored = torch.tensor([mask + [0.0] * (width - len(mask)) for mask in reply_masks])
    return ids, attention, scored
