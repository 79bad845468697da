"""Runners: batched generation must equal one-by-one ``generate``; stop strings; device/dtype."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evovlm.errors import EvoVLMError
from evovlm.eval import prompts
from evovlm.eval.runners import (
    CausalLMRunner,
    GenerationSettings,
    VLMRunner,
    _StopOnStrings,
    make_runner,
    pick_device_dtype,
    truncate_at_stop,
)
from helpers import random_images, random_prompts, tiny_causal_lm, tiny_llava, tiny_tokenizer


def one_by_one(model, tokenizer, prompts_: list[str], *, max_new_tokens: int, repetition_penalty: float = 1.0):
    """Reference: plain transformers generate on each prompt alone (no padding at all)."""
    texts = []
    for prompt in prompts_:
        enc = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             repetition_penalty=repetition_penalty, pad_token_id=tokenizer.pad_token_id)
        texts.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return texts


def test_batched_equals_one_by_one_greedy():
    model, tokenizer = tiny_causal_lm()
    prompts_ = random_prompts(20)
    assert len({len(p) for p in prompts_}) > 10  # really different lengths -> real left padding
    runner = CausalLMRunner(model, tokenizer)
    batched = runner.generate(prompts_, GenerationSettings(max_new_tokens=16, batch_size=7), progress=False)
    assert batched == one_by_one(model, tokenizer, prompts_, max_new_tokens=16)
    assert len(set(batched)) > 1


def test_batched_repetition_penalty_ignores_padding_when_pad_is_eos():
    # No pad token: the runner pads with eos. transformers' own penalty would then penalise eos in
    # padded rows only; the runner's padding-aware penalty must keep batched == alone.
    model, _ = tiny_causal_lm(seed=1)
    tokenizer = tiny_tokenizer(with_pad=False)
    runner = CausalLMRunner(model, tokenizer)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    prompts_ = random_prompts(12, seed=1)
    settings = GenerationSettings(max_new_tokens=12, batch_size=6, repetition_penalty=1.5)
    batched = runner.generate(prompts_, settings, progress=False)
    assert batched == one_by_one(model, tokenizer, prompts_, max_new_tokens=12, repetition_penalty=1.5)


def test_stop_strings_truncate_and_stop_early():
    model, tokenizer = tiny_causal_lm()
    runner = CausalLMRunner(model, tokenizer)
    prompts_ = random_prompts(8, seed=2)
    free = runner.generate(prompts_, GenerationSettings(max_new_tokens=24, batch_size=4), progress=False)
    stop = free[0][5:7]  # a string the model really produces
    assert stop.strip() and len(stop) == 2
    settings = GenerationSettings(max_new_tokens=24, batch_size=4, stop_strings=(stop,))
    stopped = runner.generate(prompts_, settings, progress=False)
    for full, cut in zip(free, stopped):
        assert cut == truncate_at_stop(full, (stop,)).strip()
        assert stop not in cut
    assert len(stopped[0]) <= 5
    alone = [runner.generate([p], settings.with_overrides(batch_size=1), progress=False)[0] for p in prompts_]
    assert stopped == alone
    # Early stop: once the only row has produced the stop string, no further forward passes run.
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    runner.generate(prompts_[:1], settings.with_overrides(batch_size=1), progress=False)
    hook.remove()
    assert len(calls) <= 8 < 24


def test_stop_criterion_is_per_row():
    _, tokenizer = tiny_causal_lm()
    ids = tokenizer(["ab", "ab"], return_tensors="pt")["input_ids"]
    criterion = _StopOnStrings(tokenizer, ["xy"], prompt_len=ids.shape[1])
    step = torch.cat([ids, tokenizer(["x", "q"], add_special_tokens=False, return_tensors="pt")["input_ids"]], 1)
    assert criterion(step).tolist() == [False, False]
    step = torch.cat([step, tokenizer(["y", "y"], add_special_tokens=False, return_tensors="pt")["input_ids"]], 1)
    assert criterion(step).tolist() == [True, False]
    # Only generated text counts: a stop string inside the prompt must not end the row.
    prompt = tokenizer(["xy"], return_tensors="pt")["input_ids"]
    assert _StopOnStrings(tokenizer, ["xy"], prompt_len=prompt.shape[1])(prompt).tolist() == [False]


def test_truncate_at_stop_takes_earliest():
    assert truncate_at_stop("abc Response: x Instruction", prompts.ALPACA_STOP_STRINGS) == "abc "
    assert truncate_at_stop("no stops", ("zz",)) == "no stops"


def test_vlm_batched_equals_one_by_one():
    model, processor = tiny_llava()
    runner = make_runner(model, processor)
    assert isinstance(runner, VLMRunner)
    questions, images = random_prompts(6, seed=3), random_images(6)
    for beams in (1, 3):
        settings = GenerationSettings(template="ja-shisa-vqa", max_new_tokens=8, batch_size=4, num_beams=beams,
                                      repetition_penalty=1.5)
        batched = runner.answer(questions, settings, images=images, progress=False)
        alone = [runner.answer([q], settings.with_overrides(batch_size=1), images=[im], progress=False)[0]
                 for q, im in zip(questions, images)]
        assert batched == alone


def test_vlm_prompt_puts_image_token_before_question():
    runner = VLMRunner(*tiny_llava())
    [text] = runner.render(["質問"], "llava-mistral", with_image=True)
    assert text == "[INST] <image>\n質問 [/INST]"


def test_text_runner_refuses_images():
    model, tokenizer = tiny_causal_lm()
    with pytest.raises(EvoVLMError, match="text-only"):
        CausalLMRunner(model, tokenizer).answer(["q"], GenerationSettings(), images=random_images(1))


def test_paper_templates():
    assert prompts.JA_ALPACA_COT.split("\n")[0].endswith("一歩一歩考えましょう。")
    assert prompts.build_prompt("ja-alpaca-cot", "1+1は？").endswith("### 指示:\n1+1は？\n\n### 応答:")
    assert prompts.build_prompt("ja-shisa-vqa", "何？", image_token="<image>").endswith(
        "<</SYS>>\n\n<image>\n何？ [/INST]")
    assert prompts.build_prompt("plain", "{braces}") == "{braces}"
    with pytest.raises(EvoVLMError, match="unknown prompt template"):
        prompts.build_prompt("nope", "q")
    with pytest.raises(EvoVLMError, match="chat template"):
        prompts.build_prompt("chat", "q", tokenizer=tiny_tokenizer())


def test_chat_template_prompt():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<s>[INST] {{ m['content'] }} [/INST]{% endfor %}"
    assert prompts.build_prompt("chat", "q", tokenizer=tokenizer) == "<s>[INST] q [/INST]"


def test_device_and_dtype_choice():
    device, dtype = pick_device_dtype("cpu")
    assert (device.type, dtype) == ("cpu", torch.float32)
    assert pick_device_dtype("cpu", "bf16")[1] == torch.bfloat16
    if not torch.cuda.is_available():
        assert pick_device_dtype()[0].type == "cpu"
        with pytest.raises(EvoVLMError, match="CUDA"):
            pick_device_dtype("cuda")
    with pytest.raises(EvoVLMError, match="dtype"):
        pick_device_dtype("cpu", "int3")


def test_generation_settings_validation():
    base = GenerationSettings()
    assert base.with_overrides(num_beams=None, batch_size=3).batch_size == 3
    for bad in ({"batch_size": 0}, {"max_new_tokens": 0}, {"num_beams": 0}, {"repetition_penalty": 0.0}):
        with pytest.raises(EvoVLMError):
            base.with_overrides(**bad)
    with pytest.raises(EvoVLMError, match="unknown"):
        base.with_overrides(temperature=0.7)
