"""``EvoDFSConfig``: the base architecture's fields, flat, plus the DFS path and scales.

The config is *flat*: every field of the base text config (hidden size, heads, RoPE, sliding
window, ...) sits at the top level, so the base decoder layers, the rotary embedding, the
attention masks and the KV cache all read it unchanged. Three fields describe the DFS:

* ``dfs_layer_origins``: one entry per stored (distinct) decoder layer, e.g. ``"A:0"``, ``"B:5"``;
* ``dfs_path``: the layers run, in order, as indices into the stored layers (repeats allowed);
* ``dfs_scales``: the factor the hidden state is multiplied by on entering each path position.

``num_hidden_layers`` is the path length: transformers sizes the KV cache from it, and every
path position owns one cache slot even when it reuses a layer.
"""

from __future__ import annotations

from typing import Any

from transformers.configuration_utils import PreTrainedConfig

SUPPORTED_BASE_TYPES = ("mistral", "llama")
# Fields of the base config that describe one model, not the architecture: left out of the DFS config.
_DROPPED = {"architectures", "model_type", "transformers_version", "_name_or_path", "num_hidden_layers", "auto_map",
            "layer_types", "id2label", "label2id"}


class EvoDFSConfig(PreTrainedConfig):
    model_type = "evovlm_dfs"
    # the KV cache, as transformers >= 5.24 and older name it
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    base_model_type: str = "mistral"
    dfs_layer_origins: list[str] | None = None
    dfs_path: list[int] | None = None
    dfs_scales: list[float] | None = None
    num_hidden_layers: int = 0
    use_cache: bool = True  # a generation parameter: PreTrainedConfig drops it unless declared

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.base_model_type not in SUPPORTED_BASE_TYPES:
            raise ValueError(f"DFS base model type {self.base_model_type!r} is not supported; "
                             f"supported: {', '.join(SUPPORTED_BASE_TYPES)}")
        self.dfs_layer_origins = list(self.dfs_layer_origins or [])
        self.dfs_path = [int(i) for i in (self.dfs_path or [])]
        self.dfs_scales = [float(s) for s in (self.dfs_scales or [1.0] * len(self.dfs_path))]
        # The bare default (no layers, no path) must construct: transformers builds one to diff
        # against when it prints or serialises a config. A model refuses it (EvoDFSModel).
        if self.dfs_path or self.dfs_layer_origins:
            check_path(self.dfs_path, self.dfs_scales, len(self.dfs_layer_origins))
        self.num_hidden_layers = len(self.dfs_path)

    @property
    def num_stored_layers(self) -> int:
        return len(self.dfs_layer_origins)

    @classmethod
    def from_base(cls, base_config: PreTrainedConfig, layer_origins: list[str], path: list[int],
                  scales: list[float]) -> "EvoDFSConfig":
        """A DFS config over ``base_config``'s architecture (a Mistral or Llama config)."""
        if base_config.model_type not in SUPPORTED_BASE_TYPES:
            raise ValueError(f"DFS needs a {' or '.join(SUPPORTED_BASE_TYPES)} model, got {base_config.model_type!r}")
        fields = {k: v for k, v in base_config.to_dict().items() if k not in _DROPPED}
        fields.pop("dtype", None)
        config = cls(base_model_type=base_config.model_type, dfs_layer_origins=list(layer_origins),
                     dfs_path=list(path), dfs_scales=list(scales), **fields)
        config.architectures = ["EvoDFSForCausalLM"]
        config.dtype = base_config.dtype
        return config


def check_path(path: list[int], scales: list[float], stored: int) -> None:
    if not path:
        raise ValueError("a DFS path needs at least one layer")
    if len(scales) != len(path):
        raise ValueError(f"the DFS path has {len(path)} positions but {len(scales)} scales")
    bad = [i for i in path if not 0 <= i < stored]
    if bad:
        raise ValueError(f"DFS path index {bad[0]} outside the {stored} stored layers")
