"""Run 63 (issue 18): what a PS+DFS fitness sees of hand-written paths over a model (A) and the zoo's reader (R).

    PYTHONPATH=scripts/dfs-reader python path_logprob.py ZOO MODEL "A0 R1-3 A1-5" "A0-5" ...

For each path, on the kanji and the digit problems, on the fitness split (all 100) and on dev: the mean reply
log-likelihood (what `zoo evolve`'s PS+DFS fitness averages) and the share of replies that are argmax at every
token (`evovlm.zoo.fitness.reply_scores`).
"""
import sys
import tempfile
from pathlib import Path

from paths_dev import parse
from transformers import AutoModelForCausalLM, AutoTokenizer

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.zoo.fitness import reply_scores
from evovlm.zoo.paths import save_dfs_path

zoo, model = Path(sys.argv[1]), Path(sys.argv[2])
with tempfile.TemporaryDirectory() as scratch:
    for number, name in enumerate(sys.argv[3:]):
        saved = save_dfs_path(model, zoo / "reader", parse(name), Path(scratch) / f"path-{number}")
        path_model, tokenizer = AutoModelForCausalLM.from_pretrained(saved).eval(), AutoTokenizer.from_pretrained(saved)
        cells = []
        for benchmark, label in (("zoo-mgsm-ja-kanji", "kanji"), ("zoo-mgsm-ja", "digits")):
            for split in ("fitness", "dev"):
                exact, logprob = reply_scores(path_model, tokenizer, benchmark, split)
                cells.append(f"{label} {split}: log-lik {logprob:.4f}, exact {100 * exact:.1f}")
        print(f"{name}: " + "; ".join(cells), flush=True)
