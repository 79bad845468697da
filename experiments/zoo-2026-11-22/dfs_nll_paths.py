"""Run 23, first step: does the reply log-likelihood separate the hand-written DFS paths of run 17?

    python dfs_nll_paths.py ZOO_DIR      # e.g. evovlm/zoo/models; layer ids: A = 0-5, B = 6-11
    python dfs_nll_paths.py ZOO_DIR climb   # run 27: one indicator flip at a time, A to A0 B1-2 A3-5

Prints evovlm.zoo.fitness.mgsm_ja_reply_logprob (zoo-mgsm-ja fitness split) for each path, W = 1.
The climb: with A's layers in the middle repetition, each path is one flip from the one before
(B1 on in the first repetition, then B2, then A0, A1, A2 off in the second).
"""
import sys
import time

import torch

from evovlm.dfs.modeling import EvoDFSForCausalLM
from evovlm.eval.runners import load_runner
from evovlm.evolve.evaluators import load_causal_lm
from evovlm.zoo.fitness import mgsm_ja_reply_logprob

torch.set_num_threads(1)
zoo = sys.argv[1]
runner_a = load_runner(f"{zoo}/ja")
model = EvoDFSForCausalLM.from_models(runner_a.model, load_causal_lm(f"{zoo}/math", runner_a.device, runner_a.dtype))
PATHS = {"A (the JA expert)": [0, 1, 2, 3, 4, 5], "A0 B1-3 A4-5": [0, 7, 8, 9, 4, 5], "A0 B0-3 A4-5": [0, 6, 7, 8, 9, 4, 5],
         "A0-1 B2-3 A4-5": [0, 1, 8, 9, 4, 5], "A0-2 B3 A4-5": [0, 1, 2, 9, 4, 5], "A0 B1 A2-5": [0, 7, 2, 3, 4, 5],
         "A0 B1-2 A3-5": [0, 7, 8, 3, 4, 5], "A0 B1-4 A5": [0, 7, 8, 9, 10, 5], "A0 B1-5 A5": [0, 7, 8, 9, 10, 11, 5],
         "A0 B0-5 A5": [0, 6, 7, 8, 9, 10, 11, 5]}
CLIMB = {"A (the JA expert)": [0, 1, 2, 3, 4, 5], "A0 B1 A0-5": [0, 7, 0, 1, 2, 3, 4, 5],
         "A0 B1-2 A0-5": [0, 7, 8, 0, 1, 2, 3, 4, 5], "A0 B1-2 A1-5": [0, 7, 8, 1, 2, 3, 4, 5],
         "A0 B1-2 A2-5": [0, 7, 8, 2, 3, 4, 5], "A0 B1-2 A3-5": [0, 7, 8, 3, 4, 5],
         "A0 B2 A0-5": [0, 8, 0, 1, 2, 3, 4, 5], "A0-5 B1-2 A3-5": [0, 1, 2, 3, 4, 5, 7, 8, 3, 4, 5]}
for name, path in (CLIMB if sys.argv[2:] == ["climb"] else PATHS).items():
    model.set_path(path, [1.0] * len(path))
    started = time.time()
    print(f"{name:16s} {mgsm_ja_reply_logprob(model, runner_a.tokenizer):8.3f}  ({time.time() - started:.2f} s)", flush=True)
