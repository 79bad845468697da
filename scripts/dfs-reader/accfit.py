"""Run 62 (issue 18), an experimental PS+DFS fitness: the reply log-likelihood (the guide) plus greedy accuracy (what
the table counts), on the first ``problems`` fitness problems of the kanji and the digit benchmark.

    PYTHONPATH=scripts/dfs-reader python hybrid_search.py ZOO PS OUT --fitness accfit:both_acc_logprob
"""
from dataclasses import replace

from evovlm.eval.evaluate import generation_settings, score_responses
from evovlm.eval.runners import CausalLMRunner
from evovlm.zoo.benchmarks import load_zoo
from evovlm.zoo.fitness import reply_logprob


def accuracy(model, tokenizer, bench_name: str, split: str, start: int, stop: int) -> float:
    """acc_ja (0-100) of greedy replies to problems ``start:stop`` of a zoo benchmark's split."""
    bench = load_zoo(bench_name, split=split)
    bench = replace(bench, samples=bench.samples[start:stop])
    replies = CausalLMRunner(model, tokenizer).answer([s.question for s in bench.samples], generation_settings(bench),
                                                      progress=False)
    return score_responses(bench, replies, n_resamples=1)[0]["acc_ja"]


def both_acc_logprob(model, tokenizer, problems: int = 25, acc_weight: float = 1.0) -> float:
    value = 0.0
    for bench in ("zoo-mgsm-ja-kanji", "zoo-mgsm-ja"):
        value += 0.5 * reply_logprob(model, tokenizer, bench, "fitness", problems)
        value += 0.5 * acc_weight * accuracy(model, tokenizer, bench, "fitness", 0, problems) / 100
    return value
