"""Runs 15-16: the zoo VLM with Japanese colour work in phase 1 (``vlm_ja_work="all"``).

    python vlm_ja_work.py ZOO_DIR SEED STEPS     # ZOO_DIR holds that seed's base; writes ZOO_DIR/vlm
    # run 15: STEPS 1200, run 16: STEPS 2000; then, as for any build:
    evovlm eval --model ZOO_DIR/vlm --bench zoo-vqa-en --split dev --limit 200
    # and the oracle of examples/zoo-oracle-vlm.yaml with its model paths pointed at ZOO_DIR
"""
import sys
from dataclasses import replace

from evovlm.zoo.build import ZooSettings, build_zoo

zoo, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
settings = replace(ZooSettings(), vlm_ja_work="all", vlm_steps=steps, threads=1)
build_zoo(zoo, seed=seed, settings=settings, models=["vlm"])
