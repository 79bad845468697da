"""Reduced fitness (evovlm.evolve.subset): the IRT maths on hand-computed and simulated answers, the item
choices, and a whole zoo run that chooses its subset once and reuses it on resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evovlm.errors import EvoVLMError
from evovlm.evolve.subset import (
    SUBSET_NAME,
    ItemModel,
    SubsetPlan,
    build_plan,
    choose_items,
    fit_ability,
    fit_items,
    main_key,
)


def simulate(abilities, discrimination, difficulty, seed):
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-np.asarray(discrimination)[None] * (np.asarray(abilities)[:, None] - difficulty)))
    return (rng.random(p.shape) < p).astype(float), p


def test_ability_and_estimate_by_hand():
    flat = ItemModel(discrimination=[1.0] * 4, difficulty=[0.0, 0.0, 0.0, math.log(3)])
    # one right, one wrong on identical items: the log-likelihood's slope 1 - 2p - theta vanishes at theta 0
    assert fit_ability(flat, [0, 1], [1, 0]) == pytest.approx(0.0, abs=1e-12)
    # one right answer: theta solves theta = 1 - sigmoid(theta) (likelihood slope = prior slope)
    theta = fit_ability(flat, [0], [1])
    assert theta == pytest.approx(1 - 1 / (1 + math.exp(-theta)), abs=1e-10) and 0.40 < theta < 0.41
    plan = SubsetPlan(method="random", size=2, seed=0, estimator="irt", n_items=4, items=[0, 1], key="acc_ja",
                      weights={"acc_ja": 1.0}, model=flat)
    # seen: 1 right of 2; unseen: p(theta=0) = 0.5 on item 2 and sigmoid(-ln 3) = 0.25 on item 3
    assert plan.estimate({"acc_ja": [100.0, 0.0]}) == pytest.approx(100 * (1 + 0.5 + 0.25) / 4)
    mean = SubsetPlan(method="random", size=2, seed=0, estimator="mean", n_items=4, items=[0, 1], key="acc_ja",
                      weights={"acc_ja": 1.0, "rougeL_ja": 0.01}, model=None)
    assert mean.estimate({"acc_ja": [100.0, 0.0], "rougeL_ja": [80.0, 40.0]}) == pytest.approx(50 + 0.6)


def test_the_estimator_recovers_a_simulated_population_ranking():
    """Items and abilities known: 12 calibration respondents fix the item model; 40 new candidates answer
    20 chosen items, and their estimated whole-set scores rank them as their true abilities do."""
    rng = np.random.default_rng(0)
    n_items = 200
    discrimination, difficulty = rng.uniform(0.7, 2.0, n_items), rng.normal(0, 1.2, n_items)
    calibration, _ = simulate(rng.normal(0, 1, 12), discrimination, difficulty, seed=1)
    model, abilities = fit_items(calibration)
    assert np.corrcoef(model.difficulty, difficulty)[0, 1] > 0.8
    truth = np.linspace(-2, 2, 40)
    answers, p = simulate(truth, discrimination, difficulty, seed=2)
    for method in ("irt", "stratified", "random"):
        items = choose_items(method, calibration, 20, seed=0, model=model)
        plan = SubsetPlan(method=method, size=20, seed=0, estimator="irt", n_items=n_items, items=items,
                          key="acc", weights={"acc": 1.0}, model=model)
        estimates = np.array([plan.estimate({"acc": list(100 * row[items])}) for row in answers])
        ranks = np.argsort(np.argsort(estimates))
        spearman = np.corrcoef(ranks, np.arange(40))[0, 1]
        assert spearman > 0.9, (method, spearman)
        assert np.mean(np.abs(estimates - 100 * p.mean(axis=1))) < 8, method  # points of accuracy


def test_item_choices():
    table = np.array([[1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1], [1, 0, 0, 1, 0, 1], [1, 1, 0, 0, 0, 1]], float)
    # shares right: 1, .5, 0, .25, .5, .75 -> disagreement p(1-p): 0, .25, 0, .1875, .25, .1875
    assert choose_items("entropy", table, 2, seed=0) == [1, 4]
    assert len(set(choose_items("entropy", table, 4, seed=0)) & {1, 4}) == 2
    # stratified: bands of the items sorted by share right, one item from each
    bands = choose_items("stratified", table, 3, seed=3)
    order = sorted(range(6), key=lambda i: table[:, i].mean())
    assert all(any(item in order[2 * k:2 * k + 2] for item in bands) for k in range(3))
    assert choose_items("random", table, 3, seed=5) == choose_items("random", table, 3, seed=5)
    model, _ = fit_items(table)
    anchors = choose_items("irt", table, 4, seed=0, model=model)
    assert len(anchors) == 4 == len(set(anchors)) and anchors == sorted(anchors)
    with pytest.raises(EvoVLMError, match="between 1 and the 6 items"):
        choose_items("random", table, 7, seed=0)
    with pytest.raises(EvoVLMError, match="must be one of"):
        choose_items("clever", table, 2, seed=0)


def test_plan_needs_a_right_or_wrong_score_and_survives_json(tmp_path):
    assert main_key({"content_ja": 1.0, "rougeL_ja": 0.009}) == "content_ja"
    settings = {"method": "irt", "size": 2, "seed": 0, "estimator": "irt", "calibration": 2}
    entries = [{"label": "a", "right": [100.0, 0.0, 100.0]}, {"label": "b", "right": [0.0, 0.0, 100.0]},
               {"label": "c", "right": [100.0, 100.0, 0.0]}]
    plan = build_plan(settings, {"acc_ja": 1.0}, entries)
    plan.write(tmp_path)
    again = SubsetPlan.read(tmp_path / SUBSET_NAME)
    assert again == plan and again.estimate({"acc_ja": [100.0, 0.0]}) == plan.estimate({"acc_ja": [100.0, 0.0]})
    graded = [{"right": [55.5, 0.0, 10.0]}, {"right": [0.0, 100.0, 10.0]}]
    with pytest.raises(EvoVLMError, match="needs a right/wrong score per item"):
        build_plan(settings, {"rougeL": 1.0}, graded)
    # graded scores (ROUGE) work with the plain mean: the entropy subset keeps the items that vary most
    plain = build_plan({**settings, "method": "entropy", "estimator": "mean"}, {"rougeL": 1.0}, graded)
    assert plain.items == [0, 1] and plain.model is None
    (tmp_path / SUBSET_NAME).write_text("{not json")
    with pytest.raises(EvoVLMError, match="not a readable subset file"):
        SubsetPlan.read(tmp_path / SUBSET_NAME)


def test_config_rejects_a_subset_outside_the_fitness():
    from evovlm.evolve.config import config_from_dict

    base = {"mode": "ps", "ps": {"base_model": "zoo:base", "models": ["zoo:ja", "zoo:math"]}}
    subset = {"method": "irt", "size": 10}
    config = config_from_dict({**base, "fitness": {"benchmark": "zoo-mgsm-ja", "subset": subset}})
    assert config.fitness.subset.estimator == "irt" and config.fitness.subset.calibration == 8
    with pytest.raises(EvoVLMError, match="test.subset: only the fitness is reduced"):
        config_from_dict({**base, "fitness": "zoo-mgsm-ja", "test": {"benchmark": "zoo-mgsm-ja", "subset": subset}})
    with pytest.raises(EvoVLMError, match="rerank and validation both choose"):
        config_from_dict({**base, "fitness": {"benchmark": "zoo-mgsm-ja", "subset": subset},
                          "validation": {"benchmark": "zoo-mgsm-ja", "split": "dev"}})
    with pytest.raises(EvoVLMError, match="fitness.subset.method"):
        config_from_dict({**base, "fitness": {"benchmark": "zoo-mgsm-ja", "subset": {"method": "best", "size": 3}}})


def test_a_zoo_run_chooses_its_subset_once_and_resume_reuses_it(tmp_path, monkeypatch):
    from evovlm.evolve import runs
    from evovlm.evolve.history import History

    config = {"mode": "ps", "seed": 0,
              "ps": {"method": "task_arithmetic", "base_model": "zoo:base", "models": ["zoo:ja", "zoo:math"]},
              "optimizer": {"population": 4}, "budget": {"generations": 1},
              "fitness": {"benchmark": "zoo-mgsm-ja", "split": "fitness", "limit": 12,
                          "subset": {"method": "entropy", "size": 4, "calibration": 3}},
              "runtime": {"save_model": False, "plot": False, "progress": False, "devices": ["cpu"]}}
    run = tmp_path / "run"
    runs.run_evolution(config, run)
    plan = SubsetPlan.read(run / SUBSET_NAME)
    # the two sources alone (task arithmetic at weight 1 is the source), the start, 3 random merges
    assert [entry["label"] for entry in plan.calibration] == ["zoo:ja", "zoo:math", "start",
                                                               "random 0", "random 1", "random 2"]
    assert plan.n_items == 12 and len(plan.items) == 4 and all(len(e["right"]) == 12 for e in plan.calibration)
    math_alone = plan.calibration[1]
    assert math_alone["fitness"] == 0.0  # the MATH expert answers in English: acc_ja 0 on every item
    history = History(run / "history.jsonl")
    records, reranks = history.of_type("candidate"), history.of_type("rerank")
    assert len(records) == 4 and all(r["score"]["n"] == 4 for r in records)
    assert "irt estimate from 4 of 12 items, entropy subset" in records[0]["metric"]
    # every candidate (4 < rerank 5) re-scored on all 12 items; the result is the best there, not on the subset
    assert sorted((r["generation"], r["index"]) for r in reranks) == [(0, i) for i in range(4)]
    assert all(r["score"]["n"] == 12 for r in reranks)
    summary = json.loads((run / "summary.json").read_text())
    best = max(reranks, key=lambda r: (r["fitness"], -r["index"]))
    assert (summary["best"]["index"], summary["best"]["rerank"]) == (best["index"], best["fitness"])
    written = (run / SUBSET_NAME).read_bytes()

    # one more generation: the resumed run must not calibrate again
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["budget"]["generations"] = 2
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    for name in ("summary.json", "result.json"):
        (run / name).unlink()
    monkeypatch.setattr(runs, "calibrate", lambda *a, **k: pytest.fail("calibrated again on resume"))
    runs.run_evolution(None, run, resume=True)
    assert (run / SUBSET_NAME).read_bytes() == written
    history = History(run / "history.jsonl")
    assert len(history.of_type("candidate")) == 8
    assert len(history.of_type("rerank")) == len({(r["generation"], r["index"]) for r in history.of_type("rerank")})

    saved["fitness"]["subset"]["size"] = 5  # a changed subset section is refused, not silently mixed
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    (run / "result.json").unlink()
    with pytest.raises(EvoVLMError, match="was chosen for other fitness settings"):
        runs.run_evolution(None, run, resume=True)
    assert json.loads((run / SUBSET_NAME).read_text())["size"] == 4


def test_calibration_needs_a_benchmark_fitness(tmp_path):
    from evovlm.evolve.runs import run_evolution

    tiny = Path(__file__).resolve().parents[1] / "examples" / "tiny"
    config = {"mode": "ps", "ps": {"base_model": str(tiny / "base"), "models": [str(tiny / "ja"), str(tiny / "math")]},
              "fitness": {"callable": "os:getcwd", "subset": {"method": "random", "size": 2}}}
    with pytest.raises(EvoVLMError, match="subset"):
        run_evolution(config, tmp_path / "run")


def test_zoo_evolve_reduces_the_fitness_of_its_searches():
    from evovlm.evolve.config import config_from_dict
    from evovlm.zoo import MODELS_DIR
    from evovlm.zoo.evolution import FULL, EvolveBudget, run_configs

    configs = run_configs(MODELS_DIR, seed=0, budget=EvolveBudget())  # the default: irt, 20 problems
    assert configs["ps-dfs"]["fitness"]["subset"] == {"method": "irt", "size": 20}
    assert configs["vlm"]["fitness"]["subset"] == {"method": "irt", "size": 20}
    # ROUGE alone is graded, not right or wrong: a stratified subset and its mean
    assert configs["vlm-rouge"]["fitness"]["subset"] == {"method": "stratified", "size": 20, "estimator": "mean"}
    assert "subset" not in configs["dfs"]["fitness"]  # the log-likelihood callable has no items to choose from
    assert configs["dfs"]["fitness"]["arguments"] == {"problems": 25}  # it scores the first 25 replies instead
    for config in configs.values():
        config_from_dict(config)
    full = run_configs(MODELS_DIR, seed=0, budget=FULL)  # --full: every problem, as the published runs
    assert "subset" not in full["vlm"]["fitness"] and "subset" not in full["ps-dfs"]["fitness"]
    assert full["dfs"]["fitness"]["arguments"] == {"problems": None}
