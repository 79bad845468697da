"""Run 66 (issue 18): what the DFS alone's fitness sees of the hand paths and of evolved DFS models. For each, on
zoo-mgsm-ja, the share of reference replies reproduced exactly (teacher-forced argmax) and the mean reply
log-likelihood on the first 25 fitness problems, on all 100, and on dev.

    PYTHONPATH=scripts/dfs-reader python fitness_vs_dev.py ZOO EVOLVED_DFS_MODEL ...
"""
import sys
from pathlib import Path

from dfsrun import each_model

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.zoo.fitness import reply_scores

for name, model, tokenizer in each_model(Path(sys.argv[1]), sys.argv[2:]):
    cells = []
    for split, problems in (("fitness", 25), ("fitness", None), ("dev", None)):
        exact, logprob = reply_scores(model, tokenizer, "zoo-mgsm-ja", split, problems)
        cells.append(f"{split}{problems or ''}: lp {logprob:.4f} ex {100 * exact:.1f}")
    print(f"{name:40s} " + " | ".join(cells), flush=True)
