"""Run 68 (issue 18, dev only): DFS paths scored on a reserved draw (the 300 extra problems of `bigfit.py`, never a
fitness, dev or test problem) and on dev: the share of reference replies reproduced exactly and the mean reply
log-likelihood. The reserved draw is what a validation choice among a run's candidates would see.

    PYTHONPATH=scripts/dfs-reader python reserved_draw.py hand ZOO            # the legal hand paths
    PYTHONPATH=scripts/dfs-reader python reserved_draw.py run RUN/dfs ZOO     # each generation's best of a DFS run
    PYTHONPATH=scripts/dfs-reader python reserved_draw.py ipop OUT.jsonl ZOO  # each restart's best of ipop.py
"""
import json
import sys
from pathlib import Path

from bigfit import pool
from dfsrun import expert_dfs, generation_bests

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.evolve.config import load_config
from evovlm.evolve.genome import DFSGenome
from evovlm.zoo.fitness import reply_scores, score_replies
from evovlm.zoo.paths import hand_paths, path_name

kind, source, zoo = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if kind == "hand":
    paths = [(name, path, [1.0] * len(path)) for name, path in hand_paths(6, 4).items()]
elif kind == "run":
    genome = DFSGenome(load_config(source / "config.yaml").dfs, 6, 6)
    decoded = {generation: genome.decode(genes) for generation, (_, genes) in sorted(generation_bests(source).items())}
    paths = [(f"generation {g}", list(c.path), list(c.scales)) for g, c in decoded.items()]
else:
    restarts = [record for record in map(json.loads, open(source)) if record["type"] == "restart"]
    paths = [(f"restart {r['restart']}", r["path"], [1.0] * len(r["path"])) for r in restarts]
questions, replies = pool(300)
dfs, tokenizer = expert_dfs(zoo)
for label, path, scales in paths:
    dfs.set_path(path, scales)
    cells = [score_replies(dfs, tokenizer, questions[100:], replies[100:]),
             reply_scores(dfs, tokenizer, "zoo-mgsm-ja", "fitness"), reply_scores(dfs, tokenizer, "zoo-mgsm-ja", "dev")]
    columns = " ".join(f"{split} {100 * exact:4.1f}/{logprob:.3f}"
                       for split, (exact, logprob) in zip(("reserved", "fitness", "dev"), cells))
    print(f"{label:14s} {columns} {path_name(path, 6)}", flush=True)
