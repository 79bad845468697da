"""Run 61 (issue 18): the DFS alone (JA expert = A, MATH expert = B) on zoo-mgsm-ja in other settings than
`evovlm zoo evolve`'s, then its `acc_ja` on the dev split. Writes the run to OUT and prints the dev row.

    python dfs_alone.py ZOO OUT [--scales none|matrix] [--generations 100] [--problems 25] [--repeats 3]
"""
import argparse
import tempfile
from pathlib import Path

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.evolve.runs import run_evolution
from evovlm.zoo.report import TARGET_KEYS, TableScorer

parser = argparse.ArgumentParser()
parser.add_argument("zoo", type=Path)
parser.add_argument("out", type=Path)
parser.add_argument("--scales", default="none")
parser.add_argument("--generations", type=int, default=100)
parser.add_argument("--problems", type=int, default=25)  # 0: all 100
parser.add_argument("--repeats", type=int, default=3)
args = parser.parse_args()
config = {"mode": "dfs", "seed": 0,
          "dfs": {"model_a": str(args.zoo / "ja"), "model_b": str(args.zoo / "math"), "repeats": args.repeats,
                  "scales": args.scales, "scale_range": [0.5, 1.5], "init": "a"},
          "budget": {"generations": args.generations},
          "fitness": {"callable": "evovlm.zoo.fitness:mgsm_ja_reply_logprob",
                      "arguments": {"problems": args.problems or None}},
          "runtime": {"workers": 1, "progress": False}}
summary = run_evolution(config, args.out)
print("best", summary["best"]["fitness"], summary["stages"]["dfs"]["candidate"]["path"])
with tempfile.TemporaryDirectory() as scratch:
    row = TableScorer(scratch, split="dev", progress=False).score("DFS", args.out / "model", "zoo-mgsm-ja", TARGET_KEYS)
print("dev acc_ja", row["acc_ja"])
