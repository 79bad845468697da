"""Run 60 (issue 18): the PS+DFS search over a PS model (A) and the kanji reader (B) on zoo-mgsm-ja-kanji,
then its rows on the dev split. Prints the rows; writes the run to OUT and the rows to OUT.json.

    python hybrid_search.py ZOO PS_MODEL OUT [--generations 60] [--problems 25] [--repeats 3]
                            [--scales none|matrix] [--sigma S] [--population N] [--seed 0]
                            [--fitness mgsm_ja_kanji_reply_logprob] [--digits-weight W]

ZOO: a zoo folder with base, ja, math and reader; PS_MODEL: the PS stage's model of `evovlm zoo evolve`
(OUT_DIR/ps-dfs/ps/model). The fitness: the reply log-likelihood on the kanji fitness split (or --fitness).
"""
import argparse
import json
import tempfile
from pathlib import Path

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.evolve.runs import run_evolution
from evovlm.zoo.paths import oracle_path, save_dfs_path
from evovlm.zoo.reader import reading_blocks
from evovlm.zoo.report import TARGET_KEYS, TableScorer, sign_test, zoo_shape

parser = argparse.ArgumentParser()
parser.add_argument("zoo", type=Path)
parser.add_argument("ps_model", type=Path)
parser.add_argument("out", type=Path)
parser.add_argument("--generations", type=int, default=60)
parser.add_argument("--problems", type=int, default=25)  # 0: all 100
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--scales", default="none")
parser.add_argument("--sigma", type=float, default=None)
parser.add_argument("--population", type=int, default=None)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--fitness", default="mgsm_ja_kanji_reply_logprob")  # a callable of evovlm.zoo.fitness
parser.add_argument("--digits-weight", type=float, default=None)  # mgsm_ja_both_reply_logprob's
parser.add_argument("--acc-weight", type=float, default=None)  # the weight of greedy accuracy, where it has one
args = parser.parse_args()
kanji = "zoo-mgsm-ja-kanji"
weight = {} if args.digits_weight is None else {"digits_weight": args.digits_weight}
weight |= {} if args.acc_weight is None else {"acc_weight": args.acc_weight}
function = args.fitness if ":" in args.fitness else f"evovlm.zoo.fitness:{args.fitness}"
optimizer = {key: value for key, value in (("sigma", args.sigma), ("population", args.population)) if value}
config = {"mode": "dfs", "seed": args.seed,
          "dfs": {"model_a": str(args.ps_model), "model_b": str(args.zoo / "reader"), "repeats": args.repeats,
                  "scales": args.scales, "scale_range": [0.5, 1.5], "init": "a"},
          "optimizer": optimizer, "budget": {"generations": args.generations},
          "fitness": {"callable": function,
                      "arguments": {"problems": args.problems or None, **weight}},
          "runtime": {"workers": 1, "progress": False}}
summary = run_evolution(config, args.out)
print("best", summary["best"]["fitness"], summary["stages"]["dfs"]["candidate"]["path"])
layers, output_blocks = zoo_shape(args.zoo)
with tempfile.TemporaryDirectory() as scratch:
    table = TableScorer(scratch, split="dev", progress=False)
    table.score("PS", args.ps_model, kanji, TARGET_KEYS)
    table.score("PS + reader's task vector", table.merged("added", {
        "method": "task_arithmetic", "base_model": str(args.zoo / "base"),
        "models": [{"model": str(args.ps_model), "weight": 1.0}, {"model": str(args.zoo / "reader"), "weight": 1.0}]}),
        kanji, TARGET_KEYS)
    oracle = oracle_path(layers, reading_blocks(layers - output_blocks))
    table.score("DFS oracle over PS", save_dfs_path(args.ps_model, args.zoo / "reader", oracle,
                                                     Path(scratch) / "oracle"), kanji, TARGET_KEYS)
    table.score("PS+DFS", args.out / "model", kanji, TARGET_KEYS)
    table.score("PS+DFS (digits)", args.out / "model", "zoo-mgsm-ja", TARGET_KEYS)
    table.score("PS (digits)", args.ps_model, "zoo-mgsm-ja", TARGET_KEYS)
print("sign test PS+DFS vs PS (won, lost, p):", sign_test(table.rows, "PS+DFS", "PS", kanji))
print("digits, PS+DFS vs PS (won, lost, p):", sign_test(table.rows, "PS+DFS (digits)", "PS (digits)"))
rows = [{k: v for k, v in row.items() if k != "correct_ja"} for row in table.rows]
Path(f"{args.out}.json").write_text(json.dumps({"config": config, "rows": rows}, indent=1, ensure_ascii=False))
