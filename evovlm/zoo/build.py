"""Build the zoo: tokenizer, base, JA expert, MATH expert, kanji reader and VLM, deterministic for a seed
on one machine (another CPU rounds differently: run 62 of docs/zoo-experiments.md).

    evovlm zoo build [--seed N] [--quick] [--out DIR]

The base is pretrained on the mixed corpus of :mod:`evovlm.zoo.world`. Every reply has the
shape ``WORK SENTENCE`` (``3+5=8 The answer is 8.``). The experts are trained so that the skill
and the language live in different blocks, as in real LLMs (Bandarkar et al. 2024, "Layer
Swapping for Zero-Shot Cross-Lingual Transfer"):

* JA expert: only the output blocks (the last ``output_blocks`` blocks, final norm and head)
  learn, on Japanese instructions. Japanese is a matter of how replies are written.
* MATH expert, phase 1: the embeddings and the inner blocks learn the work (reading the problem
  and writing ``3+5=8; ``), for English and Japanese problems alike, with an early-exit loss so
  that the inner blocks finish the equation on their own. No sentence is taught in this phase.
  Phase 2: the output blocks learn to close every reply, to English and to Japanese problems,
  with the English sentence.
* VLM: the vision tower, projector and inner blocks learn to see (phase 1: the work
  ``circle=red; `` of English questions and ``丸=赤; `` of Japanese ones, with the early exit, which
  also learns the value the Japanese sentence names, ``答えは赤``); the output blocks learn to close
  replies with the English sentence (phase 2).

* Reader (:mod:`evovlm.zoo.reader`): blocks 1-3 of the base learn to turn the stream of a text with kanji
  numerals into the stream of the same text with digits, for a layer path to run in front of another
  model's blocks (issue 18's DFS world).

So no source answers a Japanese word problem in Japanese, while the layer-wise merge "MATH
inside, JA outside" exists; the experts' task vectors overlap in the output blocks, so uniform
merges mix two ways of writing. ``--quick`` builds a small zoo in seconds, for tests.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from evovlm.errors import EvoVLMError
from evovlm.io.atomic import ensure_writable_folder, umask_permissions
from evovlm.zoo import MODELS, scenes, world
from evovlm.zoo.reader import reading_blocks, train_reader
from evovlm.zoo.train import packed_batches, qa_batches, train_loop

IMAGE_TOKEN = "<image>"
VLM_JA_CONTEXTS = ("sentence", "hidden", "value", "none", "answer")  # ZooSettings.vlm_ja_context
VLM_QUESTION_MIXES = ("scene", "balanced")  # ZooSettings.vlm_questions
SETTING_CHOICES = {  # ZooSettings fields that take one of a few words
    "vlm_questions": VLM_QUESTION_MIXES, "vlm_ja_work": ("count", "all"), "vlm_ja_context": VLM_JA_CONTEXTS}
HIDDEN_HELD = ("hidden", "answer")  # the contexts that hold the sentence's residual stream (and allow vlm_work_anchor)


@dataclass(frozen=True)
class ZooSettings:
    hidden: int = 128
    layers: int = 6
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 64
    vision_layers: int = 2
    batch_size: int = 32
    seq_len: int = 128
    pretrain_steps: int = 1500
    pretrain_lr: float = 3e-3
    output_blocks: int = 2  # the last blocks (with final norm and head) where a reply's language lives
    embed_scale: float = 0.3  # learning-rate multiplier of the embeddings in the inner phase
    exit_weight: float = 0.5
    ja_steps: int = 800
    ja_lr: float = 3e-4
    # Share of the JA expert's examples that read a colour back (world.colour_reading). Without them
    # it copies numbers into its sentence but not colour words: 丸=赤; 答えは7です。 (run 46).
    ja_colour_reading: float = 0.0
    # The least number the JA expert reads back (world.japanese_instruction kind 6; the benchmark zoo-ja-qa
    # keeps 2). From 2 (before run 58) it never wrote 答えは1です。: after a 1 it wrote 0
    # (丸=1; 答えは10です。, run 57).
    ja_smallest_number: int = 0
    math_steps: int = 1200  # phase 1 (inner blocks)
    math_output_steps: int = 600  # phase 2 (output blocks)
    math_ja_share: float = 0.3  # Japanese problems: work only in phase 1, English replies in phase 2
    vlm_steps: int = 3000  # 1,200 with Japanese colour work cost the English task 17 points (run 16)
    vlm_output_steps: int = 400
    vlm_ja_share: float = 0.3  # Japanese questions: their work in phase 1, English replies in phase 2
    # "balanced": each question's answer is drawn uniformly from scenes.ANSWERS, as the benchmark draws them;
    # "scene" (before run 58): questions as random scenes fall, where a count of 4 is 0.3% of the questions
    # and a count of 3 is 2.1% (10% each in the benchmark), and the seed-1 VLM read 4 as 3 (run 57).
    vlm_questions: str = "balanced"
    vlm_ja_work: str = "all"  # Japanese colour work (丸=赤) too; "count": digits only (runs 15-16, 37)
    # After the work of a Japanese question, phase 1 holds the Japanese sentence to the untrained VLM:
    # its predictions ("sentence", runs 37-44: the base's digit after 答えは, learnt by the inner blocks),
    # its residual stream after the inner blocks ("hidden", run 47), that stream from the value's last
    # token on ("value", run 48: the separator too, where JA's blocks read the value to copy), or nothing
    # but the work's end ("none", run 45: the sentence's representation drifts, JA's blocks write garbage);
    # "answer": as "hidden", but the sentence's answer value is taught through the early exit, so the inner
    # blocks write it themselves and JA's blocks need not copy it from the work (run 57).
    vlm_ja_context: str = "answer"  # one of VLM_JA_CONTEXTS; "sentence" before run 57
    # With "hidden": weight of a second, soft hold on the residual stream at a Japanese question's work,
    # where the inner blocks write the value JA's output blocks must copy (2.4-2.9 from the base's there
    # after run 47, against 0.001 on the sentence). 0 leaves the work free, as in runs 47-49.
    vlm_work_anchor: float = 0.0
    # The kanji reader (evovlm.zoo.reader): its blocks 1-3 learn to read kanji numerals for the others' blocks
    reader_steps: int = 2400
    reader_lr: float = 1e-3
    # weight of the error after each reading block but the last: with 1, each block reads part of the numerals and
    # the PS+DFS search climbs the path one block at a time (found on both build seeds, run 61; 0 in run 60)
    reader_deep: float = 1.0
    # share of the reader's documents that are word problems with digits and their replies, held unchanged: the
    # reading blocks then leave a digit problem's stream alone, so a path through them keeps PS's digits (run 62,
    # on dev; 0 built the reader before run 64)
    reader_problems: float = 0.25
    finetune_lr: float = 1e-3
    threads: int = 0  # torch threads; 0 keeps torch's default

    @classmethod
    def quick(cls) -> ZooSettings:
        return cls(hidden=32, layers=4, heads=4, kv_heads=2, vision_hidden=32, vision_layers=1, batch_size=8,
                   seq_len=64, pretrain_steps=30, output_blocks=1, ja_steps=10, math_steps=10, math_output_steps=5,
                   vlm_steps=10, vlm_output_steps=5, reader_steps=10)

    def with_changes(self, changes: Collection[str]) -> ZooSettings:
        """A copy with ``NAME=VALUE`` changes (``ja_steps=1600``), each value of its field's type."""
        kinds = {f.name: f.type for f in fields(self)}
        values = {}
        for change in changes:
            name, _, text = change.partition("=")
            if name not in kinds or not text:
                raise EvoVLMError(f"--set {change!r}: use NAME=VALUE with one of {', '.join(kinds)}")
            try:
                values[name] = {"int": int, "float": float, "str": str}[kinds[name]](text)
            except ValueError:
                raise EvoVLMError(f"--set {change!r}: {name} takes a value of type {kinds[name]}") from None
        return replace(self, **values)

    def check(self) -> None:
        """Refuse settings the build cannot use, before any training: a clear error, not a crash mid-build."""
        def refuse(name: str, rule: str) -> None:
            raise EvoVLMError(f"{name} {rule}, got {getattr(self, name)!r}")

        for name, allowed in SETTING_CHOICES.items():
            if getattr(self, name) not in allowed:
                refuse(name, f"must be one of {', '.join(allowed)}")
        for name in ("hidden", "layers", "heads", "kv_heads", "vision_hidden", "vision_layers", "batch_size", "seq_len",
                     "output_blocks", "pretrain_steps", "ja_steps", "math_steps", "math_output_steps", "vlm_steps",
                     "vlm_output_steps", "reader_steps"):
            if getattr(self, name) < 1:
                refuse(name, "must be at least 1")
        for name in ("pretrain_lr", "ja_lr", "reader_lr", "finetune_lr"):
            if not getattr(self, name) > 0:  # NaN too
                refuse(name, "must be above 0")
        for name in ("ja_colour_reading", "math_ja_share", "vlm_ja_share", "reader_problems"):
            if not 0 <= getattr(self, name) <= 1:
                refuse(name, "is a share from 0 to 1")
        for name in ("embed_scale", "exit_weight", "reader_deep", "threads"):
            if not getattr(self, name) >= 0:
                refuse(name, "must be at least 0")
        if self.output_blocks >= self.layers:
            refuse("output_blocks", f"must be less than layers ({self.layers}): the inner blocks come before them")
        if self.hidden % (2 * self.heads):
            refuse("hidden", f"must be a multiple of 2 x heads ({2 * self.heads}): each head's rotary size is even")
        if self.heads % self.kv_heads:
            refuse("kv_heads", f"must divide heads ({self.heads})")
        if self.vision_hidden % 4:
            refuse("vision_hidden", "must be a multiple of the vision tower's 4 heads")
        if not self.vlm_work_anchor >= 0 or (self.vlm_work_anchor > 0 and self.vlm_ja_context not in HIDDEN_HELD):
            refuse("vlm_work_anchor", f"must be >= 0, and > 0 only with vlm_ja_context={' or '.join(HIDDEN_HELD)} "
                                      f"(vlm_ja_context is {self.vlm_ja_context!r})")
        if not 0 <= self.ja_smallest_number <= 60:
            refuse("ja_smallest_number", "must be in 0..60")

    @property
    def exit_layer(self) -> int:
        """Index into ``hidden_states`` of the residual stream after the last inner block."""
        return self.layers - self.output_blocks

    def inner(self, depth: int | None) -> float:
        """Learning-rate profile of the inner phase: embeddings (scaled), inner blocks, and a
        VLM's vision tower and projector (depth None)."""
        if depth is None:
            return 1.0
        return self.embed_scale if depth == -1 else float(0 <= depth < self.exit_layer)

    def outer(self, depth: int | None) -> float:
        """Learning-rate profile of the output phase: output blocks, final norm and head."""
        return float(depth is not None and depth >= self.exit_layer)


def zoo_tokenizer():
    """The shared char-level tokenizer: ASCII, kana and every character the zoo's generators emit."""
    from evovlm.tiny import tiny_tokenizer

    return tiny_tokenizer(world.all_characters() + scenes.scene_characters())


def zoo_processor(tokenizer):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    size = scenes.IMAGE_SIZE
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                          vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
                          num_additional_image_tokens=1)


def new_language_model(tokenizer, settings: ZooSettings, seed: int):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(hidden_size=settings.hidden, intermediate_size=settings.hidden * 3,
                           num_hidden_layers=settings.layers, num_attention_heads=settings.heads,
                           num_key_value_heads=settings.kv_heads, vocab_size=len(tokenizer),
                           max_position_embeddings=256, tie_word_embeddings=False,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    return MistralForCausalLM(config)


def new_vlm(language_model, tokenizer, settings: ZooSettings, seed: int):
    """A Llava whose language tower is a copy of ``language_model``; fresh vision tower and projector."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    from evovlm.tiny import copy_language_tower

    vision = CLIPVisionConfig(hidden_size=settings.vision_hidden, intermediate_size=settings.vision_hidden * 2,
                              num_hidden_layers=settings.vision_layers, num_attention_heads=4,
                              image_size=scenes.IMAGE_SIZE, patch_size=8, projection_dim=settings.vision_hidden)
    config = LlavaConfig(text_config=language_model.config.to_dict(), vision_config=vision,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(seed)
    vlm = LlavaForConditionalGeneration(config)
    copy_language_tower(vlm, language_model)
    return vlm


# --- training data --------------------------------------------------------------


def _unreserved(draw, reserved: frozenset[str]):
    """Draws until the question is not a benchmark question (those never appear in training)."""
    def make(rng: random.Random):
        while True:
            item = draw(rng)
            if item.question not in reserved:
                return item

    return make


def _math_work_examples(reserved: frozenset[str], ja_share: float):
    """Phase 1: (question, work, no answer, context) for English and Japanese problems alike.

    The English sentence follows the work as context only: there the inner blocks are held to
    the base's predictions (``anchor``), so they learn where the work ends and nothing after it.
    """
    draw = _unreserved(lambda rng: world.word_problem(rng, "ja" if rng.random() < ja_share else "en"), reserved)

    def make(rng: random.Random) -> tuple[str, str, str, str]:
        problem = draw(rng)
        work = f" {problem.equation}{world.SEPARATOR}"
        return problem.question, work, "", world.answer_sentence(problem.answer, "en")

    return make


def _math_reply_examples(reserved: frozenset[str], ja_share: float):
    """Phase 2: English replies, to English and to Japanese problems (as WizardMath answers)."""
    draw = _unreserved(lambda rng: world.word_problem(rng, "ja" if rng.random() < ja_share else "en"), reserved)

    def make(rng: random.Random) -> tuple[str, str]:
        problem = draw(rng)
        return problem.question, " " + world.math_reply(problem, "en")

    return make


def _reserved_word_problems() -> frozenset[str]:
    """The word-problem benchmarks' questions, which no model of the zoo trains on."""
    from evovlm.zoo.benchmarks import reserved_questions

    return reserved_questions("zoo-mgsm-ja") | reserved_questions("zoo-math-en")


def _digit_problem_texts(reserved: frozenset[str]):
    """A word problem (Japanese or English) in the zoo's prompt with its reply, as a model reads it."""
    draw = _unreserved(lambda rng: world.word_problem(rng, rng.choice(("ja", "en"))), reserved)

    def make(rng: random.Random) -> str:
        problem = draw(rng)
        return world.PROMPT.replace("{input}", problem.question) + " " + world.math_reply(problem, problem.language)

    return make


def _ja_examples(reserved: frozenset[str], colour_reading: float = 0.0, smallest_number: int = 2):
    draw = _unreserved(functools.partial(world.japanese_instruction, smallest_number=smallest_number), reserved)

    def make(rng: random.Random) -> tuple[str, str]:
        # no draw at share 0: the same examples as before the colour reading existed
        instruction = (world.colour_reading(rng) if colour_reading and rng.random() < colour_reading
                       else draw(rng))
        return instruction.question, " " + instruction.answer

    return make


def _vqa_example(rng: random.Random, phase: str, ja_share: float, ja_work: str = "count",
                 ja_context: str = "sentence", questions: str = "scene"):
    """(scene, visual question, work, sentence) for one VLM training example.

    Phase "inner": English questions with their work (``circle=red; ``) and Japanese questions
    with theirs (``丸=赤; ``, ``丸=2; ``): the work is in the question's language, so the JA
    expert's output blocks find a Japanese value to copy. The sentence follows as context only
    (the question's language), never as a target, held to the untrained VLM's predictions;
    ``ja_context="none"`` drops it after Japanese work, so only the work's end is held there;
    ``"hidden"`` holds the residual stream after the inner blocks there, not the predictions;
    ``"value"`` holds it from the value's last token on, where nothing is taught (the separator);
    ``"answer"`` holds it as ``"hidden"`` does, except where the sentence names the value: the early
    exit teaches that value (``答えは赤``), so the inner blocks write it and the JA expert's output blocks
    only have to let it through, as they let the work through.
    ``ja_work="count"`` keeps only the Japanese count questions (digits carry no language):
    the design before run 37, whose oracle could not name colours in Japanese.
    ``questions="balanced"`` draws each answer uniformly (the benchmark's mix), ``"scene"`` as scenes fall.
    Phase "output": English replies to English and Japanese questions.
    """
    def draw(language: str):
        if questions == "balanced":
            return scenes.question_with_answer(rng, language, rng.choice(scenes.ANSWERS))
        scene = scenes.random_scene(rng)
        return scene, scenes.visual_question(rng, scene, language)

    if rng.random() >= ja_share:
        scene, question = draw("en")
    else:
        scene, question = draw("ja")
        while phase == "inner" and ja_work == "count" and question.kind != "count":
            scene, question = draw("ja")
    if phase == "output":
        return scene, question, "", " " + scenes.vqa_reply(question, "en")
    if question.language == "ja" and ja_context == "none":
        sentence = ""
    elif question.language == "ja" and ja_work == "all":
        sentence = world.answer_sentence(question.value_ja, "ja")
    else:
        sentence = world.answer_sentence(question.value_en, "en")
    return scene, question, " " + scenes.vqa_work(question, question.language) + world.SEPARATOR, sentence


def _vqa_batches(processor, rng: random.Random, *, batch_size: int, phase: str, ja_share: float,
                 ja_work: str = "count", ja_context: str = "sentence", work_anchor: bool = False,
                 questions: str = "scene"):
    """Llava batches of :func:`_vqa_example`; the inner phase adds ``exit_labels`` on the work.

    ``work_anchor`` (with ``ja_context="hidden"``) marks a Japanese question's work in ``soft_anchor_mask``.
    """
    from evovlm.eval.prompts import build_prompt

    tokenizer = processor.tokenizer
    separator_tokens = len(tokenizer(world.SEPARATOR, add_special_tokens=False)["input_ids"])
    answer_offset = len(tokenizer(world.answer_sentence("", "ja").removesuffix("です。"),
                                  add_special_tokens=False)["input_ids"])

    def next_batch(step: int) -> dict:
        examples = [_vqa_example(rng, phase, ja_share, ja_work, ja_context, questions) for _ in range(batch_size)]
        prompts = [build_prompt("zoo-qa", question.question, image_token=IMAGE_TOKEN) for _, question, _, _ in examples]
        images = [scenes.render(scene) for scene, _, _, _ in examples]
        tokenizer.padding_side = "right"
        texts = [prompt + work + sentence + (tokenizer.eos_token if phase == "output" else "")
                 for prompt, (_, _, work, sentence) in zip(prompts, examples)]
        inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
        labels = inputs["input_ids"].clone()
        exit_labels = torch.full_like(labels, -100)
        anchor_mask = torch.zeros_like(labels, dtype=torch.bool)
        hidden_mask = torch.zeros_like(labels, dtype=torch.bool)
        work_mask = torch.zeros_like(labels, dtype=torch.bool)
        for row, (prompt, (_, question, work, _)) in enumerate(zip(prompts, examples)):
            prompt_length = len(processor(text=[prompt], images=[images[row]])["input_ids"][0])  # image tokens too
            work_end = prompt_length + len(tokenizer(work, add_special_tokens=False)["input_ids"]) if work else 0
            labels[row, :prompt_length] = -100
            exit_labels[row, prompt_length:work_end] = labels[row, prompt_length:work_end]
            if phase == "inner":  # the sentence after the work is context: no loss, anchored instead
                labels[row, work_end:] = -100
                end = int(inputs["attention_mask"][row].sum())
                japanese = question.language == "ja"
                if ja_context in HIDDEN_HELD and japanese:  # representation, not prediction
                    anchor_mask[row, work_end - 1] = True
                    hidden_mask[row, work_end:end] = True
                    work_mask[row, prompt_length:work_end] = work_anchor
                    if ja_context == "answer":  # the value after 答えは, predicted by the positions before it
                        start = work_end + answer_offset
                        stop = start + len(tokenizer(question.value_ja, add_special_tokens=False)["input_ids"])
                        exit_labels[row, start:stop] = inputs["input_ids"][row, start:stop]
                        hidden_mask[row, start - 1:stop - 1] = False
                elif ja_context == "value" and japanese:
                    # the separator's tokens are not taught: the positions that read the value's last token
                    # and the separator keep the base's representation, which JA's output blocks copy from
                    separator = work_end - separator_tokens
                    labels[row, separator:work_end] = exit_labels[row, separator:work_end] = -100
                    anchor_mask[row, work_end - 1] = True
                    hidden_mask[row, separator - 1:end] = True
                else:
                    anchor_mask[row, work_end - 1:end] = True
        labels[inputs["attention_mask"] == 0] = -100
        batch = dict(inputs, labels=labels)
        if phase == "inner":
            batch["exit_labels"] = exit_labels
            batch["anchor_mask"] = anchor_mask
            if hidden_mask.any():
                batch["hidden_anchor_mask"] = hidden_mask
            if work_mask.any():
                batch["soft_anchor_mask"] = work_mask
        return batch

    return next_batch


# --- the build ------------------------------------------------------------------


@dataclass
class BuildReport:
    seed: int
    settings: dict
    seconds: dict = field(default_factory=dict)
    final_loss: dict = field(default_factory=dict)


def _final_loss(losses: list[float]) -> float:
    tail = losses[-50:]
    return round(sum(tail) / len(tail), 4)


def build_zoo(out_dir: str | Path, *, seed: int = 0, settings: ZooSettings | None = None,
              progress: bool = True, models: Collection[str] = MODELS) -> dict[str, Path]:
    """Train and save ``models`` (default all: base, ja, math, vlm) under ``out_dir``; returns their paths.

    Leaving ``base`` out reuses the base that an earlier build with the same seed and
    pretraining settings left in ``out_dir`` (pretraining is the longest step). Every model
    is trained from the base alone with its own seeded data, so building one gives the same
    weights as building all.
    """
    settings = settings or ZooSettings()
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _build(Path(out_dir), seed, settings, progress, models)
    finally:  # the caller's thread count, not the build's, once it returns
        torch.set_num_threads(threads)


def _build(out_dir: Path, seed: int, settings: ZooSettings, progress: bool,
           models: Collection[str]) -> dict[str, Path]:
    from evovlm.zoo.benchmarks import reserved_questions

    tokenizer = zoo_tokenizer()
    report = BuildReport(seed=seed, settings=asdict(settings))
    settings.check()
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise EvoVLMError(f"unknown zoo model(s) {', '.join(unknown)}; the zoo builds {', '.join(MODELS)}")
    ensure_writable_folder(out_dir)  # before training, not when the first model is saved
    paths = {name: out_dir / name for name in MODELS if name in models}
    base_path = out_dir / "base"
    previous = out_dir / "build.json"
    if "base" not in models and previous.is_file():  # keep the timings of the models not rebuilt
        kept = json.loads(previous.read_text(encoding="utf-8"))
        # settings added since that build (the reader's, in session 15) are new fields its models never read
        same = all(report.settings.get(name) == value for name, value in kept.get("settings", {}).items())
        if kept.get("seed") == seed and same:
            report.seconds, report.final_loss = kept.get("seconds", {}), kept.get("final_loss", {})

    def timed(name: str, fn):
        started = time.perf_counter()
        result = fn()
        report.seconds[name] = round(time.perf_counter() - started, 1)
        return result

    stamp = {"seed": seed, "vocabulary": len(tokenizer), **_pretraining_settings(settings)}
    stamp_path = base_path / "zoo-base.json"
    if "base" not in models:
        found = json.loads(stamp_path.read_text(encoding="utf-8")) if stamp_path.is_file() else None
        if found != stamp:
            raise EvoVLMError(f"--reuse-base/--only: {base_path} was not built with seed {seed} and these "
                              f"pretraining settings (found {found}, need {stamp}); build the base too")
    else:
        base = new_language_model(tokenizer, settings, seed)
        losses = timed("base", lambda: train_loop(
            base, packed_batches(tokenizer, world.pretraining_document, random.Random(f"pretrain:{seed}"),
                                 batch_size=settings.batch_size, seq_len=settings.seq_len),
            steps=settings.pretrain_steps, lr=settings.pretrain_lr, warmup=100, desc="zoo base (pretraining)",
            progress=progress))
        report.final_loss["base"] = _final_loss(losses)
        _save(base, tokenizer, base_path)
        stamp_path.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")

    def fine_tune(name: str, model, phases: list[tuple[str, Callable, int, float, Callable, bool]],
                  anchor=None) -> None:
        losses: list[float] = []
        for label, batches, steps, lr, profile, early_exit in phases:
            losses += timed(f"{name}:{label}", lambda: train_loop(
                model, batches, steps=steps, lr=lr, profile=profile, desc=f"zoo {name} ({label})",
                exit_layer=settings.exit_layer if early_exit else None, exit_weight=settings.exit_weight,
                anchor=anchor if early_exit else None, soft_anchor_weight=settings.vlm_work_anchor,
                progress=progress))
        report.final_loss[name] = _final_loss(losses)

    def qa(make_example, label: str):
        return qa_batches(tokenizer, make_example, random.Random(f"{label}:{seed}"), batch_size=settings.batch_size,
                          template=world.PROMPT)

    if "ja" in models:
        ja = _reload(base_path)
        ja_examples = _ja_examples(reserved_questions("zoo-ja-qa"), settings.ja_colour_reading,
                                   settings.ja_smallest_number)
        fine_tune("ja", ja, [("output blocks", qa(ja_examples, "ja"), settings.ja_steps, settings.ja_lr,
                              settings.outer, False)])
        _save(ja, tokenizer, paths["ja"])

    if "math" in models:
        reserved_math = _reserved_word_problems()
        math_expert = _reload(base_path)
        fine_tune("math", math_expert, [
            ("inner blocks", qa(_math_work_examples(reserved_math, settings.math_ja_share), "math"),
             settings.math_steps, settings.finetune_lr, settings.inner, True),
            ("output blocks", qa(_math_reply_examples(reserved_math, settings.math_ja_share), "math-output"),
             settings.math_output_steps, settings.finetune_lr, settings.outer, False)], anchor=_reload(base_path))
        _save(math_expert, tokenizer, paths["math"])

    if "reader" in models:
        math_path = out_dir / "math"
        if not (math_path / "config.json").is_file():
            raise EvoVLMError(f"the reader learns in front of the MATH expert's block 0, and {math_path} holds no "
                              f"model: build math first, or with it")
        reader = _reload(base_path)
        losses = timed("reader", lambda: train_reader(
            reader, tokenizer, [_reload(math_path)], random.Random(f"reader:{seed}"), steps=settings.reader_steps,
            lr=settings.reader_lr, batch_size=settings.batch_size,
            blocks=reading_blocks(settings.exit_layer), deep=settings.reader_deep,
            passages=_digit_problem_texts(_reserved_word_problems()),
            passage_share=settings.reader_problems, progress=progress))
        report.final_loss["reader"] = _final_loss(losses)
        _save(reader, tokenizer, paths["reader"])

    if "vlm" in models:
        processor = zoo_processor(tokenizer)
        vlm = new_vlm(_reload(base_path), tokenizer, settings, seed)
        untrained_vlm = new_vlm(_reload(base_path), tokenizer, settings, seed)

        def vqa(phase: str, label: str):
            return _vqa_batches(processor, random.Random(f"{label}:{seed}"), batch_size=settings.batch_size,
                                phase=phase, ja_share=settings.vlm_ja_share, ja_work=settings.vlm_ja_work,
                                ja_context=settings.vlm_ja_context, work_anchor=settings.vlm_work_anchor > 0,
                                questions=settings.vlm_questions)

        fine_tune("vlm", vlm, [
            ("vision and inner blocks", vqa("inner", "vlm"), settings.vlm_steps, settings.finetune_lr,
             settings.inner, True),
            ("output blocks", vqa("output", "vlm-output"), settings.vlm_output_steps, settings.finetune_lr,
             settings.outer, False)], anchor=untrained_vlm)
        _save(vlm, processor, paths["vlm"])
    (out_dir / "build.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return paths


def _pretraining_settings(settings: ZooSettings) -> dict:
    names = ("hidden", "layers", "heads", "kv_heads", "batch_size", "seq_len", "pretrain_steps", "pretrain_lr")
    return {name: getattr(settings, name) for name in names}


def _save(model, tokenizer, path: Path) -> None:
    """``tokenizer`` is the VLM's processor for the VLM."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    umask_permissions(path)


def _reload(path: Path):
    from transformers import MistralForCausalLM

    return MistralForCausalLM.from_pretrained(path)

