"""Recipes: EvoVLM's own YAML format with per-layer-group parameters, mergekit import and export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evovlm.arch import layer_group
from evovlm.cli import main
from evovlm.errors import EvoVLMError
from evovlm.merge.recipe import Recipe, SourceSpec, load_recipe, recipe_from_dict, resolve_param, to_mergekit


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from evovlm.tiny import build_tiny_family

    return build_tiny_family(tmp_path_factory.mktemp("family"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for file in sorted(Path(directory).glob("*.safetensors")):
        out.update(load_file(file))
    return out


# --------------------------------------------------------------------------------------
# Layer-group selectors
# --------------------------------------------------------------------------------------

def test_layer_groups_of_canonical_names():
    assert layer_group("model.embed_tokens.weight") == "embed"
    assert layer_group("model.norm.weight") == "norm"
    assert layer_group("lm_head.weight") == "lm_head"
    assert layer_group("model.layers.0.self_attn.q_proj.weight") == "layers.0"
    assert layer_group("model.layers.17.mlp.up_proj.weight") == "layers.17"


FULL = {"default": 0.1, "embed": 0.2, "norm": 0.3, "lm_head": 0.4, "layers": 0.5,
        "layers.0-7": 0.6, "layers.2-3": 0.7, "layers.3": 0.8, "layers.10-20": 0.9}


@pytest.mark.parametrize("group, expected", [
    ("embed", 0.2), ("norm", 0.3), ("lm_head", 0.4),   # named groups
    ("layers.3", 0.8),                                  # layers.N beats every range
    ("layers.2", 0.7),                                  # in 0-7 and 2-3: the narrowest (2-3) wins
    ("layers.0", 0.6), ("layers.7", 0.6),               # range bounds are inclusive
    ("layers.8", 0.5), ("layers.9", 0.5),               # in no range: 'layers'
    ("layers.10", 0.9), ("layers.20", 0.9), ("layers.21", 0.5),
    ("other", 0.1),                                     # anything else: default
])
def test_selector_resolution(group, expected):
    assert resolve_param(FULL, group) == expected


def test_narrowest_range_wins_whatever_the_order():
    # the same ranges listed narrow-first and wide-first
    assert resolve_param({"layers.4-5": 2.0, "layers.0-31": 1.0, "default": 0.0}, "layers.5") == 2.0
    assert resolve_param({"layers.0-31": 1.0, "layers.4-5": 2.0, "default": 0.0}, "layers.5") == 2.0
    assert resolve_param({"layers.0-31": 1.0, "layers.4-5": 2.0, "default": 0.0}, "layers.6") == 1.0
    # a range is more specific than 'layers'; 'layers' more specific than default
    assert resolve_param({"layers": 3.0, "layers.0-1": 4.0, "default": 0.0}, "layers.1") == 4.0
    assert resolve_param({"layers": 3.0, "default": 0.0}, "layers.1") == 3.0
    assert resolve_param({"layers": 3.0, "default": 0.0}, "embed") == 0.0


def test_scalars_and_missing_defaults():
    assert resolve_param(0.25, "layers.3") == 0.25
    assert resolve_param(1, "embed") == 1.0
    with pytest.raises(EvoVLMError, match="no value for layer group 'embed'.*default"):
        resolve_param({"layers": 1.0}, "embed")
    with pytest.raises(EvoVLMError, match="layers.9"):
        resolve_param({"layers.0-3": 1.0}, "layers.9")


def test_recipe_value_uses_the_selectors():
    recipe = recipe_from_dict({
        "method": "ties", "base_model": "b",
        "models": [{"model": "x", "weight": {"default": 1.0, "layers.1": 0.25}, "density": {"default": 0.5,
                                                                                          "embed": 1.0}},
                   {"model": "y", "weight": 0.75}]})
    assert recipe.value(0, "weight", "layers.1") == 0.25
    assert recipe.value(0, "weight", "layers.0") == 1.0
    assert recipe.value(0, "density", "embed") == 1.0
    assert recipe.value(0, "density", "layers.0") == 0.5
    assert recipe.value(1, "weight", "layers.1") == 0.75
    assert recipe.value(1, "density", "norm") == 1.0  # density defaults to 1


# --------------------------------------------------------------------------------------
# Own format: parsing and validation
# --------------------------------------------------------------------------------------

OWN = """\
method: dare-ties            # an alias
base_model: org/base
target: org/vlm
seed: 7
parameters: {lambda: 0.9, normalize: true, rescale: l1}
dtype: bfloat16
models:
  - model: org/vlm
    weight: 0.6
    density: {default: 0.5, embed: 1.0, layers.0-15: 0.4}
  - model: org/ja
    weight: {default: 0.3, layers: 0.4}
"""


def test_own_format_is_parsed(tmp_path):
    recipe = load_recipe(_write(tmp_path / "r.yaml", OWN))
    assert recipe.method == "dare_ties"
    assert recipe.base_model == "org/base" and recipe.target == "org/vlm" and recipe.target_ref() == "org/vlm"
    assert recipe.seed == 7 and recipe.dtype == "bfloat16" and recipe.origin == "evovlm"
    assert recipe.models == [
        SourceSpec(model="org/vlm", weight=0.6, density={"default": 0.5, "embed": 1.0, "layers.0-15": 0.4}),
        SourceSpec(model="org/ja", weight={"default": 0.3, "layers": 0.4}, density=1.0),
    ]
    assert recipe.method_options() == {"lam": 0.9, "normalize": True, "rescale": "l1"}


def test_target_defaults_to_the_base_then_the_first_model():
    assert recipe_from_dict({"method": "ties", "base_model": "b", "models": [{"model": "x"}]}).target_ref() == "b"
    assert recipe_from_dict({"method": "linear", "models": [{"model": "x"}, {"model": "y"}]}).target_ref() == "x"


def test_method_options_defaults():
    base = {"base_model": "b", "models": [{"model": "x"}]}
    assert recipe_from_dict({"method": "ties", **base}).method_options() == {"lam": 1.0}
    assert recipe_from_dict({"method": "dare_ties", "parameters": {"rescale": True}, **base}).method_options() == {
        "lam": 1.0, "rescale": "inverse"}
    assert recipe_from_dict({"method": "dare_ties", "parameters": {"rescale": False}, **base}).method_options() == {
        "lam": 1.0, "rescale": False}


def test_to_yaml_round_trips(tmp_path):
    recipe = load_recipe(_write(tmp_path / "r.yaml", OWN))
    again = recipe_from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe


@pytest.mark.parametrize("data, message", [
    ({"method": "slerp", "base_model": "b", "models": [{"model": "x"}]}, "unknown merge method 'slerp'"),
    ({"method": "ties", "models": [{"model": "x"}]}, "needs a base_model"),
    ({"method": "ties", "base_model": "b", "models": [{"model": "x", "density": 1.5}]},
     r"recipe: models\[0\]\.density: 1.5 outside \[0, 1\]"),
    ({"method": "ties", "base_model": "b", "models": [{"model": "x", "density": -0.1}]}, r"outside \[0, 1\]"),
    ({"method": "ties", "base_model": "b", "models": [{"model": "x", "density": {"default": 0.5, "layers.2": 2}}]},
     r"recipe: models\[0\]\.density\.layers\.2: 2.0 outside \[0, 1\]"),
    ({"method": "ties", "base_model": "b", "models": [{"model": "x"}], "mehtod": "ties"},
     r"recipe: unknown key\(s\) mehtod; known: base_model"),
    ({"method": "ties", "base_model": "b", "models": [{"model": "x", "wieght": 1}]},
     r"recipe: models\[0\]: unknown key\(s\) wieght"),
    ({"method": "ties", "base_model": "b", "models": [{"weight": 1}]}, r"recipe: models\[0\]\.model: missing"),
    ({"method": "ties", "base_model": "b", "models": []}, "non-empty list"),
    ({"base_model": "b", "models": [{"model": "x"}]}, "missing 'method'"),
    ({"method": "ties", "base_model": "b", "models": [{"model": "x", "weight": {"attn": 1}}]},
     "unknown layer-group selector 'attn'"),
    ({"method": "ties", "base_model": "b", "models": [{"model": "x", "weight": True}]}, "expected a number"),
    ({"method": "ties", "base_model": "b", "models": [{"model": "x", "weight": "heavy"}]}, "expected a number"),
    ({"method": "ties", "base_model": "b", "models": [{"model": "x"}], "parameters": {"lamda": 1}},
     r"unknown parameters \['lamda'\]"),
    ({"method": "dare_ties", "base_model": "b", "models": [{"model": "x"}], "parameters": {"rescale": "l2"}},
     "recipe: parameters.rescale: must be 'inverse', 'l1' or false, got 'l2'"),
    (["method", "ties"], "mapping at the top level"),
])
def test_bad_recipes_give_clear_errors(data, message):
    with pytest.raises(EvoVLMError, match=message):
        recipe_from_dict(data)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(EvoVLMError, match="not valid YAML"):
        load_recipe(_write(tmp_path / "bad.yaml", "method: [ties\nmodels: {"))
    with pytest.raises(EvoVLMError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("key", ["weight", "density"])
def test_nested_group_maps_are_rejected_with_a_clear_error(key):
    with pytest.raises(EvoVLMError):
        recipe_from_dict({"method": "ties", "base_model": "b",
                          "models": [{"model": "x", key: {"default": {"embed": 0.5}}}]})


@pytest.mark.parametrize("extra", [{"seed": "abc"}, {"parameters": [1]}])
def test_malformed_seed_or_parameters_give_clear_errors(extra):
    with pytest.raises(EvoVLMError):
        recipe_from_dict({"method": "ties", "base_model": "b", "models": [{"model": "x"}], **extra})


def test_reversed_layer_range_is_rejected():
    with pytest.raises(EvoVLMError):
        recipe_from_dict({"method": "ties", "base_model": "b",
                          "models": [{"model": "x", "weight": {"default": 1.0, "layers.5-2": 3.0}}]})


# --------------------------------------------------------------------------------------
# Per-group weights reach the merged tensors
# --------------------------------------------------------------------------------------

def test_per_group_weights_apply_to_the_right_layers(family, tmp_path):
    from evovlm.merge.engine import merge_checkpoints

    recipe = recipe_from_dict({
        "method": "task_arithmetic", "base_model": str(family["base"]),
        "models": [{"model": str(family["ja"]),
                    "weight": {"default": 0.0, "embed": 0.5, "layers": 0.75, "layers.1": 0.25}}]})
    out = merge_checkpoints(recipe, tmp_path / "out", progress=False)
    merged, base, ja = _tensors(out), _tensors(family["base"]), _tensors(family["ja"])
    for name, weight in [
        ("model.layers.0.self_attn.q_proj.weight", 0.75),   # 'layers'
        ("model.layers.0.mlp.down_proj.weight", 0.75),
        ("model.layers.1.self_attn.q_proj.weight", 0.25),   # 'layers.1' beats 'layers'
        ("model.layers.1.input_layernorm.weight", 0.25),
        ("model.embed_tokens.weight", 0.5),                 # 'embed'
        ("lm_head.weight", 0.0),                            # default
        ("model.norm.weight", 0.0),
    ]:
        expected = base[name] + weight * (ja[name] - base[name])
        torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6, msg=name)
    # the two layers really got different weights
    q0 = "model.layers.0.self_attn.q_proj.weight"
    q1 = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.allclose(merged[q0] - base[q0], 0.25 * (ja[q0] - base[q0]))
    assert not torch.allclose(merged[q1] - base[q1], 0.75 * (ja[q1] - base[q1]))
    assert torch.equal(merged["lm_head.weight"], base["lm_head.weight"])


def test_per_group_density_applies_to_the_right_layers(family, tmp_path):
    from evovlm.merge.engine import merge_checkpoints

    # ties with one source: density 0 keeps nothing (the base), density 1 keeps the whole task vector
    recipe = recipe_from_dict({
        "method": "ties", "base_model": str(family["base"]),
        "models": [{"model": str(family["ja"]), "weight": 1.0, "density": {"default": 1.0, "layers.0": 0.0}}]})
    merged = _tensors(merge_checkpoints(recipe, tmp_path / "out", progress=False))
    base, ja = _tensors(family["base"]), _tensors(family["ja"])
    name0, name1 = "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(merged[name0], base[name0])
    torch.testing.assert_close(merged[name1], ja[name1], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------
# mergekit import
# --------------------------------------------------------------------------------------

MERGEKIT = """\
merge_method: dare_ties
base_model: mistralai/Mistral-7B-v0.1
models:
  - model: mistralai/Mistral-7B-v0.1     # the base may be listed; it is dropped
  - model: augmxnt/shisa-gamma-7b-v1
    parameters: {weight: 0.5, density: 0.53}
  - model: WizardLM/WizardMath-7B-V1.1
    parameters:
      weight: 0.3
      density: 0.9
  - model: GAIR/Abel-7B-002
    parameters: {weight: 0.2}
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
"""


def test_mergekit_config_is_read(tmp_path):
    recipe = load_recipe(_write(tmp_path / "mk.yaml", MERGEKIT))
    assert recipe.origin == "mergekit"
    assert recipe.method == "dare_ties"
    assert recipe.base_model == "mistralai/Mistral-7B-v0.1"
    assert recipe.models == [SourceSpec(model="augmxnt/shisa-gamma-7b-v1", weight=0.5, density=0.53),
                             SourceSpec(model="WizardLM/WizardMath-7B-V1.1", weight=0.3, density=0.9),
                             SourceSpec(model="GAIR/Abel-7B-002", weight=0.2, density=1.0)]
    assert recipe.options == {"normalize": True}  # int8_mask only saves memory in mergekit
    assert recipe.dtype == "bfloat16"
    # mergekit's DARE rescales to the L1 norm by default
    assert recipe.method_options() == {"lam": 1.0, "normalize": True, "rescale": "l1"}


@pytest.mark.parametrize("value, expected", [(True, "l1"), (False, False)])
def test_mergekit_rescale_flag(value, expected):
    recipe = recipe_from_dict({"merge_method": "dare_linear", "base_model": "b", "parameters": {"rescale": value},
                               "models": [{"model": "x", "parameters": {"weight": 1.0, "density": 0.5}}]})
    assert recipe.method_options()["rescale"] == expected


def test_mergekit_ties_and_task_arithmetic_keep_their_defaults():
    ties = recipe_from_dict({"merge_method": "ties", "base_model": "b",
                             "models": [{"model": "x", "parameters": {"weight": 1.0, "density": 0.5}}]})
    assert ties.method == "ties" and ties.origin == "mergekit"
    assert ties.method_options() == {"lam": 1.0}  # rescale only concerns DARE methods
    ta = recipe_from_dict({"merge_method": "task_arithmetic", "base_model": "b", "parameters": {"lambda": 0.7},
                           "models": [{"model": "x", "parameters": {"weight": 1.0}}]})
    assert ta.method_options()["lam"] == 0.7


@pytest.mark.parametrize("data, message", [
    ({"merge_method": "slerp", "base_model": "b", "models": [{"model": "x", "parameters": {"weight": 1}}]},
     "mergekit method 'slerp' is not supported"),
    ({"merge_method": "ties", "slices": [{"sources": [{"model": "x", "layer_range": [0, 32]}]}]},
     "'slices' configs are not supported"),
    ({"merge_method": "ties", "base_model": "b",
      "models": [{"model": "x", "parameters": {"weight": [0.1, 0.5, 0.9]}}]}, "only scalar values"),
    ({"merge_method": "ties", "base_model": "b",
      "models": [{"model": "x", "parameters": {"weight": [{"filter": "self_attn", "value": 0.5}, {"value": 1}]}}]},
     "only scalar values"),
    ({"merge_method": "ties", "base_model": "b",
      "models": [{"model": "x", "parameters": {"weight": 1.0, "density": {"default": 0.5}}}]}, "only scalar values"),
    ({"merge_method": "ties", "base_model": "b", "models": [{"model": "x", "parameters": {"density": 0.5}}]},
     "no parameters.weight"),
    ({"merge_method": "ties", "base_model": "b", "models": [{"model": "b"}]}, "no models to merge"),
    ({"merge_method": "ties", "base_model": "b", "parameters": {"consensus": "count"},
      "models": [{"model": "x", "parameters": {"weight": 1}}]}, "parameter 'consensus' is not supported"),
    ({"merge_method": "ties", "models": [{"model": "x", "parameters": {"weight": 1}}]}, "needs a base_model"),
    ({"merge_method": "ties", "base_model": "b", "models": [{"model": "x", "parameters": {"weight": 1,
                                                                                       "density": 3}}]},
     r"outside \[0, 1\]"),
])
def test_unsupported_mergekit_configs_give_clear_errors(data, message):
    with pytest.raises(EvoVLMError, match=message):
        recipe_from_dict(data, where="mk.yaml")


def test_mergekit_linear_keeps_a_base_listed_among_models():
    recipe = recipe_from_dict({"merge_method": "linear", "base_model": "A",
                               "models": [{"model": "A", "parameters": {"weight": 0.5}},
                                          {"model": "B", "parameters": {"weight": 0.5}}]})
    assert [spec.model for spec in recipe.models] == ["A", "B"]


# --------------------------------------------------------------------------------------
# Export to mergekit
# --------------------------------------------------------------------------------------

def _equivalent(a: Recipe, b: Recipe) -> None:
    assert a.method == b.method
    assert a.base_model == b.base_model
    assert [(s.model, s.weight) for s in a.models] == [(s.model, s.weight) for s in b.models]
    from evovlm.merge.methods import METHODS
    if METHODS[a.method].uses_density:
        assert [s.density for s in a.models] == [s.density for s in b.models]
    assert a.dtype == b.dtype

    def effective(recipe: Recipe) -> dict:
        options = recipe.method_options()
        if not METHODS[recipe.method].random:
            options.pop("rescale", None)  # only DARE rescales; the other methods ignore it
        return options

    assert effective(a) == effective(b)


def test_mergekit_round_trip(tmp_path):
    recipe = load_recipe(_write(tmp_path / "mk.yaml", MERGEKIT))
    text = to_mergekit(recipe)
    data = yaml.safe_load(text)
    assert data["merge_method"] == "dare_ties"
    assert data["base_model"] == "mistralai/Mistral-7B-v0.1"
    assert data["models"][0] == {"model": "augmxnt/shisa-gamma-7b-v1", "parameters": {"weight": 0.5, "density": 0.53}}
    assert data["parameters"] == {"normalize": True}
    assert data["dtype"] == "bfloat16"
    _equivalent(recipe_from_dict(data), recipe)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties"])
def test_own_scalar_recipe_exports_and_reimports(method):
    recipe = recipe_from_dict({"method": method, "base_model": "org/base", "target": "org/base",
                               "parameters": {"lambda": 0.8, "normalize": False}, "dtype": "float16",
                               "models": [{"model": "org/a", "weight": 0.7, "density": 0.4},
                                          {"model": "org/b", "weight": 0.3, "density": 0.6}]})
    text = to_mergekit(recipe)
    assert text.startswith("# Exported by evovlm.")
    data = yaml.safe_load(text)
    assert data["merge_method"] == method
    assert data["parameters"] == {"normalize": False, "lambda": 0.8}
    assert ("density" in data["models"][0]["parameters"]) == (method == "ties")
    again = recipe_from_dict(data)
    assert again.origin == "mergekit"
    _equivalent(again, recipe)


def test_own_dare_recipe_export_warns_about_the_rescale():
    recipe = recipe_from_dict({"method": "dare_ties", "base_model": "b",
                               "models": [{"model": "x", "weight": 1.0, "density": 0.5}]})
    text = to_mergekit(recipe)
    assert "1/density" in text and "L1" in text
    assert yaml.safe_load(text)["models"] == [{"model": "x", "parameters": {"weight": 1.0, "density": 0.5}}]


def test_per_group_recipes_and_separate_targets_are_refused_for_export():
    per_group = recipe_from_dict({"method": "ties", "base_model": "b",
                                  "models": [{"model": "x", "weight": {"default": 1.0, "layers.0-3": 0.5}}]})
    with pytest.raises(EvoVLMError, match="per-layer-group values"):
        to_mergekit(per_group)
    per_group_density = recipe_from_dict({"method": "ties", "base_model": "b",
                                          "models": [{"model": "x", "density": {"default": 0.5}}]})
    with pytest.raises(EvoVLMError, match="per-layer-group"):
        to_mergekit(per_group_density)
    vlm = recipe_from_dict({"method": "ties", "base_model": "b", "target": "org/llava",
                            "models": [{"model": "org/llava"}, {"model": "x"}]})
    with pytest.raises(EvoVLMError, match="separate 'target'"):
        to_mergekit(vlm)


def test_mergekit_rescale_false_survives_the_round_trip():
    recipe = recipe_from_dict({"merge_method": "dare_ties", "base_model": "b", "parameters": {"rescale": False},
                               "models": [{"model": "x", "parameters": {"weight": 1.0, "density": 0.5}}]})
    again = recipe_from_dict(yaml.safe_load(to_mergekit(recipe)))
    assert again.method_options() == recipe.method_options()


def test_cli_to_mergekit_prints_yaml(tmp_path, capsys):
    config = _write(tmp_path / "r.yaml", "method: ties\nbase_model: org/base\nseed: 3\n"
                                         "models:\n  - {model: org/a, weight: 0.5, density: 0.4}\n")
    assert main(["merge", str(config), "--to-mergekit"]) == 0
    captured = capsys.readouterr()
    data = yaml.safe_load(captured.out)
    assert data == {"merge_method": "ties", "base_model": "org/base",
                    "models": [{"model": "org/a", "parameters": {"weight": 0.5, "density": 0.4}}]}
    # --dtype is applied before the export
    assert main(["merge", str(config), "--to-mergekit", "--dtype", "bfloat16"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["dtype"] == "bfloat16"


def test_cli_to_mergekit_refuses_per_group_recipes(tmp_path, capsys):
    config = _write(tmp_path / "r.yaml", "method: ties\nbase_model: org/base\n"
                                         "models:\n  - {model: org/a, weight: {default: 1, layers.0: 0.5}}\n")
    assert main(["merge", str(config), "--to-mergekit"]) == 2
    captured = capsys.readouterr()
    assert "per-layer-group" in captured.err and "Traceback" not in captured.err
    assert captured.out == ""
