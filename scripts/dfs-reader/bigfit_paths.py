"""Run 67 (issue 18): the 400-problem fitness of `bigfit.py` for the hand paths and for evolved DFS models.

    PYTHONPATH=scripts/dfs-reader python bigfit_paths.py ZOO EVOLVED_DFS_MODEL ...
"""
import sys
from pathlib import Path

import bigfit
from dfsrun import each_model

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)

for name, model, tokenizer in each_model(Path(sys.argv[1]), sys.argv[2:]):
    exact, logprob = bigfit.scores(model, tokenizer, 300)
    print(f"{name:45s} wide fitness {exact + logprob:.4f} (exact {100 * exact:.1f}, lp {logprob:.4f})", flush=True)
