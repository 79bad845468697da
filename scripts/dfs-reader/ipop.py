"""Run 68 (issue 18, dev only): the DFS alone (no W, the exact-reply fitness of run 66) searched by CMA-ES with
restarts (IPOP): a restart after PATIENCE generations without a better best, each with twice the population, all
within TRIALS candidates; one JSON line per generation and per restart (its best path) to OUT.

    PYTHONPATH=scripts/dfs-reader python ipop.py RUN66/dfs/config.yaml ZOO OUT.jsonl SEED [TRIALS] [PATIENCE]

Restart k uses CMA-ES seed 1000 * SEED + k (restart 0 of SEED 0 is run 66's own seed-0 search). Candidates
that decode to the same path are scored once.
"""
import json
import sys
from pathlib import Path

import numpy as np
from cmaes import CMA
from dfsrun import expert_dfs

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.evolve.config import load_config
from evovlm.evolve.genome import DFSGenome
from evovlm.zoo.fitness import reply_scores
from evovlm.zoo.paths import path_name

config, zoo, out, seed = load_config(Path(sys.argv[1])), Path(sys.argv[2]), open(sys.argv[3], "w"), int(sys.argv[4])
trials = int(sys.argv[5]) if len(sys.argv) > 5 else 1400  # run 66's --full: 100 generations of 14
patience = int(sys.argv[6]) if len(sys.argv) > 6 else 15
genome = DFSGenome(config.dfs, 6, 6)
start = genome.initial_mean(config.optimizer.mean)
dfs, tokenizer = expert_dfs(zoo)
scored: dict[tuple, float] = {}


def fitness(genes: np.ndarray) -> tuple[float, tuple]:
    path = genome.decode(genes).path
    if path not in scored:
        dfs.set_path(list(path), [1.0] * len(path))
        exact, logprob = reply_scores(dfs, tokenizer, "zoo-mgsm-ja", "fitness")
        scored[path] = exact + logprob
    return scored[path], path


used, restart, population = 0, 0, config.optimizer.population_for(genome.size)
while used + population <= trials:
    engine = CMA(mean=start, sigma=config.optimizer.sigma, bounds=np.tile(config.optimizer.bounds, (genome.size, 1)),
                 seed=1000 * seed + restart, population_size=population, n_max_resampling=100)
    best, best_path, stale, generation = float("-inf"), None, 0, 0
    while used + population <= trials and stale < patience and not engine.should_stop():
        genomes = [engine.ask() for _ in range(population)]
        values = [fitness(genes) for genes in genomes]
        used += population
        engine.tell([(genes, -value) for genes, (value, _) in zip(genomes, values)])
        value, path = max(values, key=lambda pair: pair[0])
        best, best_path, stale = (value, path, 0) if value > best + 1e-9 else (best, best_path, stale + 1)
        out.write(json.dumps({"type": "generation", "restart": restart, "generation": generation, "trials": used,
                              "best": value, "path": path_name(path, 6)}) + "\n")
        generation += 1
    out.write(json.dumps({"type": "restart", "restart": restart, "population": population, "generations": generation,
                          "trials": used, "fitness": best, "path": list(best_path)}) + "\n")
    out.flush()
    print(f"restart {restart}: population {population}, {generation} generations, {used} trials so far, "
          f"fitness {best:.4f} {path_name(best_path, 6)}", flush=True)
    restart, population = restart + 1, 2 * population
