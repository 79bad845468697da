"""The DFS model class: identity path, save/reload, KV cache with reused layers, Auto registration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM

import evovlm.dfs.auto  # noqa: F401  (registers the DFS classes with transformers)
from evovlm.dfs.configuration import EvoDFSConfig
from evovlm.dfs.modeling import CACHE_ARG, EvoDFSForCausalLM
from evovlm.tiny import perturbed_copy, tiny_causal_lm

ROOT = Path(__file__).resolve().parents[1]
IDS = torch.tensor([[1, 40, 41, 42, 60, 70, 33, 90, 5, 6], [1, 50, 52, 54, 56, 58, 60, 62, 64, 66]])


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model_a = tiny_causal_lm(0, layers=3).eval()
    model_b = perturbed_copy(model_a, 5, scale=0.05).eval()
    return model_a, model_b


@pytest.fixture(scope="module")
def llama_models():
    model_a = tiny_causal_lm(1, architecture="llama").eval()
    return model_a, perturbed_copy(model_a, 6, scale=0.05).eval()


@torch.no_grad()
def test_identity_path_with_unit_scales_is_model_a(models, llama_models):
    for model_a, model_b in (models, llama_models):
        dfs = EvoDFSForCausalLM.from_models(model_a, model_b)
        assert dfs.config.dfs_layer_origins == [f"A:{i}" for i in range(len(model_a.model.layers))] + \
            [f"B:{i}" for i in range(len(model_b.model.layers))]
        assert torch.equal(dfs(IDS).logits, model_a(IDS).logits)
        # Shared modules: the DFS model stores A's and B's layers without copying them.
        assert dfs.model.layers[0] is model_a.model.layers[0]
        dfs.set_path([0, 3, 1, 2], [1.0, 0.8, 1.2, 1.0])
        assert not torch.allclose(dfs(IDS).logits, model_a(IDS).logits)


@torch.no_grad()
def test_scales_multiply_the_hidden_state_entering_a_layer(models):
    model_a, model_b = models
    dfs = EvoDFSForCausalLM.from_models(model_a, model_b, path=[0, 4, 2], scales=[1.0, 0.5, 2.0])
    inner = model_a.model
    hidden = inner.embed_tokens(IDS)
    positions = torch.arange(IDS.shape[1])[None]
    rotary = inner.rotary_emb(hidden, positions)
    mask = torch.full((IDS.shape[1], IDS.shape[1]), float("-inf")).triu(1)[None, None]
    hops = ((model_a.model.layers[0], 1.0), (model_b.model.layers[1], 0.5), (model_a.model.layers[2], 2.0))
    for layer, scale in hops:
        hidden = layer(hidden * scale, attention_mask=mask, position_ids=positions, position_embeddings=rotary)
    expected = model_a.lm_head(inner.norm(hidden))
    torch.testing.assert_close(dfs(IDS).logits, expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_save_reload_stores_distinct_layers_once(models, tmp_path):
    model_a, model_b = models
    dfs = EvoDFSForCausalLM.from_models(model_a, model_b, path=[0, 3, 4, 3, 4, 1, 2], scales=[1, .9, 1.1, .8, 1, 1, 1])
    logits = dfs(IDS).logits
    pruned = dfs.pruned()
    assert pruned.config.dfs_layer_origins == ["A:0", "A:1", "A:2", "B:0", "B:1"]
    pruned.set_path(pruned.config.dfs_path, pruned.config.dfs_scales)
    torch.testing.assert_close(pruned(IDS).logits, logits, rtol=0, atol=0)
    unused = EvoDFSForCausalLM.from_models(model_a, model_b, path=[0, 4, 4, 2], scales=[1, 1, 1, 1]).pruned()
    assert unused.config.dfs_layer_origins == ["A:0", "A:2", "B:1"] and unused.config.dfs_path == [0, 2, 2, 1]

    pruned.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "evovlm_dfs" and config["architectures"] == ["EvoDFSForCausalLM"]
    assert config["num_hidden_layers"] == 7 and "auto_map" not in config
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        layers = {k.split(".")[2] for k in handle.keys() if k.startswith("model.layers.")}
    assert layers == {"0", "1", "2", "3", "4"}  # 5 distinct layers for a path of 7
    assert isinstance(AutoConfig.from_pretrained(tmp_path), EvoDFSConfig)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=False)
    assert type(reloaded) is EvoDFSForCausalLM
    torch.testing.assert_close(reloaded(IDS).logits, logits, rtol=0, atol=0)


def test_bare_config_constructs_but_a_model_refuses_an_empty_path(models):
    # transformers builds the default config to diff against when it prints one (5.17 does in
    # from_dict, so `pruned()` crashed on the GPU machine): the default must construct
    from evovlm.dfs.modeling import EvoDFSModel

    bare = EvoDFSConfig()
    assert bare.dfs_path == [] and bare.num_stored_layers == 0
    dfs = EvoDFSForCausalLM.from_models(*models, path=[0, 3, 1], scales=[1, .5, 1])
    assert '"dfs_path": [' in repr(dfs.config) and dfs.config.to_diff_dict()["dfs_path"] == [0, 3, 1]
    with pytest.raises(ValueError, match="at least one layer"):
        EvoDFSModel(bare)
    with pytest.raises(ValueError, match="outside the 2 stored layers"):
        EvoDFSConfig(dfs_layer_origins=["A:0", "A:1"], dfs_path=[0, 2])


@torch.no_grad()
def test_kv_cache_gives_each_path_position_its_own_slot(models):
    model_a, model_b = models
    dfs = EvoDFSForCausalLM.from_models(model_a, model_b, path=[0, 3, 3, 4, 3, 2], scales=[1, .9, 1.1, 1, .7, 1])
    full = dfs(IDS, use_cache=False).logits
    prefix = dfs(IDS[:, :6], use_cache=True)
    assert len(getattr(prefix, CACHE_ARG).layers) == 6
    cache, steps = getattr(prefix, CACHE_ARG), [prefix.logits]
    for position in range(6, IDS.shape[1]):
        out = dfs(IDS[:, position:position + 1], use_cache=True, **{CACHE_ARG: cache})
        cache = getattr(out, CACHE_ARG)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    with_cache = dfs.generate(IDS, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=3)
    without = dfs.generate(IDS, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=3)
    assert torch.equal(with_cache, without)
    # A's own layers keep their cache slots when A runs alone afterwards.
    assert [layer.self_attn.layer_idx for layer in model_a.model.layers] == [0, 1, 2]


@torch.no_grad()
def test_left_padded_batches_match_single_rows(models):
    model_a, model_b = models
    dfs = EvoDFSForCausalLM.from_models(model_a, model_b, path=[0, 4, 3, 2], scales=[1, 1.2, .9, 1])
    row = IDS[1:, 3:]
    padded = torch.cat([torch.full((1, 3), 3), row], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(row)], dim=1)
    batched = dfs.generate(padded, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=3)
    single = dfs.generate(row, max_new_tokens=6, do_sample=False, pad_token_id=3)
    assert torch.equal(batched[:, 3:], single)


def test_import_evovlm_stays_cheap_and_registration_is_explicit():
    code = ("import sys, evovlm, evovlm.cli\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'import evovlm got heavy'\n"
            "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
            "assert 'evovlm_dfs' not in CONFIG_MAPPING\n"
            "import evovlm.dfs.auto\n"
            "assert 'evovlm_dfs' in CONFIG_MAPPING\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
