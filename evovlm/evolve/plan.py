"""``evovlm evolve CONFIG --plan``: what one evaluation worker must hold, from config.json files alone.

No weights are read. Parameter counts follow the architectures' shapes (Mistral/Llama decoders, a
CLIP vision tower and the LLaVA projector), so a 7B plan can be made on a laptop: the sources held
resident for in-memory re-merges (base and every source's language-model tensors, as stored), the
live model the candidates are merged into, the merge's working memory, and the KV cache of one
generation batch. The plan says whether that fits a GPU of a given size, and what the GPU holds when
the sources stay in pinned CPU memory instead (streamed per tensor).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evovlm.errors import EvoVLMError
from evovlm.evolve.config import EvolveConfig
from evovlm.merge.methods import ACCELERATOR_CHUNK_ELEMENTS, get_method

GIB = 1 << 30
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp32": 4, "fp16": 2, "bf16": 2}
CUDA_CONTEXT = 0.6 * GIB  # the CUDA context and allocator's own reserve, roughly
DEFAULT_PROMPT_TOKENS = 512


def lm_parameters(config: dict) -> int:
    """Parameters of a Mistral/Llama causal LM (embeddings, decoder blocks, final norm, head)."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o and k, v
    block = attention + 3 * hidden * config["intermediate_size"] + 2 * hidden  # + gate/up/down, two norms
    head = 0 if config.get("tie_word_embeddings") else vocab * hidden
    return vocab * hidden + layers * block + hidden + head


def clip_vision_parameters(vision: dict) -> int:
    """Parameters of a CLIP vision tower (patch and position embeddings, blocks, both layer norms)."""
    width, inner, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    positions = (vision["image_size"] // patch) ** 2 + 1
    embeddings = 3 * patch * patch * width + width + positions * width
    block = 4 * (width * width + width) + width * inner + inner + inner * width + width + 4 * width
    return embeddings + 2 * width + vision["num_hidden_layers"] * block + 2 * width


def model_parameters(config: dict) -> int:
    """A causal LM's, or a LLaVA VLM's: language model, vision tower, projector (and LLaVA-NeXT's newline)."""
    from evovlm.arch import is_vlm_config, text_config

    if not is_vlm_config(config):
        return lm_parameters(config)
    text, vision = text_config(config), config["vision_config"]
    projector = vision["hidden_size"] * text["hidden_size"] + text["hidden_size"] + text["hidden_size"] ** 2 \
        + text["hidden_size"]
    newline = text["hidden_size"] if config.get("model_type") == "llava_next" else 0
    return lm_parameters(text) + clip_vision_parameters(vision) + projector + newline


def kv_cache_bytes(text: dict, tokens: int, batch: int, dtype_bytes: int) -> int:
    heads = text["num_attention_heads"]
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    kv_heads = text.get("num_key_value_heads") or heads
    return 2 * text["num_hidden_layers"] * kv_heads * head_dim * tokens * batch * dtype_bytes


@dataclass
class Plan:
    """Bytes per item held by one worker, and whether they fit ``gpu_bytes``."""

    items: list[tuple[str, int]]
    resident: int  # of which: the sources held for re-merges (may stay in pinned CPU memory instead)
    gpu_bytes: int
    dare_draws: int = 0  # not in the total: DARE's draws, held on the GPU only where room is left

    @property
    def total(self) -> int:
        return sum(size for _, size in self.items) + int(CUDA_CONTEXT)

    def fits(self, *, sources_on_gpu: bool = True) -> bool:
        return self.total - (0 if sources_on_gpu else self.resident) <= self.gpu_bytes

    def text(self) -> str:
        lines = [f"{'item':<58} {'GiB':>8}"]
        lines += [f"{name:<58} {size / GIB:8.2f}" for name, size in self.items]
        lines.append(f"{'CUDA context and allocator reserve (about)':<58} {CUDA_CONTEXT / GIB:8.2f}")
        lines.append(f"{'total on the GPU':<58} {self.total / GIB:8.2f}")
        size = f"a {self.gpu_bytes / GIB:g} GiB GPU"
        if self.fits():
            lines.append(f"fits on {size}, sources on the GPU ({(self.gpu_bytes - self.total) / GIB:.1f} GiB spare)")
        elif self.resident and self.fits(sources_on_gpu=False):
            lines.append(f"does not fit on {size} with the sources on it; with them in pinned CPU memory "
                         f"({self.resident / GIB:.1f} GiB of host RAM, streamed per tensor) the GPU holds "
                         f"{(self.total - self.resident) / GIB:.2f} GiB: fits")
        else:
            lines.append(f"does not fit on {size}, even with the sources in CPU memory")
        if self.dare_draws:
            lines.append(f"DARE's draws ({self.dare_draws / GIB:.1f} GiB: 2 bytes per parameter and source) are held "
                         f"on the GPU in what is left, keeping 8 GiB free; those that do not fit are drawn on the "
                         f"CPU for every candidate")
        return "\n".join(lines)


def plan(config: EvolveConfig, *, gpu_gib: float = 80.0, prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
         base_dir: Path | None = None) -> Plan:
    """The memory one worker needs for ``config``'s first stage (PS: merge target; DFS: models A and B).
    Local model folders may be relative to ``base_dir`` (the config's folder)."""
    def load(ref: str) -> dict[str, Any]:
        return _config(ref, base_dir)

    try:
        return _plan(config, load, gpu_gib, prompt_tokens)
    except KeyError as exc:
        raise EvoVLMError(f"a plan sizes Mistral/Llama and LLaVA models; a config.json of this config's models "
                          f"has no {exc}") from None
    except (TypeError, ZeroDivisionError):
        raise EvoVLMError("a plan sizes Mistral/Llama and LLaVA models; a config.json of this config's models "
                          "has a size that is not a positive number") from None


def _plan(config: EvolveConfig, load: Any, gpu_gib: float, prompt_tokens: int) -> Plan:
    from evovlm.arch import text_config
    from evovlm.eval.runners import GenerationSettings

    dtype_bytes = BYTES[config.runtime.dtype or "bf16"]  # on a GPU the default is bf16
    fitness = config.fitness
    generation = GenerationSettings().with_overrides(**fitness.generation) if fitness.kind == "benchmark" \
        else GenerationSettings()
    items: list[tuple[str, int]] = []
    resident = dare_draws = 0
    if config.mode.startswith("ps"):
        ps = config.ps
        target_ref = ps.target or ps.base_model or ps.models[0].model
        target = load(target_ref)
        items.append((f"live model: {target_ref} ({model_parameters(target) / 1e9:.2f} B params)",
                      model_parameters(target) * dtype_bytes))
        sources = ([ps.base_model] if ps.base_model else []) + [entry.model for entry in ps.models]
        for ref in sources:
            source = load(ref)
            size = lm_parameters(text_config(source)) * BYTES.get(str(source.get("torch_dtype")), 2)
            items.append((f"resident language model: {ref}", size))
            resident += size
        text = text_config(target)
        if get_method(ps.method).random:
            dare_draws = 2 * lm_parameters(text) * len(ps.models)
    else:
        refs = [config.dfs.model_a, config.dfs.model_b]
        for label, ref in zip("AB", refs):
            model = load(ref)
            items.append((f"DFS model {label}: {ref}", model_parameters(model) * dtype_bytes))
        text = text_config(load(refs[0]))
    # a GPU merge selects magnitudes with torch.topk on the largest tensor (the vocabulary rows): an fp32
    # |delta| copy and up to half of it as values and int64 indices, 10 bytes per entry; and chunk buffers
    largest = text["vocab_size"] * text["hidden_size"]
    sources = len(config.ps.models) if config.mode.startswith("ps") else 1
    items.append(("merge working memory (top-k of the largest tensor, chunk buffers)",
                  largest * 10 + (sources + 6) * min(largest, ACCELERATOR_CHUNK_ELEMENTS) * 4))
    tokens = prompt_tokens + generation.max_new_tokens
    items.append((f"KV cache: batch {generation.batch_size} x {tokens} tokens",
                  kv_cache_bytes(text, tokens, generation.batch_size, dtype_bytes)))
    items.append((f"logits of a batch step (fp32, vocab {text['vocab_size']})",
                  generation.batch_size * text["vocab_size"] * 4))
    return Plan(items, resident, int(gpu_gib * GIB), dare_draws)


def _config(ref: str, base_dir: Path | None) -> dict[str, Any]:
    from evovlm.evolve.preflight import model_folder
    from evovlm.io.checkpoint import read_model_config

    return read_model_config(model_folder(ref, base_dir)[0], ref)
