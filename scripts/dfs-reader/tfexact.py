"""Run 63 (issue 18), an experimental PS+DFS fitness: the share of fitness problems whose whole reference reply is the
model's argmax at every token (teacher-forced: what greedy decoding would reproduce), plus the mean reply
log-likelihood as the guide, on the kanji and the digit benchmark alike. One forward pass, as cheap as the
log-likelihood alone.

    PYTHONPATH=scripts/dfs-reader python hybrid_search.py ZOO PS OUT --fitness tfexact:both_exact_logprob --problems 0
"""
import torch

from evovlm.eval.prompts import build_prompt
from evovlm.zoo.benchmarks import load_zoo, reference_replies
from evovlm.zoo.fitness import BATCH_SIZE
from evovlm.zoo.train import qa_batch


@torch.no_grad()
def exact_and_logprob(model, tokenizer, benchmark: str, split: str, problems: int | None = None) -> tuple[float, float]:
    """(share of problems whose reference reply is argmax at every token, mean per-token log-likelihood)."""
    samples = load_zoo(benchmark, split=split).samples[:problems]
    prompts = [build_prompt("zoo-qa", sample.question) for sample in samples]
    replies = [" " + reply for reply in reference_replies(benchmark, split)[:problems]]
    device = next(model.parameters()).device
    exact, logprob = [], []
    for start in range(0, len(prompts), BATCH_SIZE):
        batch = qa_batch(tokenizer, prompts[start:start + BATCH_SIZE], [""] * len(prompts[start:start + BATCH_SIZE]),
                         works=replies[start:start + BATCH_SIZE])
        ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits.float()[:, :-1]
        targets, mask = ids[:, 1:], labels[:, 1:] != -100
        token_log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        hits = (logits.argmax(-1) == targets) | ~mask
        exact.append(hits.all(1).float())
        logprob.append((token_log_probs * mask).sum(1) / mask.sum(1))
    return float(torch.cat(exact).mean()), float(torch.cat(logprob).mean())


def both_exact_logprob(model, tokenizer, problems: int | None = None, exact_weight: float = 1.0) -> float:
    value = 0.0
    for benchmark in ("zoo-mgsm-ja-kanji", "zoo-mgsm-ja"):
        exact, logprob = exact_and_logprob(model, tokenizer, benchmark, "fitness", problems)
        value += 0.5 * (exact_weight * exact + logprob)
    return value
