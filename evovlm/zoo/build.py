"""Build the zoo: tokenizer, base, JA expert, MATH expert and VLM, deterministic for a seed.

    evovlm zoo build [--seed N] [--quick] [--out DIR]

The base is pretrained on the mixed corpus of :mod:`evovlm.zoo.world`. Each expert is
fine-tuned from it with a per-layer learning-rate profile: the JA expert mostly in the outer
layers (embeddings, first and last blocks, head), the MATH expert and the VLM's language
tower mostly in the middle blocks. The profiles overlap, so a uniform merge mixes both
experts everywhere, while a merge that takes each expert where it was trained exists and
has to be found. ``--quick`` builds a small zoo in about a minute, for tests.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from evovlm.errors import EvoVLMError
from evovlm.zoo import scenes, world
from evovlm.zoo.train import packed_batches, qa_batches, train_loop

IMAGE_TOKEN = "<image>"


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
    finetune_lr: float = 1e-3
    ja_steps: int = 500
    math_steps: int = 800
    vlm_steps: int = 800
    # learning-rate multiplier per depth: embeddings, blocks 0..L-1, final norm + head
    ja_profile: tuple[float, ...] = (1, 1, 1, .1, .1, 1, 1, 1)
    math_profile: tuple[float, ...] = (.1, .1, .3, 1, 1, .3, .1, .1)
    vlm_profile: tuple[float, ...] = (.1, .1, .3, 1, 1, .3, .1, .1)
    math_ja_share: float = 0.15  # Japanese questions (with English answers) in the MATH expert's data
    vlm_ja_share: float = 0.15
    threads: int = 0  # torch threads; 0 keeps torch's default

    @classmethod
    def quick(cls) -> ZooSettings:
        return cls(hidden=32, layers=4, heads=4, kv_heads=2, vision_hidden=32, vision_layers=1, batch_size=8,
                   seq_len=64, pretrain_steps=30, ja_steps=10, math_steps=10, vlm_steps=10,
                   ja_profile=(1, 1, .1, .1, 1, 1), math_profile=(.1, .1, 1, 1, .1, .1),
                   vlm_profile=(.1, .1, 1, 1, .1, .1))

    def profile(self, values: Sequence[float]):
        if len(values) != self.layers + 2:
            raise EvoVLMError(f"a learning-rate profile needs {self.layers + 2} values "
                              f"(embeddings, {self.layers} blocks, head), got {len(values)}")
        return lambda depth: values[depth + 1]


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


def _math_pairs(reserved: frozenset[str], ja_share: float):
    def make(rng: random.Random) -> tuple[str, str]:
        while True:
            problem = world.word_problem(rng, "ja" if rng.random() < ja_share else "en")
            if problem.question not in reserved:  # benchmark questions never appear in training
                return problem.question, " " + world.math_reply(problem, "en")

    return make


def _ja_pairs(reserved: frozenset[str]):
    def make(rng: random.Random) -> tuple[str, str]:
        while True:
            instruction = world.japanese_instruction(rng)
            if instruction.question not in reserved:
                return instruction.question, " " + instruction.answer

    return make


def _vqa_batches(processor, rng: random.Random, *, batch_size: int, ja_share: float):
    from evovlm.eval.prompts import build_prompt

    tokenizer = processor.tokenizer

    def next_batch(step: int) -> dict:
        prompts, answers, images = [], [], []
        for _ in range(batch_size):
            scene = scenes.random_scene(rng)
            question = scenes.visual_question(rng, scene, "ja" if rng.random() < ja_share else "en")
            prompts.append(build_prompt("zoo-qa", question.question, image_token=IMAGE_TOKEN))
            answers.append(" " + scenes.vqa_reply(question, "en"))
            images.append(scenes.render(scene))
        tokenizer.padding_side = "right"
        inputs = processor(text=[p + a + tokenizer.eos_token for p, a in zip(prompts, answers)], images=images,
                           padding=True, return_tensors="pt")
        labels = inputs["input_ids"].clone()
        for row, prompt in enumerate(prompts):  # no loss on the prompt (image tokens included)
            labels[row, :len(processor(text=[prompt], images=[images[row]])["input_ids"][0])] = -100
        labels[inputs["attention_mask"] == 0] = -100
        return dict(inputs, labels=labels)

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
              progress: bool = True) -> dict[str, Path]:
    """Train and save ``base``, ``ja``, ``math`` and ``vlm`` under ``out_dir``; returns their paths."""
    from evovlm.zoo.benchmarks import reserved_questions

    settings = settings or ZooSettings()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    out_dir = Path(out_dir)
    tokenizer = zoo_tokenizer()
    report = BuildReport(seed=seed, settings=asdict(settings))
    paths = {name: out_dir / name for name in ("base", "ja", "math", "vlm")}

    def timed(name: str, fn):
        started = time.perf_counter()
        result = fn()
        report.seconds[name] = round(time.perf_counter() - started, 1)
        return result

    base = new_language_model(tokenizer, settings, seed)
    losses = timed("base", lambda: train_loop(
        base, packed_batches(tokenizer, world.pretraining_document, random.Random(f"pretrain:{seed}"),
                             batch_size=settings.batch_size, seq_len=settings.seq_len),
        steps=settings.pretrain_steps, lr=settings.pretrain_lr, warmup=100, desc="zoo base (pretraining)",
        progress=progress))
    report.final_loss["base"] = _final_loss(losses)
    _save(base, tokenizer, paths["base"])

    reserved_math = reserved_questions("zoo-mgsm-ja") | reserved_questions("zoo-math-en")
    experts = {
        "ja": (_ja_pairs(reserved_questions("zoo-ja-qa")), settings.ja_steps, settings.ja_profile),
        "math": (_math_pairs(reserved_math, settings.math_ja_share), settings.math_steps, settings.math_profile),
    }
    for name, (make_pair, steps, profile) in experts.items():
        expert = _reload(paths["base"])
        batches = qa_batches(tokenizer, make_pair, random.Random(f"{name}:{seed}"), batch_size=settings.batch_size,
                             template=world.PROMPT)
        losses = timed(name, lambda: train_loop(expert, batches, steps=steps, lr=settings.finetune_lr,
                                                profile=settings.profile(profile), desc=f"zoo {name} expert",
                                                progress=progress))
        report.final_loss[name] = _final_loss(losses)
        _save(expert, tokenizer, paths[name])

    processor = zoo_processor(tokenizer)
    vlm = new_vlm(_reload(paths["base"]), tokenizer, settings, seed)
    batches = _vqa_batches(processor, random.Random(f"vlm:{seed}"), batch_size=settings.batch_size,
                           ja_share=settings.vlm_ja_share)
    losses = timed("vlm", lambda: train_loop(vlm, batches, steps=settings.vlm_steps, lr=settings.finetune_lr,
                                             profile=settings.profile(settings.vlm_profile),
                                             desc="zoo VLM", progress=progress))
    report.final_loss["vlm"] = _final_loss(losses)
    vlm.save_pretrained(paths["vlm"])
    processor.save_pretrained(paths["vlm"])
    (out_dir / "build.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return paths


def _save(model, tokenizer, path: Path) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _reload(path: Path):
    from transformers import MistralForCausalLM

    return MistralForCausalLM.from_pretrained(path)

