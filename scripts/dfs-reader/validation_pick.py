"""Run 62 (issue 18): would a validation pick avoid the paths that cost digits? Each generation's best path of a
PS+DFS run (distinct paths), its accuracy on the fitness problems the search did not use (26-100, kanji and
digits); then the dev scores of the path with the best of those and of the run's final path.

    PYTHONPATH=scripts/dfs-reader python validation_pick.py RUN ZOO MODEL    (RUN: a hybrid_search.py output)
"""
import sys
from pathlib import Path

from accfit import accuracy
from dfsrun import generation_bests

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.dfs.modeling import EvoDFSForCausalLM
from evovlm.eval.runners import load_runner
from evovlm.evolve.config import load_config
from evovlm.evolve.genome import DFSGenome
from evovlm.zoo.paths import path_name

run, zoo, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
genome = DFSGenome(load_config(run / "config.yaml").dfs, 6, 6)
best = generation_bests(run)
runner_a, reader = load_runner(model), load_runner(str(zoo / "reader"))
dfs = EvoDFSForCausalLM.from_models(runner_a.model, reader.model)
tokenizer = runner_a.tokenizer


def scores(path: list[int], split: str, start: int, stop: int) -> tuple[float, float]:
    dfs.set_path(path, [1.0] * len(path))
    return tuple(accuracy(dfs, tokenizer, bench, split, start, stop) for bench in ("zoo-mgsm-ja-kanji", "zoo-mgsm-ja"))


seen: dict[str, tuple] = {}
for generation in sorted(best):
    path = list(genome.decode(best[generation][1]).path)
    name = path_name(path, 6).replace("B", "R")
    if name not in seen:
        seen[name] = (best[generation][0], *scores(path, "fitness", 25, 100), path)
        print(f"gen {generation}: fitness {seen[name][0]:.4f}, problems 26-100 kanji {seen[name][1]:.1f} digits "
              f"{seen[name][2]:.1f}  {name}", flush=True)
picked = max(seen, key=lambda name: (seen[name][1] + seen[name][2], seen[name][0]))
final = max(seen, key=lambda name: seen[name][0])
for label, name in (("validation pick", picked), ("final", final)):
    kanji, digits = scores(seen[name][3], "dev", 0, 200)
    print(f"{label} {name}: dev kanji {kanji}, digits {digits}")
