"""Genomes (PS and DFS) encode/decode round trips, and clear errors for bad evolution configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evovlm.cli import main
from evovlm.errors import EvoVLMError
from evovlm.evolve.config import config_from_dict
from evovlm.evolve.genome import DFSGenome, PSGenome, layer_groups
from evovlm.evolve.preflight import preflight
from evovlm.merge.recipe import recipe_from_dict, resolve_param

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny"
BASE, JA, MATH, LLAVA = (str(TINY / name) for name in ("base", "ja", "math", "llava"))


def ps_config(**ps):
    section = {"method": "dare_ties", "base_model": BASE, "models": [JA, MATH]}
    section.update(ps)
    return config_from_dict({"mode": "ps", "ps": section, "fitness": {"synthetic": "sphere"}})


def dfs_config(**dfs):
    section = {"model_a": JA, "model_b": MATH}
    section.update(dfs)
    return config_from_dict({"mode": "dfs", "dfs": section, "fitness": {"synthetic": "sphere"}})


# -- PS --------------------------------------------------------------------------------------
def test_whole_model_groups_give_evollm_jp_genes():
    """group_size: model with 3 sources and DARE-TIES: 3 models x (weight, density) = 6 genes."""
    config = ps_config(models=[JA, MATH, LLAVA], target=LLAVA)
    genome = PSGenome(config.ps)
    assert genome.size == 6
    assert genome.gene_names() == [f"models[{i}].{p}@default" for i in range(3) for p in ("weight", "density")]
    recipe = genome.decode([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert [(m.weight, m.density) for m in recipe.models] == [(0.1, 0.2), (0.3, 0.4), (0.5, 0.6)]
    assert recipe.method == "dare_ties" and recipe.target == LLAVA and recipe.base_model == BASE


def test_methods_without_density_have_weight_genes_only_and_pins_are_not_genes():
    assert PSGenome(ps_config(method="task_arithmetic").ps).size == 2
    assert PSGenome(ps_config(method="linear", base_model=None).ps).size == 2
    pinned = PSGenome(ps_config(models=[{"model": JA, "weight": 1.0}, MATH]).ps)
    assert pinned.gene_names() == ["models[0].density@default", "models[1].weight@default",
                                   "models[1].density@default"]
    recipe = pinned.decode([0.25, 0.5, 0.75])
    assert (recipe.models[0].weight, recipe.models[0].density) == (1.0, 0.25)
    assert (recipe.models[1].weight, recipe.models[1].density) == (0.5, 0.75)


def test_layer_groups_decode_to_selectors_the_engine_resolves():
    assert layer_groups("model", 32) == ["default"]
    assert layer_groups(8, 20) == ["layers.0-7", "layers.8-15", "layers.16-19", "default"]
    assert layer_groups(1, 2) == ["layers.0", "layers.1", "default"]
    genome = PSGenome(ps_config(group_size=1).ps)  # the tiny models have 2 decoder blocks
    assert genome.size == 2 * 2 * 3
    genes = np.linspace(0.05, 0.95, genome.size)
    recipe = genome.decode(genes)
    weight = recipe.models[0].weight
    assert set(weight) == {"layers.0", "layers.1", "default"}
    # The engine's resolution sees the per-block values and the default for embed/norm/head.
    assert resolve_param(weight, "layers.1") == pytest.approx(genes[1])
    assert resolve_param(weight, "embed") == resolve_param(weight, "lm_head") == pytest.approx(genes[2])
    recipe_from_dict(recipe.to_dict())  # a valid recipe


@pytest.mark.parametrize("bounds, weight_range, density_range", [
    ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)),
    ((-1.0, 2.0), (0.2, 1.4), (0.1, 0.9)),
])
def test_ps_round_trips(bounds, weight_range, density_range):
    config = ps_config(group_size=1, weight_range=list(weight_range), density_range=list(density_range))
    genome = PSGenome(config.ps, bounds=bounds)
    genes = np.random.default_rng(0).uniform(*bounds, size=genome.size)
    recipe = genome.decode(genes)
    np.testing.assert_allclose(genome.encode(recipe), genes, rtol=0, atol=1e-12)
    again = genome.decode(genome.encode(recipe)).to_dict()
    for before, after in zip(recipe.to_dict()["models"], again["models"]):
        for parameter in ("weight", "density"):
            assert after[parameter] == pytest.approx(before[parameter], abs=1e-12)
    low, high = weight_range
    assert genome.decode(np.full(genome.size, bounds[0])).models[0].weight["layers.0"] == pytest.approx(low)
    assert genome.decode(np.full(genome.size, bounds[1])).models[0].weight["layers.0"] == pytest.approx(high)


def test_encode_reads_a_hand_written_recipe():
    genome = PSGenome(ps_config(group_size=1).ps)
    recipe = recipe_from_dict({"method": "dare_ties", "base_model": BASE, "models": [
        {"model": JA, "weight": {"default": 0.3, "layers.1": 0.9}, "density": 0.5},
        {"model": MATH, "weight": 0.2, "density": {"layers": 0.4, "default": 0.6}}]})
    genes = genome.encode(recipe)
    assert genes.tolist() == pytest.approx([0.3, 0.9, 0.3, 0.5, 0.5, 0.5, 0.2, 0.2, 0.2, 0.4, 0.4, 0.6])


# -- DFS -------------------------------------------------------------------------------------
def test_dfs_layout_identity_and_fixed_points():
    genome = DFSGenome(dfs_config().dfs, 2, 2)  # M = 4 layers, r = 3: T = 12 slots, W 4 x 4
    assert (genome.num_layers, genome.num_slots, genome.size) == (4, 12, 12 + 16)
    assert genome.origins == ["A:0", "A:1", "B:0", "B:1"]
    start = genome.initial_mean(0.5)  # init: a -> model A itself, W = 1
    candidate = genome.decode(start)
    assert candidate.path == (0, 1) and candidate.scales == (1.0, 1.0)
    # A's layers sit in the middle repetition, so one flip puts a B layer in front of them or behind them.
    assert np.flatnonzero(genome.genotype(start)[0]).tolist() == [4, 5]
    for slot, path in ((3, (0, 3, 0, 1)), (10, (0, 1, 2, 1))):
        flipped = start.copy()
        flipped[slot] = 1.0
        assert genome.decode(flipped).path == path
    first = DFSGenome(dfs_config(init="a-first").dfs, 2, 2)
    assert np.flatnonzero(first.genotype(first.initial_mean(0.5))[0]).tolist() == [0, 1]
    assert first.start_is_a_model and first.decode(first.initial_mean(0.5)).path == (0, 1)
    for repeats, identity in ((1, [0, 1]), (2, [4, 5]), (4, [8, 9])):
        assert np.flatnonzero(DFSGenome(dfs_config(repeats=repeats).dfs, 2, 2).identity_slots()).tolist() == identity
    slots = np.zeros(12, dtype=bool)
    slots[[2, 3, 6]] = True  # B:0, B:1, then B:0 again in the second repetition
    matrix = np.arange(16, dtype=float).reshape(4, 4) / 10
    candidate = genome.decode(genome.encode(slots, matrix))
    assert candidate.path == (0, 2, 3, 2, 1)  # A's first block prepended, A's last appended
    assert candidate.scales == pytest.approx((1.0, matrix[0, 2], matrix[2, 3], matrix[3, 2], matrix[2, 1]))
    assert genome.describe(genome.encode(slots, matrix))["path"] == ["A:0", "B:0", "B:1", "B:0", "A:1"]
    nothing = genome.decode(genome.encode(np.zeros(12, dtype=bool)))
    assert nothing.path == (0, 1)


def test_dfs_round_trips_and_options():
    genome = DFSGenome(dfs_config(scale_range=[0.5, 1.5], repeats=2).dfs, 2, 3, bounds=(-1.0, 1.0))
    assert genome.threshold == 0.0 and genome.size == 10 + 25
    rng = np.random.default_rng(1)
    slots, matrix = rng.random(10) > 0.5, rng.uniform(0.5, 1.5, size=(5, 5))
    got_slots, got_matrix = genome.genotype(genome.encode(slots, matrix))
    assert got_slots.tolist() == slots.tolist()
    np.testing.assert_allclose(got_matrix, matrix, atol=1e-12)
    genes = rng.uniform(-1, 1, genome.size)
    np.testing.assert_allclose(genome.encode(*genome.genotype(genes))[10:], genes[10:], atol=1e-12)
    without_w = DFSGenome(dfs_config(scales="none", init="uniform").dfs, 2, 2)
    assert without_w.size == 12
    assert without_w.decode(without_w.initial_mean(0.5)).path == (0, 1)  # 0.5 is not above the threshold
    assert set(without_w.decode(np.ones(12)).scales) == {1.0}


# -- bad configs -----------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"ps": {"method": "slerp"}}, "unknown merge method 'slerp'"),
    ({"ps": {"models": [JA, "/nonexistent/model"]}}, "does not exist"),
    ({"ps": {"models": [JA], "base_model": None}}, "needs a base_model"),
    ({"ps": {"colour": 1}}, "unknown key(s) colour"),
    ({"ps": {"group_size": 0}}, "group_size"),
    ({"ps": {"density_range": [0, 2]}}, "must lie within [0.0, 1.0]"),
    ({"ps": {"parameters": {"lambada": 1}}}, "unknown parameters"),
    ({"ps": {"models": [{"model": JA, "weight": 1, "density": 1}]}}, "nothing to evolve"),
    ({"optimizer": {"bounds": [1, 0]}}, "low 1.0 must be below high 0.0"),
    ({"optimizer": {"bounds": [0, 1], "mean": 2}}, "outside the bounds"),
    ({"optimizer": {"name": "nelder-mead"}}, "config: optimizer.name: input should be 'cma' or 'sep_cma'"),
    ({"optimizer": {"sigma": -1}}, "config: optimizer.sigma: expected a number > 0.0, got -1"),
    ({"optimizer": {"population": 3}}, "config: optimizer.population: expected an integer >= 4"),
    ({"ps": {"optimizer": {"sigma": "wide"}}}, "config: ps.optimizer.sigma: expected a finite number, got 'wide'"),
    ({"ps": {"models": [JA, {"model": MATH, "density": 1.5}]}}, "config: ps.models[1].density: 1.5 outside [0, 1]"),
    ({"ps": {"models": [JA, {"model": MATH, "weight": float("nan")}]}},
     "config: ps.models[1].weight: expected a finite number, got nan"),
    ({"ps": {"models": [JA, "/nonexistent/model"]}}, "config: ps.models[1].model: model directory"),
    ({"fitness": {"benchmark": "mgsm-ja", "limit": 0}}, "config: fitness.limit: expected an integer >= 1, got 0"),
    ({"fitness": {"benchmark": "mgsm-ja", "limit": True}}, "config: fitness.limit: expected an integer, got True"),
    ({"fitness": {"benchmark": "mgsm-ja", "colour": 1}}, "config: fitness: unknown key(s) colour; known: benchmark"),
    ({"validation": {"synthetic": "sphere", "target": "x"}}, "config: validation.target: a number, or a list"),
    ({"runtime": {"plot": "yes"}}, "config: runtime.plot: input should be a valid boolean, got 'yes'"),
    ({"budget": {"trials": 10, "generations": 2}}, "not both"),
    ({"fitness": {"benchmark": "mgsm-ja", "synthetic": "sphere"}},
     "config: fitness: give exactly one of benchmark, callable or synthetic"),
    ({"fitness": {"synthetic": "rosenbrock"}}, "neither a built-in objective"),
    ({"fitness": {"callable": "no_such_module:f"}}, "cannot import"),
    ({"fitness": {"callable": "os.path:join", "arguments": {"problems": 3}}},
     "fitness.arguments: os.path:join cannot take {'problems': 3}: got an unexpected keyword argument"),
    ({"fitness": {"callable": "os.path:join", "arguments": [3]}}, "config: fitness.arguments: input should be"),
    ({"fitness": {"benchmark": "mgsm-ja", "generation": {"max_tokens": 5}}}, "unknown generation setting"),
    ({"fitness": {"benchmark": "mgsm-ja", "metric": {}}}, "fitness.metric: a summary key, or a non-empty mapping"),
    ({"fitness": {"benchmark": "mgsm-ja", "metric": {"acc": "high"}}}, "fitness.metric.acc: expected a number"),
    ({"fitness": {"benchmark": "mgsm-ja", "metric": 5}}, "fitness.metric: a summary key, or a mapping"),
    ({"test": {"benchmark": "mgsm-ja"}}, "must all be synthetic or all score models"),
    ({"mode": "dfs"}, "needs a 'dfs' section"),
    ({"dfs": {"model_a": JA, "model_b": MATH}}, "mode is ps"),
    ({"mode": "ps+dfs", "dfs": {"model_a": JA, "model_b": MATH}}, "write model_a: ps"),
    ({"mode": "dfs", "ps": None, "dfs": {"model_a": JA, "model_b": MATH, "init": "b"}},
     "config: dfs.init: input should be 'a', 'a-first' or 'uniform', got 'b'"),
    ({"runtime": {"workers": 0}}, "workers"),
    ({"mode": "dfs", "ps": None, "dfs": {"model_a": LLAVA, "model_b": MATH}},
     "DFS merges causal LMs (LlamaForCausalLM, MistralForCausalLM), not LlavaForConditionalGeneration"),
    ({"mode": "ps+dfs", "ps": {"target": LLAVA}, "dfs": {"model_a": "ps", "model_b": MATH}},
     "the PS result (model A) comes from"),
    ({"seed": -3}, "config: seed: expected an integer >= 0, got -3"),
    ({"surprise": True}, "unknown key(s) surprise"),
])
def test_bad_configs_name_the_problem(change, message):
    data = {"mode": "ps", "ps": {"method": "dare_ties", "base_model": BASE, "models": [JA, MATH]},
            "fitness": {"synthetic": "sphere"}}
    for key, value in change.items():
        if value is None:
            data.pop(key)
        elif key == "ps":  # change some keys of the PS section; other sections are replaced
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(EvoVLMError) as caught:
        preflight(config_from_dict(data))  # the config's own checks, then what needs the models
    assert message in str(caught.value)


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"mode": "ps", "ps": {"method": "frankenmerge", "base_model": BASE,
                                                           "models": [JA]}, "fitness": "mgsm-ja"}))
    assert main(["evolve", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown merge method 'frankenmerge'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert main(["evolve", "--resume", str(tmp_path)]) == 2
    assert "not an evolution run directory" in capsys.readouterr().err
    assert main(["evolve", str(config)]) == 2
    assert "--out RUN_DIR" in capsys.readouterr().err
