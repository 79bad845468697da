"""Run 66 (issue 18): what the DFS alone's fitness sees of the hand paths and of evolved DFS models. For each, on
zoo-mgsm-ja, the share of reference replies reproduced exactly (teacher-forced argmax) and the mean reply
log-likelihood on the first 25 fitness problems, on all 100, and on dev.

    python fitness_vs_dev.py ZOO EVOLVED_DFS_MODEL ...
"""
import sys
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

import evovlm.dfs.auto  # noqa: F401  (registers the DFS model class)
import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.zoo.fitness import reply_scores
from evovlm.zoo.paths import hand_paths, save_dfs_path


def row(name: str, saved: str | Path) -> None:
    model, tokenizer = AutoModelForCausalLM.from_pretrained(saved).eval(), AutoTokenizer.from_pretrained(saved)
    cells = []
    for split, problems in (("fitness", 25), ("fitness", None), ("dev", None)):
        exact, logprob = reply_scores(model, tokenizer, "zoo-mgsm-ja", split, problems)
        cells.append(f"{split}{problems or ''}: lp {logprob:.4f} ex {100 * exact:.1f}")
    print(f"{name:40s} " + " | ".join(cells), flush=True)


zoo = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as scratch:
    for number, (name, path) in enumerate(hand_paths(6, 4).items()):
        row(name, save_dfs_path(zoo / "ja", zoo / "math", path, Path(scratch) / f"hand-{number}"))
    for evolved in sys.argv[2:]:
        row(evolved, evolved)
