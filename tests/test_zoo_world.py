"""The zoo's generators and benchmarks: determinism, disjoint splits, fresh draws, content specs."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from evovlm.errors import EvoVLMError
from evovlm.eval.benchmarks import list_benchmarks, load_benchmark
from evovlm.eval.metrics import mgsm_sample
from evovlm.zoo import scenes, world
from evovlm.zoo.benchmarks import SPLITS, reserved_questions

ZOO_BENCHES = ["zoo-mgsm-ja", "zoo-mgsm-ja-kanji", "zoo-math-en", "zoo-ja-qa", "zoo-vqa-ja", "zoo-vqa-en"]


def test_zoo_benchmarks_are_registered():
    assert set(ZOO_BENCHES) <= set(list_benchmarks())


@pytest.mark.parametrize("language", ["en", "ja"])
def test_word_problems_are_consistent(language):
    rng = random.Random(0)
    for _ in range(300):
        problem = world.word_problem(rng, language)
        left, result = problem.equation.split("=")
        assert eval(left) == problem.answer == int(result)  # noqa: S307 (digits and one operator)
        assert problem.answer >= 1
        # the reply format the MATH expert learns, and the Japanese one the target asks for
        assert mgsm_sample(problem.answer, world.math_reply(problem, "en"))["correct"]
        assert not mgsm_sample(problem.answer, world.math_reply(problem, "en"))["correct_ja"]
        assert mgsm_sample(problem.answer, world.math_reply(problem, "ja"))["correct_pure"]


def test_kanji_problems_are_word_problems_with_their_numerals_in_kanji():
    assert world.kanji_numerals("箱が12個、1つの箱に9枚。") == "箱が一二個、一つの箱に九枚。"
    assert world.kanji_numerals("0と10") == "0と一0"  # no 〇 in the vocabulary: problems with a 0 are skipped
    rng, again = random.Random(5), random.Random(5)
    for _ in range(300):
        problem = world.kanji_word_problem(rng)
        assert not set(problem.question) & set("0123456789") and problem.language == "ja"
        assert set(problem.question) & set("一二三四五六七八九")
        # the same draw as the digit problem it was written from: same answer and equation
        while True:
            digits = world.word_problem(again, "ja")
            if "0" not in digits.question:
                break
        assert world.kanji_numerals(digits.question) == problem.question
        assert (problem.answer, problem.equation) == (digits.answer, digits.equation)
    # the numerals are in the tokenizer (its base character set), one token each, though the base's
    # pretraining never shows 一, 二, 五-九: no source has learnt to read them
    from evovlm.zoo.build import zoo_tokenizer

    tokenizer = zoo_tokenizer()
    ids = tokenizer("一二三四五六七八九", add_special_tokens=False)["input_ids"]
    assert len(ids) == 9 and tokenizer.unk_token_id not in ids
    assert set("一二五六七八九").isdisjoint(world.all_characters())


def test_generators_are_deterministic_for_a_seed():
    first = [world.pretraining_document(random.Random(7)) for _ in range(2)]
    assert first[0] == first[1]
    assert world.japanese_instruction(random.Random(3)) == world.japanese_instruction(random.Random(3))


def test_vocabulary_covers_every_generated_text():
    characters = set(world.all_characters()) | set(scenes.scene_characters())
    rng = random.Random(99)
    texts = []
    for _ in range(200):
        texts.append(world.pretraining_document(rng))
        instruction = world.japanese_instruction(rng)
        texts += [instruction.question, instruction.answer]
        scene = scenes.random_scene(rng)
        for language in ("en", "ja"):
            question = scenes.visual_question(rng, scene, language)
            texts += [question.question, scenes.vqa_reply(question, language)]
    assert set("".join(texts)) <= characters


def test_splits_are_disjoint_and_stable():
    for name in ZOO_BENCHES:
        loaded = {split: load_benchmark(name, split=split) for split in SPLITS}
        for split, bench in loaded.items():
            assert len(bench) == SPLITS[split] and bench.split == split
            assert len({s.id for s in bench.samples}) == len(bench)
        if name.startswith("zoo-vqa"):
            continue  # the same question text recurs with different images
        texts = {split: {s.question for s in bench.samples} for split, bench in loaded.items()}
        assert not texts["fitness"] & texts["test"] and not texts["dev"] & texts["test"]
        assert [s.question for s in load_benchmark(name, split="test").samples] == \
            [s.question for s in loaded["test"].samples]


def test_fresh_draws_share_nothing_with_the_standard_splits():
    reserved = reserved_questions("zoo-mgsm-ja")
    fresh = load_benchmark("zoo-mgsm-ja", data_seed=4, limit=200)
    assert fresh.split == "fresh" and fresh.data_seed == 4 and len(fresh) == 200
    assert not {s.question for s in fresh.samples} & reserved
    again = load_benchmark("zoo-mgsm-ja", data_seed=4, limit=200)
    assert [s.question for s in again.samples] == [s.question for s in fresh.samples]
    other = load_benchmark("zoo-mgsm-ja", data_seed=5, limit=200)
    assert [s.question for s in other.samples] != [s.question for s in fresh.samples]


def test_zoo_benchmark_errors_are_clear():
    with pytest.raises(EvoVLMError, match="splits fitness, dev, test"):
        load_benchmark("zoo-mgsm-ja", split="train")
    with pytest.raises(EvoVLMError, match="cannot be combined"):
        load_benchmark("zoo-mgsm-ja", split="test", data_seed=1)
    with pytest.raises(EvoVLMError, match="generated"):
        load_benchmark("zoo-mgsm-ja", path="x.tsv")


def test_vqa_samples_carry_images_references_and_content():
    bench = load_benchmark("zoo-vqa-ja", split="dev", limit=50)
    assert bench.kind == "vqa"
    for sample in bench.samples:
        scene = scenes.scene_from_ref(sample.image_ref)
        assert scenes.render(scene).tobytes() == sample.image.tobytes()
        accepted, wrong = sample.content["accepted"], sample.content["wrong"]
        assert not set(accepted) & set(wrong)
        work, sentence = sample.reference.split(" ")  # "丸=赤 答えは赤です。"
        assert work.split("=")[0] in sample.question and sentence.startswith("答えは")
        assert any(value in sentence for value in accepted)


@pytest.mark.parametrize("name", ["zoo-vqa-ja", "zoo-vqa-en"])
def test_vqa_answers_are_balanced_so_no_constant_reply_beats_one_in_k(name):
    import collections

    from evovlm.eval.metrics import score_rouge_ja

    bench = load_benchmark(name, split="dev")
    language = name[-2:]
    answers = collections.Counter(sample.content["accepted_ja"][0] for sample in bench.samples)
    k = len(scenes.ANSWERS)  # 5 colours and the counts 0-4
    assert k == 10 and len(answers) == k and set(answers.values()) == {len(bench.samples) // k}
    references = [sample.reference for sample in bench.samples]
    contents = [sample.content for sample in bench.samples]
    values = [c[1] if language == "ja" else c[0] for c in scenes.SCENE_COLOURS] + list(scenes.COUNTS)
    for value in values:  # each names one answer: right on exactly 1/k of the questions
        reply = world.answer_sentence(value, language)
        summary, _ = score_rouge_ja(references, [reply] * len(references), contents=contents, n_resamples=1)
        assert summary["content"] == pytest.approx(100 / k)
    # a reply hedging across kinds (a colour and a count) is never right
    hedged = ["丸=1; 答えは赤です。"] * len(references)
    summary, _ = score_rouge_ja(references, hedged, contents=contents, n_resamples=1)
    assert summary["content"] == 0.0
    # nor is a right colour whose sentence states a number no scene has (zoo:evovlm did this, run 43)
    for reply in ("丸=赤; 答えは8です。", "circle=red; The answer is 8."):
        summary, _ = score_rouge_ja(references, [reply] * len(references), contents=contents, n_resamples=1)
        assert summary["content"] == 0.0


def test_colour_questions_ask_about_a_unique_shape_and_counts_are_right():
    rng = random.Random(5)
    for _ in range(300):
        scene = scenes.random_scene(rng)
        question = scenes.visual_question(rng, scene, "en")
        if question.kind == "count":
            plural = question.question.removeprefix("How many ").removesuffix(" are there?")
            kind = [s[1] for s in world.SHAPES].index(plural)
            assert int(question.value_en) == sum(shape.kind == kind for shape in scene)
        else:
            name = question.question.removeprefix("What color is the ").removesuffix("?")
            matches = [shape for shape in scene if world.SHAPES[shape.kind][0] == name]
            assert len(matches) == 1
            assert scenes.SCENE_COLOURS[matches[0].colour][0] == question.value_en


@pytest.mark.parametrize("name", ["zoo-mgsm-ja", "zoo-mgsm-ja-kanji", "zoo-math-en"])
def test_reference_replies_answer_their_split_problems(name):
    from evovlm.zoo.benchmarks import reference_replies

    for split in SPLITS:
        samples = load_benchmark(name, split=split).samples
        replies = reference_replies(name, split)
        assert len(replies) == len(samples)
        for sample, reply in zip(samples, replies):
            work, sentence = reply.split(world.SEPARATOR)
            left, result = work.split("=")
            assert eval(left) == int(result) == int(sample.reference)  # noqa: S307
            assert sentence == world.answer_sentence(sample.reference, "en" if name == "zoo-math-en" else "ja")
    with pytest.raises(EvoVLMError, match="reference replies"):
        reference_replies("zoo-ja-qa", "fitness")


class _UniformLM(torch.nn.Module):
    """Logits that are all equal: every next token has probability 1 / vocabulary."""

    def __init__(self, vocabulary: int) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocabulary))


class _CopyLM(_UniformLM):
    """Puts all probability on the token that actually comes next, up to ``upto``, uniform after it.

    ``upto=None``: everywhere (log-prob 0). ``upto=":"``: only while predicting the prompt, which
    ends in "A:" (the reply has no colon), so the reply's tokens all get 1 / vocabulary.
    """

    def __init__(self, vocabulary: int, colon_id: int | None = None) -> None:
        super().__init__(vocabulary)
        self.colon_id = colon_id

    def forward(self, input_ids, attention_mask):
        logits = torch.full((*input_ids.shape, self.vocabulary), -1e4)
        logits[:, :-1].scatter_(-1, input_ids[:, 1:, None], 0.0)  # next token certain
        if self.colon_id is not None:
            for row, ids in enumerate(input_ids.tolist()):
                prompt_end = max(i for i, token in enumerate(ids) if token == self.colon_id)
                logits[row, prompt_end:] = 0.0
        return SimpleNamespace(logits=logits)


def test_reply_log_probability_fitness_against_hand_computed_values():
    from evovlm.zoo.build import zoo_tokenizer
    from evovlm.zoo.fitness import mgsm_ja_reply_logprob

    tokenizer = zoo_tokenizer()
    vocabulary = len(tokenizer)
    assert mgsm_ja_reply_logprob(_UniformLM(vocabulary), tokenizer) == pytest.approx(-math.log(vocabulary), rel=1e-6)
    assert mgsm_ja_reply_logprob(_CopyLM(vocabulary), tokenizer) == pytest.approx(0.0, abs=1e-6)
    # only the reply's tokens count: a model perfect on the prompt alone scores like the uniform one
    colon = tokenizer.convert_tokens_to_ids(":")
    expected = pytest.approx(-math.log(vocabulary), rel=1e-6)
    assert mgsm_ja_reply_logprob(_CopyLM(vocabulary, colon), tokenizer) == expected
    # the first 3 problems only (the zoo's quicker DFS fitness): 3 rows reach the model
    rows = []
    counting = _UniformLM(vocabulary)
    counting.register_forward_hook(lambda module, args, kwargs, output: rows.append(len(kwargs["input_ids"])),
                                   with_kwargs=True)
    assert mgsm_ja_reply_logprob(counting, tokenizer, problems=3) == expected and rows == [3]
    with pytest.raises(EvoVLMError, match="problems: a whole number of at least 1"):
        mgsm_ja_reply_logprob(_UniformLM(vocabulary), tokenizer, problems=0)


class _KanjiReaderLM(_CopyLM):
    """Certain of every next token in a prompt with a kanji numeral; uniform on a prompt without one."""

    def __init__(self, vocabulary: int, kanji_ids: set[int]) -> None:
        super().__init__(vocabulary)
        self.kanji_ids = kanji_ids

    def forward(self, input_ids, attention_mask):
        logits = super().forward(input_ids, attention_mask).logits
        for row, ids in enumerate(input_ids.tolist()):
            if not self.kanji_ids & set(ids):
                logits[row] = 0.0
        return SimpleNamespace(logits=logits)


def test_the_both_fitness_is_the_mean_of_the_kanji_and_the_digit_fitness():
    from evovlm.zoo import world
    from evovlm.zoo.build import zoo_tokenizer
    from evovlm.zoo.fitness import mgsm_ja_both_reply_logprob, mgsm_ja_kanji_reply_logprob, mgsm_ja_reply_logprob

    tokenizer = zoo_tokenizer()
    vocabulary = len(tokenizer)
    reader = _KanjiReaderLM(vocabulary, set(tokenizer.convert_tokens_to_ids(list(world.KANJI_DIGITS.values()))))
    assert mgsm_ja_kanji_reply_logprob(reader, tokenizer, problems=5) == pytest.approx(0.0, abs=1e-6)
    assert mgsm_ja_reply_logprob(reader, tokenizer, problems=5) == pytest.approx(-math.log(vocabulary), rel=1e-6)
    both = mgsm_ja_both_reply_logprob(reader, tokenizer, problems=5)
    assert both == pytest.approx(-math.log(vocabulary) / 2, rel=1e-6)
    weighted = mgsm_ja_both_reply_logprob(reader, tokenizer, problems=5, digits_weight=0.75)
    assert weighted == pytest.approx(-0.75 * math.log(vocabulary), rel=1e-6)
    with pytest.raises(EvoVLMError, match="digits_weight: a number from 0 to 1"):
        mgsm_ja_both_reply_logprob(reader, tokenizer, problems=5, digits_weight=1.5)


class _OneSlipLM(_CopyLM):
    """Certain of every next token, except that the last reply token of the first row is uniform with the
    argmax elsewhere: that reply is no longer reproduced, and loses log(vocabulary) on one of its tokens."""

    def forward(self, input_ids, attention_mask):
        logits = super().forward(input_ids, attention_mask).logits
        last = int(attention_mask[0].nonzero().max()) - 1  # the position that predicts row 0's last token
        wrong = (int(input_ids[0, last + 1]) + 1) % self.vocabulary
        logits[0, last] = 0.0
        logits[0, last, wrong] = 1e-3  # the argmax, by a hair: the right token keeps ~1 / vocabulary
        return SimpleNamespace(logits=logits)


def test_the_exact_reply_fitness_against_hand_computed_values():
    from evovlm.eval.prompts import build_prompt
    from evovlm.zoo.benchmarks import load_zoo, reference_replies
    from evovlm.zoo.build import zoo_tokenizer
    from evovlm.zoo.fitness import mgsm_ja_both_exact_logprob, mgsm_ja_exact_logprob, reply_scores
    from evovlm.zoo.train import qa_batch

    tokenizer = zoo_tokenizer()
    vocabulary = len(tokenizer)
    log_v = math.log(vocabulary)
    # every reply reproduced, log-probability 0: 0.5 * (1 + 0) twice
    assert mgsm_ja_both_exact_logprob(_CopyLM(vocabulary), tokenizer, problems=4) == pytest.approx(1.0, abs=1e-6)
    # uniform logits: the argmax is token 0, never a whole reply
    assert reply_scores(_UniformLM(vocabulary), tokenizer, "zoo-mgsm-ja", "fitness", 4) == (0.0, pytest.approx(-log_v))
    # reads kanji prompts only: kanji 1 exact, log-prob 0; digits 0 exact, -log V; exact_weight scales the shares
    reader = _KanjiReaderLM(vocabulary, set(tokenizer.convert_tokens_to_ids(list(world.KANJI_DIGITS.values()))))
    assert mgsm_ja_both_exact_logprob(reader, tokenizer, problems=4) == pytest.approx(0.5 - log_v / 2, rel=1e-6)
    assert mgsm_ja_both_exact_logprob(reader, tokenizer, problems=4, exact_weight=2) == pytest.approx(1 - log_v / 2)
    # the digit problems alone: none exact, -log V; and 1 + 0 for the copier
    assert mgsm_ja_exact_logprob(reader, tokenizer, problems=4, exact_weight=2) == pytest.approx(-log_v, rel=1e-6)
    assert mgsm_ja_exact_logprob(_CopyLM(vocabulary), tokenizer, problems=4) == pytest.approx(1.0, abs=1e-6)
    # one token slips in the first of 2 problems (batched with its padding): exact 1/2, and that reply's mean
    # log-probability loses about log(vocabulary) over its reply tokens
    samples = load_zoo("zoo-mgsm-ja", split="fitness").samples[:2]
    first = qa_batch(tokenizer, [build_prompt("zoo-qa", samples[0].question)], [""],
                     works=[" " + reference_replies("zoo-mgsm-ja", "fitness")[0]])
    reply_tokens = int((first["labels"][0, 1:] != -100).sum())
    exact, logprob = reply_scores(_OneSlipLM(vocabulary), tokenizer, "zoo-mgsm-ja", "fitness", 2)
    slipped = -math.log(math.exp(1e-3) + vocabulary - 1)  # the right token's log-probability (its logit is 0)
    assert exact == 0.5 and logprob == pytest.approx(slipped / reply_tokens / 2, rel=1e-6)
    for fitness in (mgsm_ja_both_exact_logprob, mgsm_ja_exact_logprob):
        with pytest.raises(EvoVLMError, match="exact_weight: a number of at least 0"):
            fitness(reader, tokenizer, problems=4, exact_weight=-1)
