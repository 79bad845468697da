"""The merge engine end to end on tiny real architectures.

LLM -> Llava/LlavaNext language towers (both on-disk key layouts), Llama, determinism, sharding,
atomic output with clear errors for every bad input, and the in-memory API.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from evovlm.cli import main
from evovlm.errors import EvoVLMError
from evovlm.io.checkpoint import Checkpoint
from evovlm.merge import engine
from evovlm.merge.engine import ResidentSources, merge_checkpoints, merge_into_module
from evovlm.merge.recipe import load_recipe, recipe_from_dict
from helpers import fake_hf_repo

LLM_ROWS, VLM_ROWS = 308, 316  # the tiny tokenizer's vocabulary, and the VLMs' 8 extra rows
Q0 = "model.layers.0.self_attn.q_proj.weight"
UP1 = "model.layers.1.mlp.up_proj.weight"
VOCAB = ("model.embed_tokens.weight", "lm_head.weight")
LANGUAGE_TENSORS = 2 * 9 + 3  # 9 per decoder layer, embed, norm, lm_head

# native prefixes standing for canonical "model." and "lm_head."
LAYOUTS = {"saved": ("language_model.model.", "language_model.lm_head."),
           "memory": ("model.language_model.", "lm_head.")}


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from evovlm.tiny import build_tiny_family

    return build_tiny_family(tmp_path_factory.mktemp("family"))


def _to_memory_key(key: str) -> str:
    """transformers-5 saved VLM names -> the in-memory names."""
    if key.startswith("language_model.model."):
        return "model.language_model." + key[len("language_model.model."):]
    if key.startswith("language_model.lm_head."):
        return "lm_head." + key[len("language_model.lm_head."):]
    return "model." + key  # vision_tower.*, multi_modal_projector.*, image_newline


@pytest.fixture(scope="module")
def vlm_dirs(family, tmp_path_factory):
    """(variant, layout) -> VLM directory; the 'memory' copies have their safetensors keys rewritten."""
    dirs = {}
    root = tmp_path_factory.mktemp("memory-layout")
    for variant in ("llava", "llava-next"):
        dirs[(variant, "saved")] = family[variant]
        copy = root / variant
        shutil.copytree(family[variant], copy)
        state = load_file(copy / "model.safetensors")
        assert all(k.startswith(("language_model.", "vision_tower.", "multi_modal_projector.", "image_newline"))
                   for k in state)
        save_file({_to_memory_key(k): v for k, v in state.items()}, copy / "model.safetensors",
                  metadata={"format": "pt"})
        dirs[(variant, "memory")] = copy
    return dirs


@pytest.fixture(scope="module")
def llama_family(tmp_path_factory):
    from evovlm.tiny import perturbed_copy, tiny_causal_lm, tiny_tokenizer

    root = tmp_path_factory.mktemp("llama")
    base = tiny_causal_lm(0, architecture="llama")
    paths = {}
    for name, model in (("base", base), ("a", perturbed_copy(base, 1)), ("b", perturbed_copy(base, 2))):
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tiny_tokenizer().save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory):
    """Mistral LMs with another hidden size / another layer count than the tiny family."""
    from evovlm.tiny import tiny_causal_lm

    root = tmp_path_factory.mktemp("mismatched")
    paths = {"wide": root / "wide", "deep": root / "deep"}
    tiny_causal_lm(0, hidden=64).save_pretrained(paths["wide"])
    tiny_causal_lm(0, layers=3).save_pretrained(paths["deep"])
    return paths


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(Path(directory).glob("*.safetensors")):
        out.update(load_file(file))
    return out


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def native(canonical: str, layout: str) -> str:
    model_prefix, head_prefix = LAYOUTS[layout]
    if canonical.startswith("model."):
        return model_prefix + canonical[len("model."):]
    return head_prefix + canonical[len("lm_head."):]


def canonical_of(key: str, layout: str) -> str | None:
    model_prefix, head_prefix = LAYOUTS[layout]
    if key.startswith(model_prefix):
        return "model." + key[len(model_prefix):]
    if key.startswith(head_prefix):
        return "lm_head." + key[len(head_prefix):]
    return None


def assert_nothing_left(out: Path) -> None:
    assert not out.exists(), f"{out} was left behind"
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == [], f"temporary directories left behind: {leftovers}"


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def ta_recipe(family, target: Path, weight_vlm: float = 1.0, weight_ja: float = 0.5) -> dict:
    """task arithmetic: base + w_vlm * (vlm - base) + w_ja * (ja - base), written into ``target``."""
    return {"method": "task_arithmetic", "base_model": str(family["base"]), "target": str(target),
            "models": [{"model": str(target), "weight": weight_vlm}, {"model": str(family["ja"]), "weight": weight_ja}]}


def dare_recipe(family, target: Path, seed: int = 5) -> dict:
    return {"method": "dare_ties", "base_model": str(family["base"]), "target": str(target), "seed": seed,
            "models": [{"model": str(target), "weight": 1.0, "density": 0.5},
                       {"model": str(family["ja"]), "weight": 0.5, "density": 0.3},
                       {"model": str(family["math"]), "weight": 0.3, "density": 0.7}]}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop whatever was printed before (e.g. transformers' loading bars)
    code = main(["merge", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------
# LLM into the language tower of Llava / LlavaNext, both key layouts
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["saved", "memory"])
@pytest.mark.parametrize("variant", ["llava", "llava-next"])
def test_llm_merged_into_vlm_language_tower(family, vlm_dirs, variant, layout, tmp_path):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    vlm = vlm_dirs[(variant, layout)]
    out = merge_checkpoints(recipe_from_dict(ta_recipe(family, vlm)), tmp_path / "merged", progress=False)
    merged, source = tensors(out), tensors(vlm)
    base, ja = tensors(family["base"]), tensors(family["ja"])
    assert set(merged) == set(source)  # the target's own names

    # vision tower, projector (and LlavaNext's image_newline) are bit-identical to the source VLM's
    others = [k for k in source if canonical_of(k, layout) is None]
    prefix = "" if layout == "saved" else "model."
    assert any(k.startswith(prefix + "vision_tower.") for k in others)
    assert any(k.startswith(prefix + "multi_modal_projector.") for k in others)
    assert (prefix + "image_newline" in others) == (variant == "llava-next")
    for key in others:
        assert bit_equal(merged[key], source[key]), key

    # every language tensor changed ...
    language = [k for k in source if canonical_of(k, layout) is not None]
    assert len(language) == LANGUAGE_TENSORS
    assert all(not torch.equal(merged[k], source[k]) for k in language)
    # ... to base + 1.0 * (vlm - base) + 0.5 * (ja - base)
    for canonical in (Q0, UP1, "model.norm.weight"):
        b, v, j = base[canonical], source[native(canonical, layout)], ja[canonical]
        torch.testing.assert_close(merged[native(canonical, layout)], b + 1.0 * (v - b) + 0.5 * (j - b),
                                   rtol=0, atol=1e-6)
    # vocabulary: the shared rows are merged, the VLM's 8 extra rows are the target's, exactly
    for canonical in VOCAB:
        key = native(canonical, layout)
        assert merged[key].shape == (VLM_ROWS, 32)
        b, v, j = base[canonical], source[key][:LLM_ROWS], ja[canonical]
        torch.testing.assert_close(merged[key][:LLM_ROWS], b + 1.0 * (v - b) + 0.5 * (j - b), rtol=0, atol=1e-6)
        assert bit_equal(merged[key][LLM_ROWS:], source[key][LLM_ROWS:])

    # tokenizer/processor files, config, recipe and card come along
    for name in ("config.json", "tokenizer.json", "processor_config.json", "chat_template.jinja",
                 "evovlm_recipe.yaml", "README.md"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text()) == json.loads((vlm / "config.json").read_text())

    # it loads as an image-text-to-text model without missing weights, and generates from an image
    model, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(model).__name__ == ("LlavaNextForConditionalGeneration" if variant == "llava-next"
                                    else "LlavaForConditionalGeneration")
    loaded = model.state_dict()
    assert torch.equal(loaded[native(Q0, "memory")], merged[native(Q0, layout)])
    assert torch.equal(loaded["lm_head.weight"], merged[native("lm_head.weight", layout)])
    processor = AutoProcessor.from_pretrained(out)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "何色?"}]}],
        add_generation_prompt=True)
    inputs = processor(images=Image.new("RGB", (40, 30), (220, 30, 30)), text=prompt, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    assert prompt_length < generated.shape[1] <= prompt_length + 3
    assert isinstance(processor.batch_decode(generated[:, prompt_length:], skip_special_tokens=True)[0], str)


def test_both_layouts_give_the_same_language_tower(family, vlm_dirs, tmp_path):
    # DARE masks are keyed by canonical names, so the layout of the files cannot change the result
    outs = {layout: tensors(merge_checkpoints(recipe_from_dict(dare_recipe(family, vlm_dirs[("llava", layout)])),
                                              tmp_path / layout, progress=False))
            for layout in ("saved", "memory")}
    for key, value in outs["saved"].items():
        canonical = canonical_of(key, "saved")
        other = native(canonical, "memory") if canonical else _to_memory_key(key)
        assert bit_equal(outs["memory"][other], value), key


# --------------------------------------------------------------------------------------
# Llama
# --------------------------------------------------------------------------------------

def _reference_ties(base, sources, weights, density):
    deltas = []
    for source, weight in zip(sources, weights):
        delta = (source - base).flatten()
        mask = torch.zeros_like(delta)
        mask[torch.topk(delta.abs(), int(density * delta.numel())).indices] = 1
        deltas.append(delta * mask * weight)
    stacked = torch.stack(deltas)
    sign = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = torch.sign(stacked) == sign
    divisor = (torch.tensor(weights).unsqueeze(1) * agree).sum(0)
    divisor[divisor == 0] = 1
    return base + ((stacked * agree).sum(0) / divisor).reshape(base.shape)


def test_llama_family_merges(llama_family, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = recipe_from_dict({"method": "ties", "base_model": str(llama_family["base"]),
                               "models": [{"model": str(llama_family["a"]), "weight": 1.0, "density": 0.5},
                                          {"model": str(llama_family["b"]), "weight": 0.5, "density": 0.5}]})
    out = merge_checkpoints(recipe, tmp_path / "merged", progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    merged, base, a, b = (tensors(p) for p in (out, llama_family["base"], llama_family["a"], llama_family["b"]))
    assert set(merged) == set(base)
    for name in (Q0, "model.layers.1.self_attn.v_proj.weight", "lm_head.weight"):
        torch.testing.assert_close(merged[name], _reference_ties(base[name], [a[name], b[name]], [1.0, 0.5], 0.5),
                                   rtol=0, atol=1e-6)
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        generated = model.generate(torch.tensor([[1, 40, 41, 42]]), max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > 4


# --------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------

def test_dare_ties_merge_is_bit_identical_across_runs_and_workers(family, tmp_path):
    recipe = recipe_from_dict(dare_recipe(family, family["llava"], seed=5))
    outs = [merge_checkpoints(recipe, tmp_path / "run1", progress=False, workers=1),
            merge_checkpoints(recipe, tmp_path / "run2", progress=False, workers=1),
            merge_checkpoints(recipe, tmp_path / "par2", progress=False, workers=2),
            merge_checkpoints(recipe, tmp_path / "par3", progress=False, workers=3)]
    first = outs[0] / "model.safetensors"
    for out in outs[1:]:
        assert filecmp.cmp(first, out / "model.safetensors", shallow=False), out
    # the DARE masks really depend on the seed
    other = merge_checkpoints(recipe_from_dict(dare_recipe(family, family["llava"], seed=6)), tmp_path / "seed6",
                              progress=False)
    assert not filecmp.cmp(first, other / "model.safetensors", shallow=False)
    merged, seed6 = tensors(outs[0]), tensors(other)
    assert not torch.equal(merged[native(Q0, "saved")], seed6[native(Q0, "saved")])
    assert torch.equal(merged["vision_tower.embeddings.patch_embedding.weight"],
                       seed6["vision_tower.embeddings.patch_embedding.weight"])


# --------------------------------------------------------------------------------------
# Sharding, output and input
# --------------------------------------------------------------------------------------

def test_sharded_output_has_a_correct_index_and_loads(family, tmp_path, capsys):
    from transformers import AutoModelForImageTextToText

    config = write_recipe(tmp_path / "r.yaml", ta_recipe(family, family["llava-next"]))
    out = tmp_path / "sharded"
    code, stdout, err = run_cli(capsys, str(config), "--out", str(out), "--shard-size", "45KB", "--quiet")
    assert code == 0, err
    assert "merged 2 model(s) with task_arithmetic" in stdout
    files = sorted(p.name for p in out.glob("*.safetensors"))
    count = len(files)
    assert count > 2
    assert files == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    weight_map = index["weight_map"]
    total = 0
    for file in files:
        with safe_open(str(out / file), framework="pt") as handle:
            keys = list(handle.keys())
            assert keys, file
            sizes = [handle.get_tensor(k).numel() * handle.get_tensor(k).element_size() for k in keys]
        assert all(weight_map[k] == file for k in keys)
        assert sum(sizes) <= 45_000 or len(keys) == 1  # a shard only overflows with one big tensor
        total += sum(sizes)
    assert set(weight_map) == set(tensors(family["llava-next"]))
    assert index["metadata"]["total_size"] == total

    single = merge_checkpoints(recipe_from_dict(ta_recipe(family, family["llava-next"])), tmp_path / "single",
                               progress=False)
    assert [p.name for p in single.glob("*.safetensors")] == ["model.safetensors"]
    assert not (single / "model.safetensors.index.json").exists()
    unsharded = tensors(single)
    assert all(bit_equal(tensors(out)[k], v) for k, v in unsharded.items())
    model, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(model.state_dict()["model.image_newline"], unsharded["image_newline"])


def test_sharded_sources_are_read(family, tmp_path):
    from transformers import AutoModelForCausalLM

    sharded = {}
    for name in ("base", "ja"):
        sharded[name] = tmp_path / f"{name}-sharded"
        AutoModelForCausalLM.from_pretrained(family[name]).save_pretrained(sharded[name], max_shard_size="50KB")
        assert (sharded[name] / "model.safetensors.index.json").is_file()
        assert len(list(sharded[name].glob("model-*.safetensors"))) > 1
        assert set(Checkpoint(sharded[name]).keys()) == set(Checkpoint(family[name]).keys())

    def recipe(base, ja):
        return recipe_from_dict({"method": "task_arithmetic", "base_model": str(base), "target": str(family["llava"]),
                                 "models": [{"model": str(family["llava"]), "weight": 1.0},
                                            {"model": str(ja), "weight": 0.5}]})

    from_sharded = tensors(merge_checkpoints(recipe(sharded["base"], sharded["ja"]), tmp_path / "a", progress=False))
    from_single = tensors(merge_checkpoints(recipe(family["base"], family["ja"]), tmp_path / "b", progress=False))
    assert set(from_sharded) == set(from_single)
    assert all(bit_equal(from_sharded[k], v) for k, v in from_single.items())


def test_output_dtype(family, tmp_path):
    data = ta_recipe(family, family["llava"])
    data["dtype"] = "bfloat16"
    out = merge_checkpoints(recipe_from_dict(data), tmp_path / "bf16", progress=False)
    merged = tensors(out)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    fp32 = tensors(merge_checkpoints(recipe_from_dict(ta_recipe(family, family["llava"])), tmp_path / "fp32",
                                     progress=False))
    language = [k for k in fp32 if canonical_of(k, "saved") is not None]
    assert len(language) == LANGUAGE_TENSORS
    for key in language:
        assert merged[key].dtype == torch.bfloat16, key
        assert torch.equal(merged[key], fp32[key].to(torch.bfloat16)), key


def test_output_dtype_applies_to_every_floating_tensor(family, tmp_path):
    data = ta_recipe(family, family["llava"])
    data["dtype"] = "bfloat16"
    merged = tensors(merge_checkpoints(recipe_from_dict(data), tmp_path / "bf16", progress=False))
    assert {t.dtype for t in merged.values() if t.is_floating_point()} == {torch.bfloat16}


# --------------------------------------------------------------------------------------
# Bad inputs: clear errors, nothing left behind
# --------------------------------------------------------------------------------------

def _base_recipe(family, model, **extra) -> dict:
    return {"method": "task_arithmetic", "base_model": str(family["base"]),
            "models": [{"model": str(model), "weight": 0.5}], **extra}


def _copy(family, tmp_path, name="ja") -> Path:
    copy = tmp_path / f"{name}-copy"
    shutil.copytree(family[name], copy)
    return copy


def _case_missing_dir(family, mismatched, tmp_path, monkeypatch):
    return _base_recipe(family, tmp_path / "no-such-model"), ["does not exist", "no-such-model"]


def _case_no_config(family, mismatched, tmp_path, monkeypatch):
    copy = _copy(family, tmp_path)
    (copy / "config.json").unlink()
    return _base_recipe(family, copy), ["no config.json"]


def _case_bad_config_json(family, mismatched, tmp_path, monkeypatch):
    copy = _copy(family, tmp_path)
    (copy / "config.json").write_text("{not json")
    return _base_recipe(family, copy), ["config.json", "not valid JSON"]


def _case_repo_not_cached(family, mismatched, tmp_path, monkeypatch):
    import huggingface_hub.constants

    home = tmp_path / "empty-hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.chdir(tmp_path)  # so that the repo id cannot be a relative directory
    return _base_recipe(family, "evovlm-tests/not-in-any-cache"), [
        "'evovlm-tests/not-in-any-cache'", "not", "local Hugging Face cache", str(home / "hub")]


def _case_hidden_size(family, mismatched, tmp_path, monkeypatch):
    return _base_recipe(family, mismatched["wide"]), ["hidden size", "64", "32", "wide"]


def _case_layer_count(family, mismatched, tmp_path, monkeypatch):
    return _base_recipe(family, mismatched["deep"]), ["decoder layers", "3", "2", "deep"]


def _case_tensor_shape(family, mismatched, tmp_path, monkeypatch):
    copy = _copy(family, tmp_path)
    state = load_file(copy / "model.safetensors")
    state[UP1] = torch.zeros(65, 32)
    save_file(state, copy / "model.safetensors", metadata={"format": "pt"})
    return _base_recipe(family, copy), [UP1, "(65, 32)", "(64, 32)"]


def _case_missing_tensor(family, mismatched, tmp_path, monkeypatch):
    copy = _copy(family, tmp_path)
    state = load_file(copy / "model.safetensors")
    del state[UP1]
    save_file(state, copy / "model.safetensors", metadata={"format": "pt"})
    return _base_recipe(family, copy), [UP1, "missing", "ja-copy"]


def _case_truncated(family, mismatched, tmp_path, monkeypatch):
    copy = _copy(family, tmp_path)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    return _base_recipe(family, copy), ["model.safetensors", "corrupt or truncated"]


def _case_garbage(family, mismatched, tmp_path, monkeypatch):
    copy = _copy(family, tmp_path)
    (copy / "model.safetensors").write_bytes(b"\x00garbage!" * 1000)
    return _base_recipe(family, copy), ["model.safetensors", "corrupt or truncated"]


def _case_missing_shard(family, mismatched, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "ja-sharded"
    AutoModelForCausalLM.from_pretrained(family["ja"]).save_pretrained(sharded, max_shard_size="50KB")
    victim = sorted(sharded.glob("model-*.safetensors"))[-1]
    victim.unlink()
    return _base_recipe(family, sharded), [victim.name, "missing"]


def _make_pickle_dir(family, tmp_path) -> Path:
    directory = tmp_path / "ja-pickle"
    directory.mkdir()
    shutil.copy(family["ja"] / "config.json", directory / "config.json")
    torch.save(load_file(family["ja"] / "model.safetensors"), directory / "pytorch_model.bin")
    return directory


def _case_pickle_only(family, mismatched, tmp_path, monkeypatch):
    return _base_recipe(family, _make_pickle_dir(family, tmp_path)), ["pytorch_model.bin", "pickle",
                                                                      "--allow-pickle"]


def _case_unsupported_architecture(family, mismatched, tmp_path, monkeypatch):
    copy = _copy(family, tmp_path)
    config = json.loads((copy / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (copy / "config.json").write_text(json.dumps(config))
    return _base_recipe(family, copy), ["GPT2LMHeadModel", "not supported"]


def _case_unknown_method(family, mismatched, tmp_path, monkeypatch):
    return {**_base_recipe(family, family["ja"]), "method": "slerp"}, ["unknown merge method 'slerp'"]


def _case_density_too_high(family, mismatched, tmp_path, monkeypatch):
    data = _base_recipe(family, family["ja"], method="ties")
    data["models"][0]["density"] = 1.5
    return data, ["models[0].density: 1.5 outside [0, 1]"]


def _case_density_negative(family, mismatched, tmp_path, monkeypatch):
    data = _base_recipe(family, family["ja"], method="dare_ties")
    data["models"][0]["density"] = {"default": 0.5, "layers.1": -0.2}
    return data, ["-0.2 outside [0, 1]"]


def _case_unknown_recipe_key(family, mismatched, tmp_path, monkeypatch):
    return _base_recipe(family, family["ja"], modles=[]), ["unknown key(s) modles; known: base_model"]


def _case_invalid_yaml(family, mismatched, tmp_path, monkeypatch):
    return "method: ties\nmodels: [unclosed\n  - {model: x", ["not valid YAML"]


def _case_unknown_dtype(family, mismatched, tmp_path, monkeypatch):
    return _base_recipe(family, family["ja"], dtype="float8"), ["dtype: input should be", "got 'float8'"]


BAD_INPUTS = {name[len("_case_"):]: fn for name, fn in dict(globals()).items() if name.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_a_clear_error_and_leaves_nothing(case, family, mismatched, tmp_path, monkeypatch, capsys):
    recipe, expected = BAD_INPUTS[case](family, mismatched, tmp_path, monkeypatch)
    config = tmp_path / "recipe.yaml"
    if isinstance(recipe, str):
        config.write_text(recipe, encoding="utf-8")
    else:
        write_recipe(config, recipe)
    out = tmp_path / "merged"

    # library: EvoVLMError
    with pytest.raises(EvoVLMError) as raised:
        merge_checkpoints(load_recipe(config), out, progress=False)
    for text in expected:
        assert text in str(raised.value), (text, str(raised.value))
    assert_nothing_left(out)

    # CLI: exit code 2, the message on stderr, no traceback
    code, stdout, err = run_cli(capsys, str(config), "--out", str(out), "--quiet")
    assert code == 2
    assert err.startswith("evovlm merge: error: ")
    for text in expected:
        assert text in err, (text, err)
    assert "Traceback" not in err
    assert_nothing_left(out)


def test_cli_usage_errors(family, tmp_path, capsys):
    config = write_recipe(tmp_path / "r.yaml", _base_recipe(family, family["ja"]))
    code, _, err = run_cli(capsys, str(config))
    assert code == 2 and "--out DIR is required" in err
    code, _, err = run_cli(capsys, str(config), "--out", str(tmp_path / "o"), "--workers", "0")
    assert code == 2 and "argument --workers: must be at least 1, got 0" in err
    code, _, err = run_cli(capsys, str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o"))
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, str(config), "--out", str(tmp_path / "o"), "--shard-size", "lots")
    assert code == 2 and "cannot read size 'lots'" in err
    assert_nothing_left(tmp_path / "o")


def test_pickle_checkpoints_are_accepted_with_allow_pickle(family, tmp_path, capsys):
    pickled = _make_pickle_dir(family, tmp_path)
    config = write_recipe(tmp_path / "r.yaml", _base_recipe(family, pickled))
    code, _, err = run_cli(capsys, str(config), "--out", str(tmp_path / "refused"), "--quiet")
    assert code == 2 and "--allow-pickle" in err
    assert_nothing_left(tmp_path / "refused")
    code, _, err = run_cli(capsys, str(config), "--out", str(tmp_path / "pickled"), "--allow-pickle", "--quiet")
    assert code == 0, err
    reference = merge_checkpoints(recipe_from_dict(_base_recipe(family, family["ja"])), tmp_path / "safe",
                                  progress=False)
    from_pickle, from_safe = tensors(tmp_path / "pickled"), tensors(reference)
    assert set(from_pickle) == set(from_safe)
    assert all(bit_equal(from_pickle[k], v) for k, v in from_safe.items())


def test_existing_output_needs_overwrite_and_overwrite_replaces_it(family, tmp_path, capsys):
    config = write_recipe(tmp_path / "r.yaml", _base_recipe(family, family["ja"]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, _, err = run_cli(capsys, str(config), "--out", str(out), "--quiet")
    assert code == 2
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert sorted(os.listdir(out)) == ["precious.txt"] and (out / "precious.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []
    with pytest.raises(EvoVLMError, match="already exists"):
        merge_checkpoints(load_recipe(config), out, progress=False)

    # --overwrite replaces an earlier merge output only, never a folder of the user's own files
    code, _, err = run_cli(capsys, str(config), "--out", str(out), "--overwrite", "--quiet")
    assert code == 2 and "not an evovlm output" in err and "nothing was deleted" in err
    assert sorted(os.listdir(out)) == ["precious.txt"] and (out / "precious.txt").read_text() == "keep me"
    merged = tmp_path / "merged"
    assert run_cli(capsys, str(config), "--out", str(merged), "--quiet")[0] == 0
    first = (merged / "model.safetensors").stat().st_ino
    code, _, err = run_cli(capsys, str(config), "--out", str(merged), "--overwrite", "--quiet", "--seed", "3")
    assert code == 0, err
    assert (merged / "model.safetensors").stat().st_ino != first \
        and "seed: 3" in (merged / "evovlm_recipe.yaml").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".out.", ".merged."))] == []

    # an existing but empty directory is fine without --overwrite
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, str(config), "--out", str(empty), "--quiet")
    assert code == 0, err
    assert (empty / "model.safetensors").is_file()


def _fail_on_call(monkeypatch, number: int, exception: BaseException) -> list[int]:
    real = engine.merge_tensor
    calls: list[int] = []
    lock = threading.Lock()

    def flaky(*args, **kwargs):
        with lock:
            calls.append(1)
            count = len(calls)
        if count == number:
            raise exception
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "merge_tensor", flaky)
    return calls


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_midway_leaves_nothing(family, tmp_path, monkeypatch, workers):
    calls = _fail_on_call(monkeypatch, 5, RuntimeError("disk on fire"))
    out = tmp_path / "merged"
    with pytest.raises(RuntimeError, match="disk on fire"):
        # small shards: some were already written to the temporary directory when the failure hits
        merge_checkpoints(recipe_from_dict(ta_recipe(family, family["llava"])), out, max_shard_bytes=20_000,
                          workers=workers, progress=False)
    assert len(calls) >= 5
    assert_nothing_left(out)


def test_failure_midway_with_overwrite_keeps_the_old_output(family, tmp_path, monkeypatch):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "evovlm_recipe.yaml").write_text("method: linear\n")  # an earlier merge output
    _fail_on_call(monkeypatch, 5, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        merge_checkpoints(recipe_from_dict(ta_recipe(family, family["llava"])), out, overwrite=True, progress=False)
    assert sorted(os.listdir(out)) == ["evovlm_recipe.yaml", "old.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".merged.")] == []


def test_ctrl_c_midway_via_cli_leaves_nothing(family, tmp_path, monkeypatch, capsys):
    _fail_on_call(monkeypatch, 5, KeyboardInterrupt())
    config = write_recipe(tmp_path / "r.yaml", ta_recipe(family, family["llava"]))
    out = tmp_path / "merged"
    code, _, err = run_cli(capsys, str(config), "--out", str(out), "--quiet", "--workers", "2")
    assert code == 130 and "interrupted" in err
    assert_nothing_left(out)


# --------------------------------------------------------------------------------------
# In-memory API
# --------------------------------------------------------------------------------------

def _language_and_other(module_state, disk, source):
    """Compare a module's state with a disk merge (saved layout) and the source VLM."""
    for key, value in disk.items():
        memory_key = _to_memory_key(key)
        if canonical_of(key, "saved") is not None:
            assert bit_equal(module_state[memory_key], value), key
        else:
            assert bit_equal(module_state[memory_key], source[key]), key  # vision tower untouched


def _recipes(family, vlm):
    recipe_a = recipe_from_dict(ta_recipe(family, vlm, 1.0, 0.5))
    recipe_b = recipe_from_dict({"method": "dare_ties", "base_model": str(family["base"]), "target": str(vlm),
                                 "seed": 11, "models": [{"model": str(vlm), "weight": 0.7, "density": 0.6},
                                                        {"model": str(family["ja"]), "weight": 0.4,
                                                         "density": 0.5}]})
    return recipe_a, recipe_b


@pytest.mark.parametrize("variant", ["llava", "llava-next"])
def test_in_memory_merge_equals_the_disk_merge(family, tmp_path, variant):
    from transformers import AutoModelForImageTextToText

    vlm = family[variant]
    source = tensors(vlm)
    for name, recipe in zip("ab", _recipes(family, vlm)):
        disk = tensors(merge_checkpoints(recipe, tmp_path / name, progress=False))
        module = AutoModelForImageTextToText.from_pretrained(vlm)
        resident = ResidentSources.load(recipe)
        assert merge_into_module(module, recipe, resident) == LANGUAGE_TENSORS
        _language_and_other(module.state_dict(), disk, source)


def test_re_merging_into_the_same_module_leaves_no_module_state(family, tmp_path):
    # Only the module is reused here (fresh ResidentSources for every merge, which sidesteps the
    # resident-corruption bug below): each merge must give exactly its recipe's disk result.
    from transformers import AutoModelForImageTextToText

    vlm = family["llava-next"]
    source = tensors(vlm)
    recipe_a, recipe_b = _recipes(family, vlm)
    disk_a = tensors(merge_checkpoints(recipe_a, tmp_path / "a", progress=False))
    disk_b = tensors(merge_checkpoints(recipe_b, tmp_path / "b", progress=False))
    module = AutoModelForImageTextToText.from_pretrained(vlm)
    for recipe, disk in ((recipe_a, disk_a), (recipe_b, disk_b), (recipe_a, disk_a)):
        merge_into_module(module, recipe, ResidentSources.load(recipe))
        _language_and_other(module.state_dict(), disk, source)


def test_held_dare_draws_give_the_merge_drawn_afresh(family, tmp_path):
    """An evolution on a GPU holds DARE's draws across candidates (DrawStore): each candidate, whatever
    its densities, is the merge a fresh draw gives, and the disk merge of its recipe."""
    from transformers import AutoModelForImageTextToText

    from evovlm.merge.engine import DrawStore

    vlm = family["llava-next"]
    _, recipe = _recipes(family, vlm)
    denser = recipe_from_dict({"method": "dare_ties", "base_model": str(family["base"]), "target": str(vlm),
                               "seed": 11, "models": [{"model": str(vlm), "weight": 0.7, "density": 0.9},
                                                      {"model": str(family["ja"]), "weight": 0.4, "density": 0.2}]})
    module = AutoModelForImageTextToText.from_pretrained(vlm)
    resident = ResidentSources.load(recipe)
    resident.dare_draws = DrawStore()
    for step, candidate in enumerate((recipe, denser, recipe)):
        merge_into_module(module, candidate, resident)
        disk = tensors(merge_checkpoints(candidate, tmp_path / str(step), progress=False))
        _language_and_other(module.state_dict(), disk, tensors(vlm))
    assert len(resident.dare_draws.held) == 2 * LANGUAGE_TENSORS  # drawn once per (tensor, source)


def test_pinning_releases_each_original_once_copied():
    """Sources moved to pinned memory never need twice their size; where page-locking is refused (here:
    no GPU) the tensors stay in plain memory, which streams too."""
    base = {"w": torch.arange(6.0)}
    sources = [{"w": torch.ones(6)}, {"w": torch.zeros(6)}]
    pinned = ResidentSources(base, sources).pinned(release=True)
    assert base == {} and sources == [{}, {}]
    assert pinned.base["w"].equal(torch.arange(6.0)) and [s["w"].sum().item() for s in pinned.sources] == [6.0, 0.0]
    kept = {"w": torch.ones(2)}
    assert ResidentSources(None, [kept]).pinned().sources[0]["w"].equal(kept["w"]) and "w" in kept


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the device check runs it)")
def test_pinned_sources_stream_into_a_gpu_model_as_resident_ones_do(family):
    """Sources too big for the GPU stay in pinned CPU memory and are merged on the GPU, tensor by tensor:
    the same numbers as with the sources on the GPU, and no tensor left on the CPU."""
    from transformers import AutoModelForImageTextToText

    vlm = family["llava-next"]
    _, recipe = _recipes(family, vlm)  # DARE-TIES: random drops and a sign election
    on_gpu = AutoModelForImageTextToText.from_pretrained(vlm).cuda()
    merge_into_module(on_gpu, recipe, ResidentSources.load(recipe, device="cuda"))
    streamed = AutoModelForImageTextToText.from_pretrained(vlm).cuda()
    pinned = ResidentSources.load(recipe).pinned()
    assert all(t.is_pinned() for t in pinned.sources[0].values())
    assert merge_into_module(streamed, recipe, pinned) == LANGUAGE_TENSORS
    for name, tensor in streamed.state_dict().items():
        assert tensor.device.type == "cuda" and bit_equal(tensor.cpu(), on_gpu.state_dict()[name].cpu()), name
    placed = ResidentSources.load(recipe).placed_for(torch.device("cuda"))  # what an evolution's actor holds
    assert placed.dare_draws is not None and placed.sources[0][next(iter(placed.sources[0]))].is_cuda
    merge_into_module(streamed, recipe, placed)
    assert placed.dare_draws.held and all(d.shifted.is_cuda for d in placed.dare_draws.held.values())
    for name, tensor in streamed.state_dict().items():
        assert bit_equal(tensor.cpu(), on_gpu.state_dict()[name].cpu()), name


def test_in_memory_merge_refuses_a_recipe_of_another_size(family):
    from transformers import AutoModelForImageTextToText

    recipe_a, _ = _recipes(family, family["llava"])
    resident = ResidentSources.load(recipe_a)
    one_model = recipe_from_dict({"method": "task_arithmetic", "base_model": str(family["base"]),
                                  "models": [{"model": str(family["ja"])}]})
    module = AutoModelForImageTextToText.from_pretrained(family["llava"])
    with pytest.raises(EvoVLMError, match="1 models but 2 are resident"):
        merge_into_module(module, one_model, resident)


def test_re_merging_into_the_same_module_gives_each_recipes_disk_result(family, tmp_path):
    from transformers import AutoModelForImageTextToText

    vlm = family["llava"]
    source = tensors(vlm)
    recipe_a, recipe_b = _recipes(family, vlm)
    disk_a = tensors(merge_checkpoints(recipe_a, tmp_path / "a", progress=False))
    disk_b = tensors(merge_checkpoints(recipe_b, tmp_path / "b", progress=False))
    module = AutoModelForImageTextToText.from_pretrained(vlm)
    resident = ResidentSources.load(recipe_a)  # the same models, loaded once for both recipes
    merge_into_module(module, recipe_a, resident)
    _language_and_other(module.state_dict(), disk_a, source)
    merge_into_module(module, recipe_b, resident)
    _language_and_other(module.state_dict(), disk_b, source)
    merge_into_module(module, recipe_a, resident)
    _language_and_other(module.state_dict(), disk_a, source)


# --------------------------------------------------------------------------------------
# Regressions of bugs found in review
# --------------------------------------------------------------------------------------

def test_a_target_missing_a_language_tensor_is_refused(family, tmp_path):
    target = tmp_path / "llava-missing"
    shutil.copytree(family["llava"], target)
    state = load_file(target / "model.safetensors")
    del state["language_model.model.layers.1.mlp.up_proj.weight"]
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "merged"
    with pytest.raises(EvoVLMError, match="up_proj"):
        merge_checkpoints(recipe_from_dict(ta_recipe(family, target)), out, progress=False)
    assert_nothing_left(out)


def test_a_target_with_fewer_vocab_rows_than_all_participants(family, tmp_path):
    recipe = recipe_from_dict({"method": "task_arithmetic", "base_model": str(family["llava"]),
                               "target": str(family["ja"]), "models": [{"model": str(family["llava-next"])}]})
    # the rows every participant has are merged; the output keeps the target's (smaller) row count
    out = merge_checkpoints(recipe, tmp_path / "merged", progress=False)
    merged, base, source = tensors(out), tensors(family["llava"]), tensors(family["llava-next"])
    for canonical in VOCAB:
        assert merged[canonical].shape == (LLM_ROWS, 32)
        b, s = base[native(canonical, "saved")][:LLM_ROWS], source[native(canonical, "saved")][:LLM_ROWS]
        torch.testing.assert_close(merged[canonical], b + (s - b), rtol=0, atol=1e-6)


def test_cli_overrides_are_recorded_in_the_saved_recipe(family, tmp_path, capsys):
    config = write_recipe(tmp_path / "r.yaml", dare_recipe(family, family["llava"], seed=0))
    out = tmp_path / "merged"
    code, _, err = run_cli(capsys, str(config), "--out", str(out), "--seed", "7", "--quiet")
    assert code == 0, err
    assert load_recipe(out / "evovlm_recipe.yaml").seed == 7


def test_saved_recipe_reproduces_the_merge(family, tmp_path, capsys):
    config = write_recipe(tmp_path / "r.yaml", dare_recipe(family, family["llava"], seed=3))
    out = tmp_path / "merged"
    code, _, err = run_cli(capsys, str(config), "--out", str(out), "--quiet")
    assert code == 0, err
    saved = load_recipe(out / "evovlm_recipe.yaml")
    assert saved == load_recipe(config)
    again = merge_checkpoints(saved, tmp_path / "again", progress=False)
    assert filecmp.cmp(out / "model.safetensors", again / "model.safetensors", shallow=False)
    assert "dare_ties" in (out / "README.md").read_text()


# --------------------------------------------------------------------------------------
# What a newcomer sees in the output folder
# --------------------------------------------------------------------------------------

def test_outputs_get_the_umask_permissions(family, tmp_path):
    previous = os.umask(0o022)
    try:
        out = merge_checkpoints(recipe_from_dict(ta_recipe(family, family["llava"])), tmp_path / "merged",
                                progress=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in out.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def _front_matter(card: Path) -> dict:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_model_card_front_matter_builds_the_hub_model_tree(family, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    for repo_id, name in (("tests-org/tiny-base", "base"), ("tests-org/tiny-llava", "llava")):
        files = {p.name: "" for p in family[name].iterdir()}
        snapshot = fake_hf_repo(cache, repo_id, files, kind="models")
        for path in family[name].iterdir():
            shutil.copy2(path, snapshot / path.name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    vlm_recipe = {"method": "task_arithmetic", "base_model": "tests-org/tiny-base", "target": "tests-org/tiny-llava",
                  "models": [{"model": "tests-org/tiny-llava", "weight": 1.0},
                             {"model": str(family["ja"]), "weight": 0.5}]}  # a local folder has no Hub page
    out = merge_checkpoints(recipe_from_dict(vlm_recipe), tmp_path / "vlm", progress=False)
    meta = _front_matter(out / "README.md")
    assert meta["base_model"] == ["tests-org/tiny-llava", "tests-org/tiny-base"]
    assert meta["base_model_relation"] == "merge" and meta["pipeline_tag"] == "image-text-to-text"
    assert meta["library_name"] == "transformers" and "merge" in meta["tags"]

    lm_recipe = {"method": "ties", "base_model": str(family["base"]),
                 "models": [{"model": str(family["ja"]), "weight": 0.5, "density": 0.5},
                            {"model": str(family["math"]), "weight": 0.5, "density": 0.5}]}
    meta = _front_matter(merge_checkpoints(recipe_from_dict(lm_recipe), tmp_path / "lm", progress=False) / "README.md")
    assert meta["pipeline_tag"] == "text-generation" and "base_model" not in meta  # local sources only
