"""Run 62 (issue 18): the PS stage of `evovlm zoo evolve --full`'s ps-dfs run alone (its model scored on dev), for
a zoo that has no reader yet.

    python ps_stage.py ZOO OUT SEED      (the PS model: OUT/model)
"""
import sys
from pathlib import Path

from evovlm.evolve.runs import run_evolution
from evovlm.zoo.evolution import FULL, run_configs

zoo, out, seed = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3])
config = {**run_configs(zoo, seed=seed, budget=FULL, split="dev")["ps-dfs"], "mode": "ps"}
del config["dfs"]
run_evolution(config, out, resume=False, overwrite=True, progress=False)
