"""Architectures and key mapping.

Every language-model tensor is addressed by its *canonical* name, the one a plain
``MistralForCausalLM`` uses (``model.layers.3.mlp.up_proj.weight``, ``lm_head.weight``).
A layout maps a checkpoint's or module's own names to canonical ones:

* causal LMs (Mistral, Llama):       ``model.*``, ``lm_head.*``
* VLMs, as saved by transformers 5:  ``language_model.model.*``, ``language_model.lm_head.*``
* VLMs, in memory (and some repos):  ``model.language_model.*``, ``lm_head.*``

VLM tensors outside the language tower (vision tower, projector, image newline) have no
canonical name: they are copied from the target model unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from evovlm.errors import EvoVLMError

CAUSAL_LM_ARCHITECTURES = {"MistralForCausalLM", "LlamaForCausalLM"}
VLM_ARCHITECTURES = {"LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration"}

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


@dataclass(frozen=True)
class KeyLayout:
    """Maps native tensor names of one checkpoint or module to canonical LM names."""

    name: str
    model_prefix: str  # native prefix standing for canonical "model."
    head_prefix: str  # native prefix standing for canonical "lm_head."

    def to_canonical(self, key: str) -> str | None:
        if key.startswith(self.model_prefix):
            return "model." + key[len(self.model_prefix):]
        if key.startswith(self.head_prefix):
            return "lm_head." + key[len(self.head_prefix):]
        return None

    def to_native(self, canonical: str) -> str:
        if canonical.startswith("model."):
            return self.model_prefix + canonical[len("model."):]
        if canonical.startswith("lm_head."):
            return self.head_prefix + canonical[len("lm_head."):]
        raise KeyError(canonical)


CAUSAL_LM = KeyLayout("causal-lm", "model.", "lm_head.")
VLM_SAVED = KeyLayout("vlm-saved", "language_model.model.", "language_model.lm_head.")
VLM_MEMORY = KeyLayout("vlm-memory", "model.language_model.", "lm_head.")


def detect_layout(keys: Iterable[str], architecture: str | None = None, where: str = "checkpoint") -> KeyLayout:
    """Pick the layout from the tensor names (the architecture only breaks ties)."""
    keys = list(keys)
    if any(key.startswith(VLM_SAVED.model_prefix) for key in keys):
        return VLM_SAVED
    if any(key.startswith(VLM_MEMORY.model_prefix) for key in keys):
        return VLM_MEMORY
    if architecture in VLM_ARCHITECTURES:
        raise EvoVLMError(f"{where}: a {architecture} without a language tower "
                          "(no 'language_model.model.*' or 'model.language_model.*' tensors)")
    if any(key.startswith("model.layers.") or key == "model.embed_tokens.weight" for key in keys):
        return CAUSAL_LM
    sample = ", ".join(keys[:3]) or "none"
    raise EvoVLMError(f"{where}: cannot find a Mistral/Llama language model in the tensor names (first: {sample})")


def layer_group(canonical: str) -> str:
    """The layer group of a canonical name: embed, layers.N, norm or lm_head."""
    match = _LAYER.match(canonical)
    if match:
        return f"layers.{match.group(1)}"
    if canonical.startswith("model.embed_tokens."):
        return "embed"
    if canonical.startswith("model.norm."):
        return "norm"
    if canonical.startswith("lm_head."):
        return "lm_head"
    return "other"


def is_vocab_tensor(canonical: str) -> bool:
    """Tensors with one row per vocabulary entry, which may differ in row count."""
    return canonical in ("model.embed_tokens.weight", "lm_head.weight")


def text_config(config: dict) -> dict:
    """The language model's config: the top level for LMs, ``text_config`` for VLMs."""
    return config.get("text_config") or config


def is_vlm_config(config: dict) -> bool:
    """True when a config.json (as a dict) describes a Llava-family VLM."""
    return config.get("model_type") in ("llava", "llava_next") or "vision_config" in config


def architecture_of(config: dict) -> str:
    architectures = config.get("architectures") or []
    return architectures[0] if architectures else str(config.get("model_type", "unknown"))


def check_supported(config: dict, where: str) -> str:
    architecture = architecture_of(config)
    supported = CAUSAL_LM_ARCHITECTURES | VLM_ARCHITECTURES
    if architecture not in supported:
        raise EvoVLMError(f"{where}: architecture {architecture!r} is not supported; "
                          f"supported: {', '.join(sorted(supported))}")
    return architecture
