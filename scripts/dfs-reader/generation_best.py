"""Run 66 (issue 18): each generation's best candidate of a DFS-alone run (a new best, or every EVERY-th
generation), scored on zoo-mgsm-ja with its evolved scales and with every scale 1: the share of exact replies /
the mean reply log-likelihood on the fitness split and on dev. Shows what the scale matrix W buys.

    PYTHONPATH=scripts/dfs-reader python generation_best.py RUN_DIR ZOO [EVERY]
"""
import sys
from pathlib import Path

from dfsrun import expert_dfs, generation_bests

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.evolve.config import load_config
from evovlm.evolve.genome import DFSGenome
from evovlm.zoo.fitness import reply_scores
from evovlm.zoo.paths import path_name

run, zoo = Path(sys.argv[1]), Path(sys.argv[2])
every = int(sys.argv[3]) if len(sys.argv) > 3 else 5
genome = DFSGenome(load_config(run / "config.yaml").dfs, 6, 6)
best = generation_bests(run)
dfs, tokenizer = expert_dfs(zoo)
so_far = float("-inf")
for generation in sorted(best):
    fitness, genes = best[generation]
    if fitness <= so_far and generation % every:
        continue
    so_far = max(so_far, fitness)
    candidate = genome.decode(genes)
    cells = []
    for scales in (list(candidate.scales), [1.0] * len(candidate.path)):
        dfs.set_path(list(candidate.path), scales)
        for split in ("fitness", "dev"):
            exact, logprob = reply_scores(dfs, tokenizer, "zoo-mgsm-ja", split)
            cells.append(f"{100 * exact:4.1f}/{logprob:.3f}")
    print(f"gen {generation:3d} fit {fitness:.4f} W: fit {cells[0]} dev {cells[1]} | W=1: fit {cells[2]} "
          f"dev {cells[3]} | {path_name(candidate.path, 6)}", flush=True)
