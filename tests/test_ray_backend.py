"""``backend: ray`` on a local 2-actor CPU cluster, in a network namespace of its own (Ray probes outside
addresses when it starts): the same candidates and fitness as the serial backend, bit for bit, and an actor
killed mid-candidate loses nothing. Skipped where ``unshare -n`` is not allowed (CI runs as root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
CHILD = r'''
import json, sys
from pathlib import Path
from evovlm.evolve.history import History
from evovlm.evolve.runs import run_evolution

import torch

torch.set_num_threads(1)  # as each of the 2 actors on this 2-core machine: one BLAS thread, the same sums
out, kind = Path(sys.argv[1]), sys.argv[2]
tiny = Path(sys.argv[3])
ps = {"method": "dare_ties", "base_model": str(tiny / "base"), "models": [str(tiny / "ja"), str(tiny / "math")]}
fitness = {"synthetic": {"synthetic": "helpers:sphere_dying"}, "model": {"callable": "test_evolve_runs:logit_margin"},
           # 10 questions in 4 generation batches of 3, the Ray run in 3 shards per candidate; the tiny models'
           # replies overlap the references a little, so ROUGE-L differs from candidate to candidate
           "shards": {"benchmark": "zoo-ja-qa", "split": "fitness", "limit": 10, "metric": "rougeL",
                      "generation": {"max_new_tokens": 12, "batch_size": 3}, "imports": ["dying_generate"]}}
# reduced fitness over shards: 6 of the 10 questions per candidate; calibration and re-ranking whole
fitness["subset"] = {**fitness["shards"], "metric": {"content_ja": 1.0, "rougeL": 0.5},
                     "subset": {"method": "random", "size": 6, "calibration": 2, "rerank": 3}}
fitness = fitness[kind]
result = {}
for backend in ("local", "ray"):
    if backend == "ray" and len(sys.argv) > 4:  # an actor (not this process) dies: set before Ray starts them
        import os

        os.environ["EVOVLM_TEST_DIE"] = sys.argv[4]
    config = {"mode": "ps", "seed": 5, "ps": ps, "optimizer": {"population": 6}, "budget": {"generations": 3},
              "fitness": fitness, "runtime": {"workers": 1 if backend == "local" else 2, "backend": backend,
                                             "save_model": False, "plot": False, "progress": False,
                                             "devices": ["cpu"]}}
    if kind in ("shards", "subset"):
        config["runtime"]["shards"] = 3 if backend == "ray" else 1
    summary = run_evolution(config, out / backend)
    records = History(out / backend / "history.jsonl").of_type("candidate")
    result[backend] = {"best": summary["best"],
                       "candidates": sorted((r["generation"], r["index"], r["genome"], r["fitness"]) for r in records),
                       "workers": sorted({w for r in records for w in r["worker"].split(",")}),
                       "scores": sorted((r["generation"], r["index"], json.dumps(r.get("score"), sort_keys=True))
                                        for r in records),
                       "reranks": sorted((r["generation"], r["index"], r["fitness"])
                                         for r in History(out / backend / "history.jsonl").of_type("rerank"))}
print("RESULT " + json.dumps(result))
'''


def _isolated(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """``args`` inside a new network namespace with only the loopback interface up."""
    script = "ip link set lo up 2>/dev/null; exec \"$@\""
    return subprocess.run(["unshare", "-n", "sh", "-c", script, "sh", *args], env=env, capture_output=True,
                          text=True, timeout=600)


def _can_isolate() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _can_isolate(), reason="unshare -n is not allowed here (needs root or "
                                "user namespaces): Ray is only started in a network namespace of its own")


def _run(tmp_path: Path, kind: str, *die: str) -> dict:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
                   "RAY_USAGE_STATS_ENABLED": "0"}
    done = _isolated([sys.executable, "-c", CHILD, str(tmp_path), kind, str(ROOT / "examples" / "tiny"), *die],
                     environment)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_ray_actors_give_the_serial_candidates_and_fitness_bit_for_bit(tmp_path):
    result = _run(tmp_path, "model")  # tiny models merged in memory, scored by a function of the weights
    assert result["ray"]["candidates"] == result["local"]["candidates"] and len(result["ray"]["candidates"]) == 18
    assert result["ray"]["best"] == result["local"]["best"]
    assert len(result["ray"]["workers"]) == 2  # both actors took candidates


def test_an_actor_killed_mid_candidate_loses_nothing(tmp_path):
    marker = tmp_path / "died"
    result = _run(tmp_path, "synthetic", f"4:{marker}")
    assert marker.exists()  # an actor process did die, in the middle of its fifth candidate
    assert result["ray"]["candidates"] == result["local"]["candidates"]  # each candidate once, none lost
    assert result["ray"]["best"] == result["local"]["best"]


def test_sharded_candidates_give_the_serial_fitness_and_survive_a_dying_actor(tmp_path):
    """Each candidate in 3 shards over 2 actors; one actor dies in its 5th generation batch, mid-shard."""
    marker = tmp_path / "died"
    result = _run(tmp_path, "shards", f"4:{marker}")
    assert marker.exists()  # an actor process did die, in the middle of a shard
    # every candidate once, with the unsharded fitness and summary, bit for bit
    assert result["ray"]["candidates"] == result["local"]["candidates"] and len(result["ray"]["candidates"]) == 18
    assert result["ray"]["scores"] == result["local"]["scores"]
    assert result["ray"]["best"] == result["local"]["best"]
    assert len(result["ray"]["workers"]) >= 2  # shards of candidates went to both actors
    assert len({fitness for *_, fitness in result["ray"]["candidates"]}) > 3  # the fitness tells candidates apart


def test_a_reduced_fitness_in_shards_gives_the_serial_search(tmp_path):
    """fitness.subset with 3 shards per candidate: the shards answer the subset's items and the driver estimates
    from them; calibration and re-ranking go whole. Candidates, fitness and re-ranks equal the serial run's."""
    result = _run(tmp_path, "subset")
    assert result["ray"]["candidates"] == result["local"]["candidates"] and len(result["ray"]["candidates"]) == 18
    assert result["ray"]["scores"] == result["local"]["scores"]
    assert result["ray"]["reranks"] == result["local"]["reranks"] and len(result["ray"]["reranks"]) == 3
    assert result["ray"]["best"] == result["local"]["best"]
