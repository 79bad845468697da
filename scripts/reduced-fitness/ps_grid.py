"""Issue 20: PS runs of the zoo text world with the whole fitness split or a reduced fitness.

    python ps_grid.py ZOO OUT SPLIT NAME=full | NAME=METHOD:SIZE:ESTIMATOR:SUBSET_SEED:RERANK ...

Each run goes to OUT/NAME (a finished one is read back, not rerun) and prints one JSON line: its
score on SPLIT (dev while deciding; the field is called test_acc_ja, as the run's test section),
problems answered (calibration and re-ranking included), seconds. Environment: TRIALS (default
120), CMA_SEED (default 0)."""
import json
import sys
import time
from pathlib import Path

from evovlm.evolve.runs import run_evolution
from evovlm.evolve.subset import SUBSET_NAME, SubsetPlan
from evovlm.zoo.report import zoo_refs

zoo, out, split = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), sys.argv[3]
refs = zoo_refs(zoo)
for spec in sys.argv[4:]:
    name, _, how = spec.partition("=")
    fitness = {"benchmark": "zoo-mgsm-ja", "split": "fitness", "metric": "acc_ja"}
    if how != "full":
        method, size, estimator, subset_seed, rerank = how.split(":")
        fitness["subset"] = {"method": method, "size": int(size), "estimator": estimator, "seed": int(subset_seed),
                             "rerank": int(rerank)}
    config = {"mode": "ps", "seed": int(__import__("os").environ.get("CMA_SEED", 0)),
              "ps": {"method": "task_arithmetic", "base_model": refs["base"], "models": [refs["ja"], refs["math"]],
                     "group_size": 2},
              "budget": {"trials": int(__import__("os").environ.get("TRIALS", 120))}, "fitness": fitness,
              "test": {"benchmark": "zoo-mgsm-ja", "split": split, "metric": "acc_ja"},
              "runtime": {"save_model": False, "plot": False, "progress": False, "workers": 1}}
    run = out / name
    if (run / "summary.json").exists():
        summary = json.loads((run / "summary.json").read_text())
    else:
        started = time.perf_counter()
        summary = run_evolution(config, run, overwrite=True)
        summary["wall_s"] = round(time.perf_counter() - started, 1)
        (run / "wall.json").write_text(json.dumps({"wall_s": summary["wall_s"]}))
    hist = [json.loads(line) for line in open(run / "history.jsonl")]
    cands = [h for h in hist if h.get("type") == "candidate"]
    eval_s = sum(h["eval_s"] for h in cands)
    cal = []
    if (run / SUBSET_NAME).exists():
        cal = SubsetPlan.read(run / SUBSET_NAME).calibration
    cal_s = sum(c["wall_s"] for c in cal)
    reranks = [h for h in hist if h.get("type") == "rerank"]
    cal_s += sum(h["wall_s"] for h in reranks)
    wall = json.loads((run / "wall.json").read_text())["wall_s"]
    print(json.dumps({"name": name, "split": split, "test_acc_ja": summary["test"]["fitness"],
                      "best_fitness": summary["best"]["fitness"], "candidates": len(cands),
                      "eval_s": round(eval_s, 1), "calibration_s": round(cal_s, 1), "wall_s": wall,
                      "problems_per_candidate": cands[0]["score"]["n"],
                      "problems": sum(c["score"]["n"] for c in cands) + sum(len(c["right"]) for c in cal)
                      + sum(h["score"]["n"] for h in reranks), "best_genome": summary["best"]["genome"]}), flush=True)
