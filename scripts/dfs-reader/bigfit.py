"""Run 67 (issue 18, dev only): the DFS fitness on more problems. The fitness split's 100 zoo-mgsm-ja problems, then
``extra`` more drawn from the world with a reserved seed (excluding every standard split, but not fresh draws), each
with its full reference reply; the share reproduced exactly plus the mean reply log-likelihood, as
``evovlm.zoo.fitness.exact_logprob`` takes them. Use it as the fitness callable ``bigfit:mgsm_ja_exact_logprob_wide``
with this folder on PYTHONPATH.
"""
import functools
import random
from typing import Any

from evovlm.zoo import world
from evovlm.zoo.benchmarks import _PROBLEMS, _draw_unique, _standard_splits, load_zoo, reference_replies
from evovlm.zoo.fitness import score_replies

NAME = "zoo-mgsm-ja"


@functools.lru_cache(maxsize=None)
def pool(extra: int, seed: int = 1000) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(questions, full reference replies): the fitness split, then ``extra`` problems drawn with ``seed``."""
    generate, language = _PROBLEMS[NAME]
    seen = {key for rows in _standard_splits(NAME).values() for key, _ in rows}

    def draw(rng: random.Random, index: int) -> tuple[str, world.Problem]:
        problem = generate(rng)
        return problem.question, problem

    rows = _draw_unique(draw, random.Random(f"{NAME}:fitness-extra:{seed}"), extra, seen)
    questions = [sample.question for sample in load_zoo(NAME, split="fitness").samples]
    replies = list(reference_replies(NAME, "fitness"))
    return (tuple(questions + [problem.question for _, problem in rows]),
            tuple(replies + [world.math_reply(problem, language) for _, problem in rows]))


def scores(model: Any, tokenizer: Any, extra: int) -> tuple[float, float]:
    return score_replies(model, tokenizer, *pool(extra))


def mgsm_ja_exact_logprob_wide(model: Any, tokenizer: Any, extra: int = 300) -> float:
    exact, logprob = scores(model, tokenizer, extra)
    return exact + logprob
