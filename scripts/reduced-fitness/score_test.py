"""Score each run's chosen model on the zoo-mgsm-ja test split (once, after the dev decisions).
python score_test.py RUN_DIR... -> one JSON line per run."""
import json
import os
import sys
from pathlib import Path

import numpy as np

from evovlm.evolve.config import load_config
from evovlm.evolve.evaluators import StageSpec, build_evaluator, make_scorer

evaluator = None
for run in map(Path, sys.argv[1:]):
    config = load_config(run / "config.yaml")
    summary = json.loads((run / "summary.json").read_text())
    if evaluator is None or evaluator.spec.config.ps != config.ps:
        full = config.fitness.model_copy(update={"subset": None})
        evaluator = build_evaluator(StageSpec("ps", config.model_copy(update={"fitness": full})), "cpu")
    # DATA_SEED: a fresh draw of 300 problems (no split) instead of the test split
    fresh = os.environ.get("DATA_SEED")
    test = config.test.model_copy(update={"split": "test"} if fresh is None else
                                  {"split": None, "data_seed": int(fresh), "limit": 300})
    evaluator.apply(np.asarray(summary["best"]["genome"]))
    fitness, score, _ = make_scorer(test, "test")(evaluator.runner)
    print(json.dumps({"run": str(run), "test_acc_ja": fitness, "n": score["n"]}), flush=True)
