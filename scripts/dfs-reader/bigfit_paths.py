"""Run 67 (issue 18): the 400-problem fitness of `bigfit.py` for the hand paths and for evolved DFS models.

    PYTHONPATH=scripts/dfs-reader python bigfit_paths.py ZOO EVOLVED_DFS_MODEL ...
"""
import sys
import tempfile
from pathlib import Path

import bigfit
from transformers import AutoModelForCausalLM, AutoTokenizer

import evovlm.dfs.auto  # noqa: F401  (registers the DFS model class)
import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.zoo.paths import hand_paths, save_dfs_path


def row(name: str, saved: str | Path) -> None:
    model, tokenizer = AutoModelForCausalLM.from_pretrained(saved).eval(), AutoTokenizer.from_pretrained(saved)
    exact, logprob = bigfit.scores(model, tokenizer, 300)
    print(f"{name:45s} wide fitness {exact + logprob:.4f} (exact {100 * exact:.1f}, lp {logprob:.4f})", flush=True)


zoo = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as scratch:
    for number, (name, path) in enumerate(hand_paths(6, 4).items()):
        row(name, save_dfs_path(zoo / "ja", zoo / "math", path, Path(scratch) / f"hand-{number}"))
    for evolved in sys.argv[2:]:
        row(evolved, evolved)
