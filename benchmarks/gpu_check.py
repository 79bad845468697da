"""Full-shape GPU check: what one evolution actor does per candidate, at the real 7B shapes.

    python benchmarks/gpu_check.py [--small] [--device cuda] [--out gpu-check.json]

Nothing is downloaded. The models are built with random weights straight on the device from the
configs in ``examples/configs/`` (Mistral-7B-v0.1 and LLaVA-v1.6-Mistral-7B), and timed on:

1. an in-memory re-merge of the 7B language tower from 3 resident sources (DARE-TIES), the
   sources and the live model all on the GPU (goal on an H100-class GPU: under 1 s); then TIES
   from the same sources, whose magnitude select per tensor is what ``SELECT_BY_DEVICE`` decides
   (and, last of all, DARE-TIES again with the sources in pinned CPU memory, streamed to the GPU
   tensor by tensor: what an actor does when they do not fit beside the model);
2. batched greedy generation for the 250 MGSM-JA prompts at 256 new tokens (random weights never
   stop early, so every sequence runs to the limit: the worst case);
3. 5-beam generation for 50 images at the LLaVA-1.6 resolution (672x672, anyres: 5 tiles of 336);
4. one forward pass of the 250 MGSM-JA prompts through a DFS path of the paper's size
   (T = 192 slots over the 64 stored layers of two 32-layer models).

Prompt lengths are those of the real MGSM-JA prompts (``eval_data/mgsm_ja.tsv`` in the paper's
template) counted in characters, one token each: a stand-in for Mistral's tokenizer, which needs
no download here and splits Japanese into one to three tokens per character. Each step frees the
previous step's models first, so the peak is one step's, and each is timed after one warm-up.

``--small`` shrinks every shape (hidden 64, 4 layers, 8 prompts, 2 images at 56x56) so the same
code runs on a CPU in seconds; the test suite runs it that way. Goal for the full run: under 8
minutes on one H100-class GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "examples" / "configs"


@dataclass(frozen=True)
class Sizes:
    prompts: int = 250
    new_tokens: int = 256
    images: int = 50
    beams: int = 5
    vqa_new_tokens: int = 64
    vqa_batch: int = 10  # images per generate call: 10 x 5 beams x ~2,950 tokens of KV cache
    image_side: int = 672
    dfs_slots: int = 192
    merge_sources: int = 3


SMALL = Sizes(prompts=8, new_tokens=8, images=2, beams=2, vqa_new_tokens=4, vqa_batch=2, image_side=56,
              dfs_slots=12)
_SMALL_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=512)
_SMALL_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     image_size=28, patch_size=14, projection_dim=32)


def _text_config(small: bool):
    from transformers import MistralConfig

    fields = json.loads((CONFIGS / "mistral-7b-v0.1" / "config.json").read_text(encoding="utf-8"))
    fields = {key: value for key, value in fields.items() if key not in ("architectures", "model_type")}
    if small:
        fields.update(_SMALL_TEXT)
    return MistralConfig(**fields)


def _vlm_config(small: bool, image_token_index: int):
    from transformers import LlavaNextConfig

    fields = json.loads((CONFIGS / "llava-v1.6-mistral-7b" / "config.json").read_text(encoding="utf-8"))
    fields.pop("architectures", None)
    fields.pop("model_type", None)
    if small:
        fields["text_config"].update(_SMALL_TEXT, vocab_size=_SMALL_TEXT["vocab_size"] + 64)
        fields["vision_config"].update(_SMALL_VISION)
        fields["image_grid_pinpoints"] = [[28, 56], [56, 28], [56, 56]]
    fields["image_token_index"] = image_token_index
    return LlavaNextConfig(**fields)


def _built(model_class, config, device: torch.device, dtype: torch.dtype):
    """Random weights, allocated and initialised on ``device`` (no CPU copy of a 7B model)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(dtype)  # a config's own torch_dtype (LLaVA's text config says bfloat16) does not decide
    model.generation_config.eos_token_id = None  # random weights: run every sequence to the limit
    model.generation_config.pad_token_id = 0
    return model.eval()


def _timed(fn, device: torch.device, repeats: int = 2) -> float:
    """Seconds of the last of ``repeats`` calls (the first warms kernels and the allocator up)."""
    seconds = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    return seconds


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _mgsm_prompt_lengths(count: int) -> list[int]:
    from evovlm.eval.benchmarks import load_benchmark
    from evovlm.eval.prompts import build_prompt

    bench = load_benchmark("mgsm-ja")
    return [len(build_prompt(bench.generation.template, sample.question)) for sample in bench.samples[:count]]


def _left_padded(lengths: list[int], vocab: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, width - length:] = torch.randint(3, vocab, (length,), generator=generator)
        mask[row, width - length:] = 1
    return ids.to(device), mask.to(device)


def check_merge(config, sizes: Sizes, device: torch.device, dtype: torch.dtype, *,
                pinned: bool = False) -> Iterator[dict]:
    """DARE-TIES (the paper's method: random drops) and TIES (a magnitude select per tensor, radix or
    ``torch.topk`` as ``SELECT_BY_DEVICE`` says), both from the same resident sources; with ``pinned``
    (a GPU only), DARE-TIES from sources in pinned CPU memory instead."""
    from transformers import MistralForCausalLM

    from evovlm.merge.engine import DrawStore, ResidentSources, merge_into_module
    from evovlm.merge.recipe import recipe_from_dict

    live = _built(MistralForCausalLM, config, device, dtype)
    base = {name: tensor.detach().clone() for name, tensor in live.state_dict().items()}
    sources = [{name: tensor + 0.01 * torch.randn_like(tensor) for name, tensor in base.items()}
               for _ in range(sizes.merge_sources)]
    # canonical names are the causal LM's own (model.layers.N..., lm_head.weight)
    resident = ResidentSources(base, sources, dare_draws=DrawStore())  # as an actor holds them (placed_for)
    held = resident.nbytes + sum(p.numel() * p.element_size() for p in live.parameters())
    parameters = sum(p.numel() for p in live.parameters())

    def recipe_of(method: str):
        return recipe_from_dict({"method": method, "base_model": "base", "seed": 0, "models": [
            {"model": f"source-{index}", "weight": 0.5, "density": 0.5} for index in range(sizes.merge_sources)]})

    for method, goal in () if pinned else (("dare_ties", "< 1 s (H100-class)"), ("ties", "")):
        recipe = recipe_of(method)
        first, seconds = (_timed(lambda: merge_into_module(live, recipe, resident), device, 1) for _ in range(2))
        yield {"check": f"re-merge, {method.upper().replace('_', '-')} of {sizes.merge_sources} resident sources",
               "shape": f"{parameters / 1e9:.2f}B parameters, {held / 2**30:.1f} GiB held"
                        + (f" + {resident.dare_draws.nbytes / 2**30:.1f} GiB of DARE draws" if method == "dare_ties"
                           else "") + f"; first candidate {first:.2f} s", "seconds": seconds, "goal": goal}
    if pinned:  # sources too big for the GPU: pinned CPU memory, streamed over per tensor
        started = time.perf_counter()
        resident = resident.pinned(release=True)  # each GPU copy is freed once pinned
        pinning = time.perf_counter() - started
        del base, sources
        _free(device)
        recipe = recipe_of("dare_ties")
        resident.dare_draws = DrawStore()
        first, seconds = (_timed(lambda: merge_into_module(live, recipe, resident), device, 1) for _ in range(2))
        yield {"check": f"re-merge, DARE-TIES of {sizes.merge_sources} sources in pinned CPU memory",
               "shape": f"{resident.nbytes / 2**30:.1f} GiB (page-locked in {pinning:.0f} s) streamed to the GPU "
                        f"per candidate; first candidate {first:.2f} s", "seconds": seconds, "goal": ""}


def check_generation(config, sizes: Sizes, device: torch.device, dtype: torch.dtype) -> dict:
    from transformers import MistralForCausalLM

    model = _built(MistralForCausalLM, config, device, dtype)
    lengths = _mgsm_prompt_lengths(sizes.prompts)
    ids, mask = _left_padded(lengths, config.vocab_size, device)
    out: list[torch.Tensor] = []

    def generate() -> None:
        with torch.no_grad():
            out[:] = [model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=sizes.new_tokens,
                                     do_sample=False)]

    seconds = _timed(generate, device)
    new = out[0].shape[1] - ids.shape[1]
    return {"check": f"greedy generation, {sizes.prompts} MGSM-JA prompts",
            "shape": f"one batch, prompts {min(lengths)}-{max(lengths)} tokens, {new} new tokens each",
            "seconds": seconds, "goal": ""}


def check_beams(small: bool, sizes: Sizes, device: torch.device, dtype: torch.dtype) -> dict:
    from PIL import Image
    from transformers import LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor

    from evovlm.tiny import IMAGE_TOKEN, tiny_tokenizer

    tokenizer = tiny_tokenizer()  # char-level ids stand in for Mistral's; the image token is what matters
    config = _vlm_config(small, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    vision = config.vision_config
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": vision.image_size}, crop_size={"height": vision.image_size, "width": vision.image_size},
        image_grid_pinpoints=config.image_grid_pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision.patch_size,
                                   vision_feature_select_strategy=config.vision_feature_select_strategy,
                                   image_token=IMAGE_TOKEN, num_additional_image_tokens=1)
    model = _built(LlavaNextForConditionalGeneration, config, device, dtype)
    rng = random.Random(0)
    side = sizes.image_side
    images = [Image.new("RGB", (side, side), tuple(rng.randrange(256) for _ in range(3))) for _ in range(sizes.images)]
    prompt = f"[INST] {IMAGE_TOKEN}\nこの画像には何が写っていますか？ [/INST]"
    tokenizer.padding_side = "left"
    batches = [processor(text=[prompt] * len(images[start:start + sizes.vqa_batch]),
                         images=images[start:start + sizes.vqa_batch], return_tensors="pt", padding=True)
               for start in range(0, len(images), sizes.vqa_batch)]
    prompt_tokens = batches[0]["input_ids"].shape[1]

    def generate() -> None:
        with torch.no_grad():
            for batch in batches:
                inputs = {key: value.to(device) for key, value in batch.items()}
                inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
                model.generate(**inputs, num_beams=sizes.beams, max_new_tokens=sizes.vqa_new_tokens, do_sample=False)

    seconds = _timed(generate, device, repeats=1 if not small else 2)
    return {"check": f"{sizes.beams}-beam generation, {sizes.images} images {side}x{side}",
            "shape": f"{sizes.vqa_batch} images per batch, {prompt_tokens} prompt tokens with the image, "
                     f"{sizes.vqa_new_tokens} new tokens", "seconds": seconds, "goal": ""}


def check_dfs(config, sizes: Sizes, device: torch.device, dtype: torch.dtype) -> dict:
    from evovlm.dfs.configuration import EvoDFSConfig
    from evovlm.dfs.modeling import EvoDFSForCausalLM

    layers = config.num_hidden_layers
    origins = [f"{model}:{index}" for model in ("A", "B") for index in range(layers)]
    rng = random.Random(0)
    path = [slot % len(origins) for slot in range(sizes.dfs_slots)]  # every slot on: the longest path
    scales = [rng.uniform(0.5, 1.5) for _ in path]
    dfs_config = EvoDFSConfig.from_base(config, origins, path, scales)
    model = _built(EvoDFSForCausalLM, dfs_config, device, dtype)
    lengths = _mgsm_prompt_lengths(sizes.prompts)
    ids, mask = _left_padded(lengths, config.vocab_size, device)

    def forward() -> None:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)

    seconds = _timed(forward, device)
    return {"check": f"DFS forward, T = {len(path)} slots over {len(origins)} stored layers",
            "shape": f"{sizes.prompts} MGSM-JA prompts, one pass", "seconds": seconds, "goal": ""}


def run(small: bool, device: torch.device, out: Path | None = None) -> dict:
    """The table; with ``out``, also written there after every row (``complete`` false until the end),
    so a run stopped by a time limit still leaves what it measured."""
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    sizes = SMALL if small else Sizes()
    config = _text_config(small)
    started = time.perf_counter()
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows: list[dict] = []
    result = {"hardware": hardware, "device": str(device), "dtype": str(dtype).removeprefix("torch."), "small": small,
              "torch": torch.__version__, "rows": rows, "complete": False}
    for step in (lambda: check_merge(config, sizes, device, dtype),
                 lambda: [check_generation(config, sizes, device, dtype)],
                 lambda: [check_beams(small, sizes, device, dtype)],
                 lambda: [check_dfs(config, sizes, device, dtype)],
                 # last: page-locking ~58 GiB of host memory may take a while, and must not cost the rows above
                 lambda: check_merge(config, sizes, device, dtype, pinned=True) if device.type == "cuda" else []):
        for row in step():
            rows.append(row)
            print(f"  {row['check']}: {row['seconds']:.2f} s", file=sys.stderr, flush=True)
            _write(out, result | {"total_s": time.perf_counter() - started})
        _free(device)  # the step's models went with its frame
    result |= {"complete": True, "total_s": time.perf_counter() - started}
    _write(out, result)
    return result


def _write(out: Path | None, result: dict) -> None:
    if out is not None:
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def format_table(result: dict) -> str:
    lines = [f"{result['hardware']} ({result['dtype']}, torch {result['torch']})"
             + (", --small shapes" if result["small"] else ""),
             "", "| check | shape | seconds | goal |", "|---|---|---|---|"]
    lines += [f"| {row['check']} | {row['shape']} | {row['seconds']:.2f} | {row['goal']} |" for row in result["rows"]]
    lines.append(f"\ntotal wall time, model building included: {result['total_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes: runs on a CPU in seconds (tests)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and not args.small:
        print("gpu_check: the full shapes need a GPU (a 7B model and 3 sources); use --small on a CPU",
              file=sys.stderr)
        return 2
    print(format_table(run(args.small, device, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
