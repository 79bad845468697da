"""``EvoDFSForCausalLM``: a causal LM that runs a path through stored decoder layers.

Everything but the decoder stack comes from model A (embeddings, final norm, head, and the
tokenizer beside the checkpoint). Before the layer at path position ``t`` the hidden state is
multiplied by ``dfs_scales[t]`` (the paper's W[i, j] for the hop from layer i into layer j).

KV cache: a reused layer must not overwrite the keys/values it cached at an earlier position,
so each path position gets its own cache slot: the attention module's ``layer_idx`` (the slot
it writes) is set to the path position right before the layer runs.

transformers renamed the cache argument from ``past_key_values`` to ``cache`` (5.24; the old
name is removed in 5.40). The model takes the cache under either name, because ``generate``
passes it under the installed version's name, and hands it on under that name only.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from evovlm.dfs.configuration import EvoDFSConfig, check_path

_PREFIX = {"mistral": "Mistral", "llama": "Llama"}
# The installed transformers' name for the KV cache argument and output field.
CACHE_ARG = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def _take_cache(cache: Any, kwargs: dict[str, Any]) -> Any:
    """The cache, whichever name the caller used (``past_key_values`` is popped from ``kwargs``)."""
    legacy = kwargs.pop("past_key_values", None)
    return legacy if cache is None else cache


def _base_classes(base_model_type: str) -> tuple[type, type, type]:
    """(DecoderLayer, RMSNorm, RotaryEmbedding) of the base architecture."""
    module = importlib.import_module(f"transformers.models.{base_model_type}.modeling_{base_model_type}")
    prefix = _PREFIX[base_model_type]
    return (getattr(module, f"{prefix}DecoderLayer"), getattr(module, f"{prefix}RMSNorm"),
            getattr(module, f"{prefix}RotaryEmbedding"))


class EvoDFSPreTrainedModel(PreTrainedModel):
    config: EvoDFSConfig
    config_class = EvoDFSConfig
    base_model_prefix = "model"
    _no_split_modules = ["MistralDecoderLayer", "LlamaDecoderLayer"]
    _skip_keys_device_placement = [CACHE_ARG]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True


class EvoDFSModel(EvoDFSPreTrainedModel):
    """Embeddings, the stored decoder layers, the final norm; runs ``config.dfs_path``."""

    def __init__(self, config: EvoDFSConfig) -> None:
        check_path(config.dfs_path, config.dfs_scales, config.num_stored_layers)
        super().__init__(config)
        layer_class, norm_class, rotary_class = _base_classes(config.base_model_type)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([layer_class(config, index) for index in range(config.num_stored_layers)])
        self.norm = norm_class(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = rotary_class(config=config)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Any = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                **kwargs: Any) -> BaseModelOutputWithPast:
        cache = _take_cache(cache, kwargs)
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)  # one slot per path position
        if position_ids is None:
            seen = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + seen).unsqueeze(0)
        sliding = getattr(self.config, "sliding_window", None) is not None
        mask_function = create_sliding_window_causal_mask if sliding else create_causal_mask
        causal_mask = mask_function(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                    position_ids=position_ids, **{CACHE_ARG: cache})
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        for position, (index, scale) in enumerate(zip(self.config.dfs_path, self.config.dfs_scales)):
            layer = self.layers[index]
            if scale != 1.0:
                hidden_states = hidden_states * scale
            attention, own_slot = layer.self_attn, layer.self_attn.layer_idx
            attention.layer_idx = position  # the cache slot of this path position
            try:
                hidden_states = layer(hidden_states, attention_mask=causal_mask, position_ids=position_ids,
                                      use_cache=use_cache, position_embeddings=position_embeddings,
                                      **{CACHE_ARG: cache}, **kwargs)
            finally:  # the layer may be shared with the model it came from (from_models)
                attention.layer_idx = own_slot
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **{CACHE_ARG: cache if use_cache else None})


class EvoDFSForCausalLM(EvoDFSPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: EvoDFSConfig) -> None:
        super().__init__(config)
        self.model = EvoDFSModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Any = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.LongTensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int | torch.Tensor = 0,
                **kwargs: Any) -> CausalLMOutputWithPast:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=_take_cache(cache, kwargs), inputs_embeds=inputs_embeds, use_cache=use_cache,
                             **kwargs)
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        elif not isinstance(logits_to_keep, int):
            hidden_states = hidden_states[:, logits_to_keep, :]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_ARG: getattr(outputs, CACHE_ARG)})

    # -- DFS-specific -------------------------------------------------------------------
    def set_path(self, path: list[int], scales: list[float]) -> None:
        """Run another path through the stored layers (no weights move): how a search tries candidates."""
        path, scales = [int(i) for i in path], [float(s) for s in scales]
        check_path(path, scales, self.config.num_stored_layers)
        self.config.dfs_path, self.config.dfs_scales = path, scales
        self.config.num_hidden_layers = len(path)

    @classmethod
    @torch.no_grad()
    def from_models(cls, model_a: nn.Module, model_b: nn.Module, path: list[int] | None = None,
                    scales: list[float] | None = None) -> "EvoDFSForCausalLM":
        """A DFS model storing every layer of A then of B (sharing their modules, no copy).

        Stored layer ``i`` is A's layer ``i`` for ``i < len(A)``, then B's layers. The default
        path is A's own layers, which reproduces A exactly.
        """
        layers_a, layers_b = list(model_a.model.layers), list(model_b.model.layers)
        _check_compatible(model_a.config, model_b.config)
        origins = [f"A:{i}" for i in range(len(layers_a))] + [f"B:{i}" for i in range(len(layers_b))]
        path = list(range(len(layers_a))) if path is None else list(path)
        scales = [1.0] * len(path) if scales is None else list(scales)
        config = EvoDFSConfig.from_base(model_a.config, origins, path, scales)
        config._attn_implementation = model_a.config._attn_implementation
        with torch.device("meta"):  # every parameter is replaced by A's and B's own modules below
            model = cls(config)
        model.model.embed_tokens = model_a.model.embed_tokens
        model.model.layers = nn.ModuleList(layers_a + layers_b)
        model.model.norm = model_a.model.norm
        model.model.rotary_emb = model_a.model.rotary_emb
        model.lm_head = model_a.lm_head
        model.generation_config = model_a.generation_config
        return model.eval()

    @torch.no_grad()
    def pruned(self) -> "EvoDFSForCausalLM":
        """A copy storing only the layers its path uses (each once), ready for ``save_pretrained``."""
        used = sorted(set(self.config.dfs_path))
        remap = {old: new for new, old in enumerate(used)}
        config = EvoDFSConfig.from_dict(self.config.to_dict())
        config.dfs_layer_origins = [self.config.dfs_layer_origins[i] for i in used]
        config.dfs_path = [remap[i] for i in self.config.dfs_path]
        config._attn_implementation = self.config._attn_implementation
        with torch.device("meta"):
            model = type(self)(config)
        state = {}
        for name, tensor in self.state_dict().items():
            if name.startswith("model.layers."):
                old, rest = name[len("model.layers."):].split(".", 1)
                if int(old) not in remap:
                    continue
                name = f"model.layers.{remap[int(old)]}.{rest}"
            state[name] = tensor.detach().clone()
        model.load_state_dict(state, strict=True, assign=True)
        model.model.rotary_emb = copy.deepcopy(self.model.rotary_emb)  # non-persistent buffers: not in the state
        model.generation_config = self.generation_config
        return model.eval()


def _check_compatible(config_a: Any, config_b: Any) -> None:
    """A's and B's decoder layers must be interchangeable."""
    if config_a.model_type != config_b.model_type:
        raise ValueError(f"DFS needs two models of one architecture: A is {config_a.model_type}, "
                         f"B is {config_b.model_type}")
    for name in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size"):
        if getattr(config_a, name, None) != getattr(config_b, name, None):
            raise ValueError(f"DFS needs interchangeable layers: {name} is {getattr(config_a, name, None)} in A "
                             f"and {getattr(config_b, name, None)} in B")
