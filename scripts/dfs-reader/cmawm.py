"""Run 60: CMA-ES with margin (``cmaes.CMAwM``, for discrete genes) on the PS+DFS indicator genes
(no scale matrix, r = 3, A's layers in the middle repetition as ``init: a``), then the best path's
``acc_ja`` on zoo-mgsm-ja-kanji's dev split.

    python cmawm.py PS_MODEL READER GENERATIONS SEED
"""
import sys
import time

import numpy as np
import torch
from cmaes import CMAwM

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.dfs.modeling import EvoDFSForCausalLM
from evovlm.eval.benchmarks import load_benchmark
from evovlm.eval.evaluate import evaluate
from evovlm.eval.runners import load_runner, make_runner
from evovlm.zoo.fitness import reply_logprob
from evovlm.zoo.paths import path_name

torch.set_num_threads(1)
ps, reader, generations, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
runner_a = load_runner(ps)
dfs = EvoDFSForCausalLM.from_models(runner_a.model, load_runner(reader).model)
layers = runner_a.model.config.num_hidden_layers
stored, repeats = 2 * layers, 3


def decode(genes: np.ndarray) -> list[int]:
    """As evovlm.evolve.genome: the layers of the slots that are on, from A's block 0 to A's last."""
    path = [slot % stored for slot in range(stored * repeats) if genes[slot] > 0.5]
    if not path or path[0] != 0:
        path = [0, *path]
    return path if path[-1] == layers - 1 else [*path, layers - 1]


def fitness(path: list[int]) -> float:
    dfs.set_path(path, [1.0] * len(path))
    return reply_logprob(dfs, runner_a.tokenizer, "zoo-mgsm-ja-kanji", "fitness", 25)


mean = np.full(stored * repeats, 0.25)
mean[stored:stored + layers] = 0.75  # A in the middle repetition
optimizer = CMAwM(mean=mean, sigma=1 / 6, bounds=np.tile([0.0, 1.0], (stored * repeats, 1)),
                  steps=np.ones(stored * repeats), seed=seed)
scored: dict[tuple, float] = {}
best = (fitness(list(range(layers))), list(range(layers)))
started = time.time()
for generation in range(generations):
    told = []
    for _ in range(optimizer.population_size):
        evaluated, raw = optimizer.ask()
        path = tuple(decode(evaluated))
        if path not in scored:
            scored[path] = fitness(list(path))
        told.append((raw, -scored[path]))
        best = max(best, (scored[path], list(path)))
    optimizer.tell(told)
    if generation % 10 == 0:
        print(generation, round(best[0], 4), path_name(best[1], layers), round(time.time() - started), flush=True)
print("best", round(best[0], 4), path_name(best[1], layers), best[1])
dfs.set_path(best[1], [1.0] * len(best[1]))
bench = load_benchmark("zoo-mgsm-ja-kanji", split="dev")
summary = evaluate(make_runner(dfs, runner_a.tokenizer, name="dfs"), bench, progress=False)["summary"]
print("dev acc_ja", summary["acc_ja"])
