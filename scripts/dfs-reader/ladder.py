"""Runs 60-61 (issue 18): the PS+DFS fitness (reply log-likelihood, first 25 kanji fitness problems) of hand
paths that put the reader's blocks in front of a model's, one block at a time. A = the model, R = the reader.

    python ladder.py MODEL READER
"""
import sys

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.dfs.modeling import EvoDFSForCausalLM
from evovlm.eval.runners import load_runner
from evovlm.zoo.fitness import reply_logprob
from evovlm.zoo.paths import path_name

model, reader = load_runner(sys.argv[1]), load_runner(sys.argv[2])
dfs = EvoDFSForCausalLM.from_models(model.model, reader.model)
layers = model.model.config.num_hidden_layers
a, r = list(range(layers)), [layers + block for block in range(layers)]
paths = [a, [0, r[1], *a], [0, r[3], *a], [0, r[1], r[2], *a], [0, r[1], r[2], r[3], *a], [0, r[1], *a[1:]],
         [0, r[1], r[2], *a[1:]], [0, r[1], r[2], r[3], *a[1:]]]
for path in paths:
    dfs.set_path(path, [1.0] * len(path))
    fitness = reply_logprob(dfs, model.tokenizer, "zoo-mgsm-ja-kanji", "fitness", 25)
    print(f"{path_name(path, layers).replace('B', 'R')}: {fitness:.3f}")
