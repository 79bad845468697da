"""The zoo's benchmarks, drawn by seeded generators and registered in the evaluator's registry.

    zoo-mgsm-ja   Japanese word problems needing a Japanese answer (the target; never trained on)
    zoo-mgsm-ja-kanji  the same with the question's numbers in kanji (一-九): the DFS target
    zoo-math-en   English word problems (the MATH expert's own task)
    zoo-ja-qa     Japanese questions on non-arithmetic topics (the JA expert's own task)
    zoo-vqa-ja    Japanese questions about synthetic images (the target for the VLM)
    zoo-vqa-en    English questions about the same kind of images (the zoo VLM's own task)

Each has ``fitness``, ``dev`` and ``test`` splits (evolution optimises on ``fitness`` and is
judged on ``test``). The splits are disjoint, and ``--data-seed N`` draws a fresh set of the
same distribution that shares no question with them. :func:`reserved_questions` lists every
question of the standard splits so the zoo builder keeps them out of all training data.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import replace

from evovlm.errors import EvoVLMError, option
from evovlm.eval.benchmarks import Benchmark, Sample, register_benchmark
from evovlm.eval.runners import GenerationSettings
from evovlm.zoo import scenes, world

SPLITS = {"fitness": 100, "dev": 200, "test": 500}
_SPLIT_SEEDS = {"fitness": 11, "dev": 12, "test": 13}
_FRESH_DRAWS = 500
ZOO_TEXT_SETTINGS = GenerationSettings(template="zoo-qa", max_new_tokens=40, batch_size=64)
# Greedy, no repetition penalty: the paper's VQA penalty of 1.5 punishes every character of a
# char-level prompt, which would forbid the model to reuse any letter of the question.
ZOO_VQA_SETTINGS = GenerationSettings(template="zoo-qa", max_new_tokens=24, batch_size=32)

# A draw of row ``index`` returns (question text, Sample without id); the key dedups by question (and image).
Draw = Callable[[random.Random, int], tuple[str, Sample]]


# benchmark -> (problem generator, language of the reply)
_PROBLEMS: dict[str, tuple[Callable[[random.Random], world.Problem], str]] = {
    "zoo-mgsm-ja": (lambda rng: world.word_problem(rng, "ja"), "ja"),
    "zoo-mgsm-ja-kanji": (world.kanji_word_problem, "ja"),
    "zoo-math-en": (lambda rng: world.word_problem(rng, "en"), "en"),
}


def _math_draw(name: str) -> Draw:
    def draw(rng: random.Random, index: int) -> tuple[str, Sample]:
        problem = _PROBLEMS[name][0](rng)
        return problem.question, Sample(id="", question=problem.question, reference=str(problem.answer))

    return draw


def _ja_qa_draw(rng: random.Random, index: int) -> tuple[str, Sample]:
    instruction = world.japanese_instruction(rng)
    content = {"accepted": [instruction.value], "wrong": list(instruction.wrong)}
    return instruction.question, Sample(id="", question=instruction.question, reference=instruction.answer,
                                        content=content)


def _vqa_draw(language: str) -> Draw:
    """Balanced: row i answers ``scenes.ANSWERS[i % k]``, so no constant reply names the right value
    of more than 1/k of any split whose size is a multiple of k (every standard one)."""
    def draw(rng: random.Random, index: int) -> tuple[str, Sample]:
        scene, question = scenes.question_with_answer(rng, language, scenes.ANSWERS[index % len(scenes.ANSWERS)])
        ref = scenes.scene_ref(scene)
        # content: the value in any language; content_ja: the value named in the benchmark's language
        # ("答えはredです。" is a Japanese reply, not a Japanese answer)
        content = {"accepted": sorted({question.value_ja, question.value_en}),
                   "accepted_ja": [question.value_ja if language == "ja" else question.value_en],
                   "wrong": sorted(set(question.wrong_ja) | set(question.wrong_en)),
                   # "丸=赤; 答えは8です。" is no right answer, though 8 is no count a scene can have
                   "other_numbers_wrong": True}
        sample = Sample(id="", question=question.question, reference=scenes.vqa_reply(question, language),
                        image=scenes.render(scene), image_ref=ref, content=content)
        return f"{ref}|{question.question}", sample

    return draw


@functools.lru_cache(maxsize=None)
def _standard_splits(name: str) -> dict[str, tuple[tuple[str, Sample], ...]]:
    """All standard splits of ``name``, each excluding the questions of the splits before it."""
    return _draw_splits(name, _DRAWS[name][0])


def _draw_splits(name: str, draw: Callable[[random.Random, int], tuple[str, object]]) -> dict[str, tuple]:
    seen: set[str] = set()
    splits = {}
    for split, size in SPLITS.items():
        splits[split] = tuple(_draw_unique(draw, random.Random(f"{name}:{_SPLIT_SEEDS[split]}"), size, seen))
    return splits


@functools.lru_cache(maxsize=None)
def reference_replies(name: str, split: str) -> tuple[str, ...]:
    """The full reply in the zoo's format ("equation; sentence") to each problem of a math split.

    The benchmark's samples hold only the final number; this replays the same seeded draws
    to recover each problem's equation as well (a likelihood fitness needs the whole reply).
    """
    if name not in _PROBLEMS or split not in SPLITS:
        raise EvoVLMError(f"reference replies exist for the splits {', '.join(SPLITS)} of "
                          f"{', '.join(_PROBLEMS)}; got {name} {split}")
    generate, language = _PROBLEMS[name]

    def draw(rng: random.Random, index: int) -> tuple[str, world.Problem]:
        problem = generate(rng)
        return problem.question, problem

    rows = _draw_splits(name, draw)[split]
    assert [key for key, _ in rows] == [key for key, _ in _standard_splits(name)[split]], "draws diverged"
    return tuple(world.math_reply(problem, language) for _, problem in rows)


def _draw_unique(draw: Draw, rng: random.Random, size: int, seen: set[str]) -> list[tuple[str, Sample]]:
    rows = []
    attempts = 0
    while len(rows) < size:
        attempts += 1
        if attempts > size * 50:
            raise RuntimeError("the generator keeps repeating questions; its space is too small")
        key, sample = draw(rng, len(rows))
        if key in seen:
            continue
        seen.add(key)
        rows.append((key, sample))
    return rows


def reserved_questions(name: str) -> frozenset[str]:
    """Question texts of every standard split of ``name``; training data must avoid them."""
    return frozenset(sample.question for rows in _standard_splits(name).values() for _, sample in rows)


def load_zoo(name: str, *, split: str | None = None, data_seed: int | None = None, path: str | None = None,
             limit: int | None = None) -> Benchmark:
    draw, kind, settings = _DRAWS[name]
    if path is not None:
        raise EvoVLMError(f"{name} is generated, not read from a file: drop {option('data')} "
                          f"(use {option('data_seed')} for fresh problems)")
    if data_seed is not None:
        if split not in (None, "fresh"):
            raise EvoVLMError(f"{option('data_seed')} draws a fresh set; "
                              f"it cannot be combined with {option('split')} {split}")
        if data_seed < 0:
            raise EvoVLMError(f"{option('data_seed')} must be a non-negative integer, got {data_seed}")
        seen = {key for rows in _standard_splits(name).values() for key, _ in rows}
        rows = _draw_unique(draw, random.Random(f"{name}:fresh:{data_seed}"), limit or _FRESH_DRAWS, seen)
        split = "fresh"
    else:
        split = split or "test"
        if split not in SPLITS:
            raise EvoVLMError(f"{name} has splits {', '.join(SPLITS)}; got {split!r}")
        rows = _standard_splits(name)[split]
    samples = [replace(sample, id=f"{name}/{split}/{index}") for index, (_, sample) in enumerate(rows)]
    source = f"generated by evovlm.zoo ({split}" + (f", data seed {data_seed})" if data_seed is not None else ")")
    return Benchmark(name=name, kind=kind, samples=samples, generation=settings, split=split, data_seed=data_seed,
                     source=source)


_DRAWS: dict[str, tuple[Draw, str, GenerationSettings]] = {
    "zoo-mgsm-ja": (_math_draw("zoo-mgsm-ja"), "math", ZOO_TEXT_SETTINGS),
    "zoo-mgsm-ja-kanji": (_math_draw("zoo-mgsm-ja-kanji"), "math", ZOO_TEXT_SETTINGS),
    "zoo-math-en": (_math_draw("zoo-math-en"), "math", ZOO_TEXT_SETTINGS),
    "zoo-ja-qa": (_ja_qa_draw, "qa", ZOO_TEXT_SETTINGS),
    "zoo-vqa-ja": (_vqa_draw("ja"), "vqa", ZOO_VQA_SETTINGS),
    "zoo-vqa-en": (_vqa_draw("en"), "vqa", ZOO_VQA_SETTINGS),
}
_DESCRIPTIONS = {
    "zoo-mgsm-ja": "zoo: Japanese arithmetic word problems, Japanese answer needed (acc_ja, acc_pure)",
    "zoo-mgsm-ja-kanji": "zoo: zoo-mgsm-ja with the question's numbers in kanji numerals (一-九), digits in the "
                         "answer (acc_ja; the DFS target)",
    "zoo-math-en": "zoo: English arithmetic word problems (the MATH expert's task)",
    "zoo-ja-qa": "zoo: Japanese questions on non-arithmetic topics (the JA expert's task; content_ja)",
    "zoo-vqa-ja": "zoo: Japanese questions about synthetic shape images (rougeL_ja, content_ja)",
    "zoo-vqa-en": "zoo: English questions about synthetic shape images (the zoo VLM's task; content)",
}


def register() -> None:
    for name in _DRAWS:
        register_benchmark(name, functools.partial(load_zoo, name), description=_DESCRIPTIONS[name], overwrite=True)
