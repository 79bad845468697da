"""Whole runs on the tiny models: PS (in-memory merges), a real benchmark, and PS+DFS; saved models.

A saved best model must score exactly what its candidate scored in memory: that ties the
in-memory merge / DFS path to the checkpoint on disk.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForCausalLM, AutoTokenizer

from evovlm.dfs.modeling import EvoDFSForCausalLM
from evovlm.errors import EvoVLMError
from evovlm.evolve.history import History
from evovlm.evolve.rundir import FORMAT_VERSION, RunDir
from evovlm.evolve.runs import run_evolution

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny"
PROMPT = torch.tensor([[1, 40, 41, 42, 60, 70, 33]])
# devices: cpu, so that fitness is computed in fp32 as the tests recompute it (a GPU would run bf16)
QUIET = {"save_model": True, "plot": False, "progress": False, "devices": ["cpu"]}


@torch.no_grad()
def logit_margin(model, tokenizer, token: int = 10) -> float:
    """A deterministic function of the weights: how much the model prefers ``token`` next."""
    logits = model(input_ids=PROMPT.to(model.device)).logits[0, -1].float()
    return float(logits[token] - logits.mean())


def ps_section(**extra) -> dict:
    section = {"method": "dare_ties", "base_model": str(TINY / "base"),
               "models": [str(TINY / "ja"), str(TINY / "math")]}
    section.update(extra)
    return section


def test_a_callable_fitness_gets_its_arguments(tmp_path):
    summary = run_evolution({"mode": "ps", "seed": 1, "ps": ps_section(), "optimizer": {"population": 4},
                             "budget": {"generations": 1},
                             "fitness": {"callable": logit_margin, "arguments": {"token": 3}},
                             "runtime": {**QUIET, "plot": False}}, tmp_path / "run")
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    assert logit_margin(model, None, token=3) == pytest.approx(summary["best"]["fitness"], abs=1e-5)
    assert logit_margin(model, None) != pytest.approx(summary["best"]["fitness"], abs=1e-3)


def test_ps_run_merges_in_memory_and_saves_the_best(tmp_path):
    run = tmp_path / "run"
    summary = run_evolution({"mode": "ps", "seed": 1, "ps": ps_section(group_size=1),
                             "optimizer": {"population": 4}, "budget": {"generations": 2},
                             "fitness": {"callable": logit_margin},
                             "runtime": {**QUIET, "plot": True}}, run)
    records = History(run / "history.jsonl").of_type("candidate")
    assert len(records) == 8 and all(r["error"] is None for r in records)
    assert len({r["fitness"] for r in records}) == 8  # every candidate really is another merge
    assert all(r["merge_s"] > 0 for r in records)
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    assert logit_margin(model, None) == pytest.approx(summary["best"]["fitness"], abs=1e-5)
    card = (run / "model" / "README.md").read_text()
    assert "## Evolution" in card and "logit_margin" in card and "dare_ties" in card
    assert (run / "fitness.png").stat().st_size > 1000
    assert (run / "best_recipe.yaml").read_text().startswith("# Best candidate so far")
    # the run declares its format (evovlm.evolve.rundir) and reads back through RunDir
    assert json.loads((run / "run.json").read_text())["format_version"] == FORMAT_VERSION == summary["format_version"]
    (stage,) = RunDir(run).stages
    assert stage.best().candidate.fitness == summary["best"]["fitness"] and stage.model_dir == run / "model"
    assert stage.best_recipe["models"] == summary["stages"]["ps"]["candidate"]["models"]


def test_benchmark_fitness_into_a_vlm_language_tower_with_test_rescore(tmp_path):
    data = tmp_path / "questions.tsv"
    data.write_text("りんごが3個あります。2個食べると何個?\t1\n5+7は?\t12\n10-4は?\t6\n",
                    encoding="utf-8")
    bench = {"benchmark": "mgsm-ja", "split": "test", "data": str(data), "limit": 1,
             "generation": {"max_new_tokens": 4, "batch_size": 2}}
    config = {"mode": "ps", "ps": ps_section(target=str(TINY / "llava"),
                                             models=[{"model": str(TINY / "llava"), "weight": 1.0}, str(TINY / "ja")]),
              "optimizer": {"population": 4}, "budget": {"generations": 1},
              "fitness": bench, "test": {**bench, "limit": 3}, "runtime": {**QUIET, "save_model": False}}
    summary = run_evolution(config, tmp_path / "run")
    record = History(tmp_path / "run" / "history.jsonl").of_type("candidate")[0]
    assert record["metric"] == "acc_ja" and record["score"]["n"] == 1 and record["error"] is None
    assert summary["test"]["metric"] == "acc_ja" and summary["test"]["score"]["n"] == 3
    assert summary["model_dir"] is None
    bad = {**config, "fitness": {**bench, "metric": "accuracy"}}
    with pytest.raises(EvoVLMError, match="metric 'accuracy' is not a score of mgsm-ja; its scores: acc, "):
        run_evolution(bad, tmp_path / "bad")
    with pytest.raises(EvoVLMError, match="metric 'n_resamples' is not a score of mgsm-ja"):  # a summary's setting
        run_evolution({**config, "fitness": {**bench, "metric": "n_resamples"}}, tmp_path / "meta")
    with pytest.raises(EvoVLMError, match="unknown benchmark 'mgsm-jp'"):  # before any directory or model
        run_evolution({**config, "fitness": {**bench, "benchmark": "mgsm-jp"}}, tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_ps_plus_dfs_hybrid_builds_a_loadable_dfs_model(tmp_path):
    run = tmp_path / "run"
    umask = os.umask(0o022)
    try:
        summary = run_evolution({"mode": "ps+dfs", "seed": 3, "ps": ps_section(budget={"generations": 1}),
                                 "dfs": {"model_a": "ps", "model_b": str(TINY / "math"), "repeats": 2,
                                         "budget": {"generations": 2}, "optimizer": {"population": 6}},
                                 "optimizer": {"population": 4}, "fitness": {"callable": logit_margin},
                                 "runtime": {**QUIET, "plot": True}}, run)
    finally:
        os.umask(umask)
    # the run folder, both models and the plots get the umask's permissions, not tempfile's 0700/0600
    modes = {path.relative_to(run).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in run.rglob("*")}
    assert {"ps/model", "dfs/model", "dfs/fitness.png", "dfs/model/README.md"} <= set(modes)
    assert {name: mode for name, mode in modes.items()
            if mode != (0o755 if (run / name).is_dir() else 0o644)} == {}
    ps, dfs = summary["stages"]["ps"], summary["stages"]["dfs"]
    assert ps["model_dir"] == str(run / "ps" / "model") and ps["trials"] == 4
    assert dfs["trials"] == 2 * 6 + 1 and summary["model_dir"] == str(run / "dfs" / "model")
    # init a: model A itself (the PS result) is scored once as an extra candidate, so the hybrid
    # cannot end below PS on the fitness split
    start = [json.loads(line) for line in (run / "dfs" / "history.jsonl").read_text().splitlines()
             if '"index": 6' in line and '"type": "candidate"' in line]
    assert len(start) == 1 and start[0]["candidate"]["path"] == ["A:0", "A:1"]
    assert start[0]["fitness"] == pytest.approx(ps["best"]["fitness"], abs=1e-5)
    assert summary["best"]["fitness"] >= ps["best"]["fitness"] - 1e-5
    resolved = json.loads((run / "dfs" / "result.json").read_text())
    assert resolved["candidate"]["path"][0] == "A:0" and resolved["candidate"]["path"][-1] == "A:1"
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    assert type(model) is EvoDFSForCausalLM
    assert [model.config.dfs_layer_origins[i] for i in model.config.dfs_path] == resolved["candidate"]["path"]
    assert logit_margin(model, None) == pytest.approx(summary["best"]["fitness"], abs=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(summary["model_dir"])
    output = model.generate(**tokenizer(["5+7は"], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert output.shape[1] > 3
    assert "A:0" in (run / "dfs" / "model" / "README.md").read_text()
    # Model A of the DFS stage is the PS result.
    dfs_config = json.loads((run / "dfs" / "model" / "config.json").read_text())
    assert dfs_config["model_type"] == "evovlm_dfs"
    assert json.loads((run / "summary.json").read_text())["stages"]["ps"]["model_dir"] == ps["model_dir"]


def test_each_stage_of_ps_plus_dfs_can_have_its_own_fitness_and_test(tmp_path):
    # PS on the logit margin of token 10, the DFS on top of it on token 3's (and its own test section)
    summary = run_evolution({"mode": "ps+dfs", "seed": 1, "ps": ps_section(budget={"generations": 1}),
                             "dfs": {"model_a": "ps", "model_b": str(TINY / "math"), "repeats": 1,
                                     "budget": {"generations": 1}, "optimizer": {"population": 4},
                                     "fitness": {"callable": logit_margin, "arguments": {"token": 3}},
                                     "test": {"callable": logit_margin, "arguments": {"token": 5}}},
                             "optimizer": {"population": 4}, "fitness": {"callable": logit_margin},
                             "test": {"callable": logit_margin, "arguments": {"token": 7}}, "runtime": QUIET},
                            tmp_path / "run")
    ps, dfs = summary["stages"]["ps"], summary["stages"]["dfs"]
    ps_model = AutoModelForCausalLM.from_pretrained(ps["model_dir"])
    dfs_model = AutoModelForCausalLM.from_pretrained(dfs["model_dir"])
    assert ps["best"]["fitness"] == pytest.approx(logit_margin(ps_model, None), abs=1e-5)
    assert ps["test"]["fitness"] == pytest.approx(logit_margin(ps_model, None, token=7), abs=1e-5)
    assert dfs["best"]["fitness"] == pytest.approx(logit_margin(dfs_model, None, token=3), abs=1e-5)
    assert dfs["test"]["fitness"] == pytest.approx(logit_margin(dfs_model, None, token=5), abs=1e-5)
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["dfs"]["fitness"]["arguments"] == {"token": 3} and written["ps"]["fitness"] is None
    # a stage's sections are checked like the top-level ones, before anything runs
    with pytest.raises(EvoVLMError, match="dfs.fitness"):
        run_evolution({"mode": "ps+dfs", "ps": ps_section(), "fitness": {"callable": logit_margin},
                       "dfs": {"model_a": "ps", "model_b": str(TINY / "math"),
                               "fitness": {"callable": logit_margin, "arguments": {"tokn": 3}}}}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_fitness_can_weigh_several_summary_keys():
    from evovlm.eval.runners import load_runner
    from evovlm.evolve.config import config_from_dict
    from evovlm.evolve.evaluators import make_scorer
    from evovlm.io.resolve import resolve_model_path

    config = config_from_dict({"mode": "ps", "ps": ps_section(), "fitness": {
        "benchmark": "mgsm-ja", "limit": 2, "metric": {"acc": 1.0, "rougeL": 0.5},
        "generation": {"max_new_tokens": 4}}})
    with pytest.raises(Exception, match="'rougeL' is not a score of mgsm-ja"):
        make_scorer(config.fitness)(load_runner(TINY / "ja"))
    # the zoo's MATH expert: right on every problem (acc 100), in English (acc_ja 0)
    config = config_from_dict({"mode": "ps", "ps": ps_section(), "fitness": {
        "benchmark": "zoo-mgsm-ja", "split": "dev", "limit": 4, "metric": {"acc": 0.5, "acc_ja": 2.0}}})
    fitness, summary, label = make_scorer(config.fitness)(load_runner(resolve_model_path("zoo:math")))
    assert (summary["acc"], summary["acc_ja"]) == (100.0, 0.0)
    assert fitness == 50.0 and label == "0.5*acc + 2*acc_ja"


def test_each_source_alone_is_scored_as_a_baseline_and_never_chosen(tmp_path):
    """ps.score_sources: each source (weight 1, the others 0, density 1) is scored in generation 0 beside the
    population; its fitness is the source model's own, the search is the same as without, and the best is a merge."""
    common = {"mode": "ps", "seed": 1, "optimizer": {"population": 4}, "budget": {"generations": 2},
              "fitness": {"callable": logit_margin}, "runtime": {**QUIET, "save_model": False}}
    with_sources = run_evolution({**common, "ps": ps_section(score_sources=True)}, tmp_path / "with")
    without = run_evolution({**common, "ps": ps_section()}, tmp_path / "without")
    records = History(tmp_path / "with" / "history.jsonl").of_type("candidate")
    sources = {r["source"]: r["fitness"] for r in records if "source" in r}
    assert list(sources) == [str(TINY / "ja"), str(TINY / "math")]
    for ref, fitness in sources.items():  # the one-hot merge is the source itself
        assert fitness == pytest.approx(logit_margin(AutoModelForCausalLM.from_pretrained(ref), None), abs=1e-5)
    searched = [(r["generation"], r["index"], r["fitness"]) for r in records if "source" not in r]
    plain = [(r["generation"], r["index"], r["fitness"])
             for r in History(tmp_path / "without" / "history.jsonl").of_type("candidate")]
    assert searched == plain and with_sources["best"] == without["best"]  # baselines are not told to CMA-ES
    (stage,) = RunDir(tmp_path / "with").stages
    assert [c.source for c in stage.sources] == list(sources) and len(stage.searched) == 8
    assert stage.best().candidate.source is None


def test_sources_outside_the_search_space_are_not_scored():
    from evovlm.evolve.config import config_from_dict
    from evovlm.evolve.genome import PSGenome

    def genome(**ps):
        config = config_from_dict({"mode": "ps", "ps": {**ps_section(method="task_arithmetic"), **ps},
                                   "fitness": {"synthetic": "sphere"}})
        return PSGenome(config.ps, num_layers=2)

    both = genome().source_genes()
    assert [ref for ref, _ in both] == [str(TINY / "ja"), str(TINY / "math")]
    recipe = genome().decode(both[1][1])
    assert [(m.weight, m.density) for m in recipe.models] == [(0.0, 1.0), (1.0, 1.0)]
    assert genome(weight_range=[0.2, 1.0]).source_genes() == []  # weight 0 is out of reach
    assert genome(parameters={"lambda": 0.5}).source_genes() == []  # base + 0.5 delta is not the source
    pinned = genome(models=[{"model": str(TINY / "ja"), "weight": 1.0}, str(TINY / "math")]).source_genes()
    assert [ref for ref, _ in pinned] == [str(TINY / "ja")]  # ja's weight is pinned at 1: math alone is out
