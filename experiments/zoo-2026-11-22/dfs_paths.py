"""Run 17: hand-written DFS paths (A = zoo JA expert, B = zoo MATH expert, W = 1) on zoo-mgsm-ja dev.

    python dfs_paths.py ZOO_DIR          # e.g. evovlm/zoo/models; layer ids: A = 0-5, B = 6-11
"""
import sys
import time

import torch

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.dfs.modeling import EvoDFSForCausalLM
from evovlm.eval.benchmarks import load_benchmark
from evovlm.eval.evaluate import evaluate
from evovlm.eval.runners import load_runner, make_runner
from evovlm.evolve.evaluators import load_causal_lm

torch.set_num_threads(1)
zoo = sys.argv[1]
runner_a = load_runner(f"{zoo}/ja")
model = EvoDFSForCausalLM.from_models(runner_a.model, load_causal_lm(f"{zoo}/math", runner_a.device, runner_a.dtype))
runner = make_runner(model, runner_a.tokenizer, name="dfs")
bench = load_benchmark("zoo-mgsm-ja", split="dev", limit=100)
PATHS = {
    "A (the JA expert)": [0, 1, 2, 3, 4, 5],
    "A0 B1-3 A4-5": [0, 7, 8, 9, 4, 5],
    "A0 B0-3 A4-5": [0, 6, 7, 8, 9, 4, 5],
    "A0 B1-3 A3-5": [0, 7, 8, 9, 3, 4, 5],
    "A0-1 B2-3 A4-5": [0, 1, 8, 9, 4, 5],
    "A0-2 B3 A4-5": [0, 1, 2, 9, 4, 5],
    "A0-3 B1-3 A4-5": [0, 1, 2, 3, 7, 8, 9, 4, 5],
    "A0 B1-3 A5 (reachable with r = 1)": [0, 7, 8, 9, 5],
    "A0 B1-4 A5 (r = 1)": [0, 7, 8, 9, 10, 5],
    "B0-3 A4-5 (the oracle's layers; not a legal DFS path: it must start in A0)": [6, 7, 8, 9, 4, 5],
}
for name, path in PATHS.items():
    model.set_path(path, [1.0] * len(path))
    started = time.time()
    summary = evaluate(runner, bench, progress=False)["summary"]
    print(f"{name:78s} acc {summary['acc']:5.1f}  acc_ja {summary['acc_ja']:5.1f}  pure {summary['acc_pure']:5.1f}"
          f"  ({time.time() - started:.1f} s)", flush=True)
