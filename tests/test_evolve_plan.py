"""``evovlm evolve --plan``: a worker's memory from config.json files, checked on the real 7B configs
(examples/configs, no weights) against their published parameter counts and hand-computed sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evovlm.cli import main
from evovlm.evolve.config import load_config
from evovlm.evolve.plan import GIB, kv_cache_bytes, lm_parameters, model_parameters, plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MISTRAL = json.loads((EXAMPLES / "configs" / "mistral-7b-v0.1" / "config.json").read_text())
LLAVA = json.loads((EXAMPLES / "configs" / "llava-v1.6-mistral-7b" / "config.json").read_text())


def test_parameter_counts_are_the_published_ones():
    assert model_parameters(MISTRAL) == 7_241_732_096  # mistralai/Mistral-7B-v0.1
    assert model_parameters(LLAVA) == 7_566_747_648  # llava-hf/llava-v1.6-mistral-7b-hf
    assert lm_parameters(LLAVA["text_config"]) == 7_241_732_096 + 64 * 4096 * 2  # 64 more vocabulary rows, twice


def test_the_7b_evovlm_plan_adds_up_and_says_what_fits():
    config = load_config(EXAMPLES / "evolve-plan-7b.yaml")
    result = plan(config, gpu_gib=80, base_dir=EXAMPLES)
    sizes = dict(result.items)
    assert sizes["live model: configs/llava-v1.6-mistral-7b (7.57 B params)"] == 7_566_747_648 * 2
    resident = (7_241_732_096 * 2 + 7_242_256_384) * 2  # base and shisa's shape, LLaVA's language model; bf16
    assert result.resident == resident
    kv = 2 * 32 * 8 * 128 * (512 + 256) * 16 * 2  # K and V, 32 layers, 8 KV heads of 128, 768 tokens, batch 16
    assert kv == kv_cache_bytes(LLAVA["text_config"], 768, 16, 2) == 1.5 * GIB
    assert sizes["KV cache: batch 16 x 768 tokens"] == kv
    assert result.fits() and "fits on a 80 GiB GPU, sources on the GPU" in result.text()
    small = plan(config, gpu_gib=24, base_dir=EXAMPLES)
    assert not small.fits() and small.fits(sources_on_gpu=False) and "pinned CPU memory" in small.text()
    assert "even with the sources in CPU memory" in plan(config, gpu_gib=12, base_dir=EXAMPLES).text()
    assert sizes["merge working memory (top-k of the largest tensor, chunk buffers)"] == \
        32064 * 4096 * 10 + (2 + 6) * 2**24 * 4  # fp32 |delta| and half of it as values and int64 indices
    assert result.dare_draws == 0 and "DARE" not in result.text()  # task arithmetic draws nothing


def test_a_dare_plan_says_what_its_draws_take():
    config = load_config(EXAMPLES / "evolve-plan-7b.yaml")
    config = config.model_copy(update={"ps": config.ps.model_copy(update={"method": "dare_ties"})})
    result = plan(config, gpu_gib=80, base_dir=EXAMPLES)
    assert result.dare_draws == 2 * 7_242_256_384 * 2  # 2 bytes per language-model parameter, 2 sources
    assert "DARE's draws (27.0 GiB: 2 bytes per parameter and source)" in result.text()


def test_the_plan_command_reads_no_weights_and_runs_nothing(capsys, tmp_path):
    assert main(["evolve", str(EXAMPLES / "evolve-plan-7b.yaml"), "--plan", "--gpu-gib", "40"]) == 0
    out = capsys.readouterr().out
    assert "total on the GPU" in out and "a 40 GiB GPU" in out
    assert main(["evolve", str(EXAMPLES / "evolve-plan-7b.yaml"), "--plan", "--out", str(tmp_path / "run")]) == 2
    assert "--plan takes CONFIG.yaml only" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_dfs_plan_holds_both_models(tmp_path):
    tiny = EXAMPLES / "tiny"
    path = tmp_path / "dfs.yaml"
    path.write_text(f"mode: dfs\ndfs: {{model_a: {tiny / 'ja'}, model_b: {tiny / 'math'}}}\n"
                    "fitness: {synthetic: sphere}\n")
    result = plan(load_config(path), gpu_gib=1)
    names = [name for name, _ in result.items]
    assert names[:2] == [f"DFS model A: {tiny / 'ja'}", f"DFS model B: {tiny / 'math'}"] and result.resident == 0
    assert dict(result.items)[names[0]] == model_parameters(json.loads((tiny / "ja" / "config.json").read_text())) * 2
    assert result.fits()


@pytest.mark.parametrize("architecture", ["base", "ja", "math", "llava", "llava-next"])
def test_the_counts_match_real_models_built_from_their_configs(architecture):
    """On the tiny checkpoints (built by transformers from such configs), the formula equals the tensors' size."""
    import math

    from safetensors import safe_open

    folder = EXAMPLES / "tiny" / architecture
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        stored = sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
    assert model_parameters(json.loads((folder / "config.json").read_text())) == stored


def test_a_config_json_the_plan_cannot_size_is_a_message(tmp_path, capsys):
    model = tmp_path / "odd"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**MISTRAL, "intermediate_size": None}))
    config = tmp_path / "plan.yaml"
    config.write_text("mode: ps\nps: {method: linear, models: [odd]}\nfitness: {synthetic: sphere}\n")
    assert main(["evolve", str(config), "--plan"]) == 2
    assert "a size that is not a positive number" in capsys.readouterr().err
    (model / "config.json").write_text(json.dumps({k: v for k, v in MISTRAL.items() if k != "hidden_size"}))
    assert main(["evolve", str(config), "--plan"]) == 2
    assert "has no 'hidden_size'" in capsys.readouterr().err
