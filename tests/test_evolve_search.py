"""The CMA-ES loop on cheap synthetic objectives: optimum found, seeding, failures, resume, pool.

The objectives score the genes directly (``fitness.synthetic``), so no model is loaded; the
genome is still the real PS genome of the tiny models and every candidate is decoded to a recipe.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evovlm.cli import main
from evovlm.errors import EvoVLMError
from evovlm.evolve.history import History
from evovlm.evolve.runs import run_evolution
from helpers import BLOCK_ENV, SPHERE_TARGET

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny"
TARGET = SPHERE_TARGET


def config(generations: int = 4, **extra) -> dict:
    data = {"mode": "ps", "seed": 7,
            "ps": {"method": "dare_ties", "base_model": str(TINY / "base"),
                   "models": [str(TINY / "ja"), str(TINY / "math"), str(TINY / "llava")],
                   "target": str(TINY / "llava")},
            "budget": {"generations": generations},
            "fitness": {"synthetic": "sphere", "target": TARGET},
            "runtime": {"save_model": False, "plot": False, "progress": False}}
    data.update(extra)
    return data


def candidates(run: Path) -> list[dict]:
    return History(run / "history.jsonl").of_type("candidate")


def test_cma_finds_the_known_optimum_and_writes_the_run(tmp_path):
    summary = run_evolution(config(generations=30), tmp_path / "run")
    best = np.array(summary["best"]["genome"])
    assert np.abs(best - TARGET).max() < 0.03, best
    assert summary["best"]["fitness"] > -1e-3
    run = tmp_path / "run"
    records = candidates(run)
    population = 4 + math.floor(3 * math.log(6))  # the paper's default for 6 genes
    assert len(records) == 30 * population == summary["stages"]["ps"]["trials"]
    assert records[0]["genome"] != records[1]["genome"]
    first = History(run / "history.jsonl").of_type("generation")[0]
    assert first["population"] == population and first["failed"] == 0
    assert sorted(p.name for p in (run / "state").iterdir()) == [f"gen-{g:04d}.safetensors" for g in range(30)]
    best_recipe = yaml.safe_load((run / "best_recipe.yaml").read_text())
    assert [m["weight"] for m in best_recipe["models"]] == pytest.approx(best[::2].tolist())
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["optimizer"]["sigma"] == pytest.approx(1 / 6) and resolved["optimizer"]["mean"] == 0.5
    assert resolved["ps"]["models"][0]["model"] == str(TINY / "ja")  # absolute: a resume works from anywhere
    assert json.loads((run / "summary.json").read_text())["best"] == summary["best"]
    # The first generation is drawn around the paper's start: every gene at 0.5.
    assert abs(np.mean([r["genome"] for r in records[:population]]) - 0.5) < 0.1


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    first = run_evolution(config(3), tmp_path / "a")
    second = run_evolution(config(3), tmp_path / "b")
    assert [r["genome"] for r in candidates(tmp_path / "a")] == [r["genome"] for r in candidates(tmp_path / "b")]
    assert first["best"] == second["best"]
    other = run_evolution(config(3, seed=8), tmp_path / "c")
    assert other["best"]["genome"] != first["best"]["genome"]
    with pytest.raises(EvoVLMError, match="already exists"):
        run_evolution(config(3), tmp_path / "a")
    again = run_evolution(config(3), tmp_path / "a", overwrite=True)
    assert again["best"] == first["best"]


def flaky(genes: np.ndarray) -> float:
    """Raises for some candidates and returns NaN for others."""
    if genes[0] > 0.7:
        raise RuntimeError("candidate exploded")
    if genes[1] > 0.7:
        return float("nan")
    return -float(np.sum((genes - 0.5) ** 2))


def test_raising_and_nan_candidates_get_the_worst_fitness_and_the_run_goes_on(tmp_path):
    summary = run_evolution(config(5, fitness={"synthetic": flaky}), tmp_path / "run")
    records = candidates(tmp_path / "run")
    raised = [r for r in records if r["error"] and "candidate exploded" in r["error"]]
    nans = [r for r in records if r["error"] and "nan" in r["error"]]
    assert raised and nans, "the seed should produce both kinds of failure"
    assert all(r["fitness"] is None and "RuntimeError" in r["traceback"] for r in raised)
    assert all(r["genome"][0] > 0.7 for r in raised)
    assert summary["stages"]["ps"]["trials"] == len(records) == 5 * 9
    assert summary["stages"]["ps"]["failed"] == len(raised) + len(nans)
    ok = [r["fitness"] for r in records if r["fitness"] is not None]
    assert summary["best"]["fitness"] == max(ok)
    generations = History(tmp_path / "run" / "history.jsonl").of_type("generation")
    assert sum(g["failed"] for g in generations) == len(raised) + len(nans)


BROKEN = {"on": True}


def broken_setup(genes: np.ndarray) -> float:
    if BROKEN["on"]:
        raise MemoryError("out of memory")
    return -float(np.sum((genes - 0.5) ** 2))


def test_a_generation_where_everything_fails_stops_the_run_and_resume_retries(tmp_path):
    BROKEN["on"] = True
    data = config(3, fitness={"synthetic": broken_setup},
                  runtime={"save_model": False, "plot": False, "progress": False, "keep_states": 2})
    with pytest.raises(EvoVLMError, match="every candidate of generation 0 failed, e.g. MemoryError: out of memory"):
        run_evolution(data, tmp_path / "run")
    assert len(candidates(tmp_path / "run")) == 9 and not (tmp_path / "run" / "state").exists()
    BROKEN["on"] = False
    summary = run_evolution(None, tmp_path / "run", resume=True)
    assert summary["stages"]["ps"]["failed"] == 0 and summary["stages"]["ps"]["trials"] == 27
    retried = History(tmp_path / "run" / "history.jsonl").candidates(0)
    assert all(r["fitness"] is not None for r in retried.values())
    states = sorted(p.name for p in (tmp_path / "run" / "state").iterdir())
    assert states == ["gen-0001.safetensors", "gen-0002.safetensors"]


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it as a candidate error."""


CALLS = {"n": 0, "crash_at": None}


def crashing(genes: np.ndarray) -> float:
    CALLS["n"] += 1
    if CALLS["n"] == CALLS["crash_at"]:
        raise Crash()
    return -float(np.sum((genes - np.asarray(TARGET)) ** 2))


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    CALLS.update(n=0, crash_at=None)
    reference = run_evolution(config(6, fitness={"synthetic": crashing}), tmp_path / "reference")
    CALLS.update(n=0, crash_at=9 * 3 + 4)  # mid generation 3, after 4 of its candidates
    run = tmp_path / "run"
    with pytest.raises(Crash):
        run_evolution(config(6, fitness={"synthetic": crashing}), run)
    assert len(candidates(run)) == 9 * 3 + 3
    assert sorted(p.name for p in (run / "state").iterdir())[-1] == "gen-0002.safetensors"
    with open(run / "history.jsonl", "a") as handle:
        handle.write('{"type": "candidate", "generation": 3, "ind')  # a line torn by the crash
    CALLS.update(n=0, crash_at=None)
    resumed = run_evolution(None, run, resume=True)
    assert CALLS["n"] == 6 * 9 - (9 * 3 + 3)  # only the missing candidates were evaluated
    assert resumed["best"] == reference["best"]
    assert [r["genome"] for r in candidates(run)] == [r["genome"] for r in candidates(tmp_path / "reference")]
    lines = (run / "history.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line is gone, nothing glued to it
    # Resuming a finished run changes nothing.
    assert run_evolution(None, run, resume=True)["best"] == reference["best"]
    assert CALLS["n"] == 6 * 9 - (9 * 3 + 3)


def test_resume_refuses_a_history_that_lost_scored_generations(tmp_path):
    """The optimiser state says 3 generations were told; a history cut to generation 0 would let the best be
    chosen from what is left, with generations 1-2 silently gone."""
    CALLS.update(n=0, crash_at=9 * 3 + 4)
    run = tmp_path / "run"
    with pytest.raises(Crash):
        run_evolution(config(6, fitness={"synthetic": crashing}), run)
    lines = (run / "history.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["generation"] == 0]
    (run / "history.jsonl").write_text("\n".join(kept) + "\n")
    CALLS.update(n=0, crash_at=None)
    with pytest.raises(EvoVLMError, match=r"lacks candidates of generation\(s\) 1-2, which the saved optimiser"):
        run_evolution(None, run, resume=True)
    (run / "history.jsonl").write_text("")
    with pytest.raises(EvoVLMError, match=r"generation\(s\) 0-2"):
        run_evolution(None, run, resume=True)
    for fitness in ("NaN", '"high"'):  # Python's json reads NaN; evolve writes null for a failure
        edited = lines[:2] + [lines[2].replace('"fitness": ', f'"fitness": {fitness}, "was": ', 1)] + lines[3:]
        (run / "history.jsonl").write_text("\n".join(edited) + "\n")
        with pytest.raises(EvoVLMError, match=f"has fitness {'nan' if fitness == 'NaN' else repr('high')}, which"):
            run_evolution(None, run, resume=True)
    assert CALLS["n"] == 0  # nothing was scored again


def test_validation_picks_the_final_snapshot_and_test_rescores_it(tmp_path):
    summary = run_evolution(config(4, validation={"synthetic": "sphere", "target": [0.5] * 6},
                                   test={"synthetic": "sphere", "target": [0.45] * 6}), tmp_path / "run")
    history = History(tmp_path / "run" / "history.jsonl")
    validations = history.of_type("validation")
    assert len(validations) == 4
    for record in validations:  # each generation's best by search fitness was validated
        generation = [r for r in history.of_type("candidate") if r["generation"] == record["generation"]]
        assert record["index"] == max(generation, key=lambda r: r["fitness"])["index"]
    chosen = max(validations, key=lambda r: r["fitness"])
    assert (summary["best"]["generation"], summary["best"]["index"]) == (chosen["generation"], chosen["index"])
    assert summary["best"]["validation"] == chosen["fitness"]
    expected = -float(np.sum((np.array(summary["best"]["genome"]) - 0.45) ** 2))
    assert summary["test"]["fitness"] == pytest.approx(expected)
    assert history.of_type("test")[0]["genome"] == summary["best"]["genome"]


def test_worker_pool_gives_the_serial_result(tmp_path):
    serial = run_evolution(config(2), tmp_path / "serial")
    pooled = run_evolution(config(2, runtime={"workers": 2, "save_model": False, "plot": False,
                                              "progress": False}), tmp_path / "pool")
    assert pooled["best"] == serial["best"]
    # Evaluated in worker processes (which of the two gets how many candidates is up to timing).
    pids = {r["worker"].split(":")[-1] for r in candidates(tmp_path / "pool")}
    assert 1 <= len(pids) <= 2 and str(os.getpid()) not in pids


def test_kill_9_then_resume_from_the_cli(tmp_path):
    # the objective hangs in its 13th call (candidate 3 of generation 1, population 9) until the kill
    data = config(3, fitness={"synthetic": "helpers:sphere_blocking"})
    reference = run_evolution(data, tmp_path / "reference")
    config_path = tmp_path / "evolve.yaml"
    config_path.write_text(yaml.safe_dump(data))
    run, marker = tmp_path / "run", tmp_path / "blocked"
    path = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)), **{BLOCK_ENV: f"12:{marker}"})
    process = subprocess.Popen([sys.executable, "-m", "evovlm.cli", "evolve", str(config_path), "--out", str(run),
                                "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not marker.exists():
        time.sleep(0.05)
    assert marker.exists() and process.poll() is None, process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(candidates(run)) == 12
    assert main(["evolve", "--resume", str(run), "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"] == reference["best"]
    assert len(candidates(run)) == 3 * 9


@pytest.mark.parametrize("name", ["cma", "sep_cma"])
def test_a_saved_optimiser_asks_exactly_what_the_original_asks(name, tmp_path):
    from evovlm.evolve.config import OptimizerConfig
    from evovlm.evolve.optimizer import Optimizer

    def sphere(genes):
        return float(np.sum((genes - np.asarray(TARGET)) ** 2))

    original = Optimizer.create(OptimizerConfig(name=name), np.full(6, 0.5), seed=11)
    for _ in range(3):
        genomes = original.ask_generation()
        original.tell(genomes, [sphere(g) for g in genomes])
    original.save(tmp_path / "gen-0002.safetensors")
    restored = Optimizer.load(tmp_path / "gen-0002.safetensors")
    assert (restored.generation, restored.population_size, restored.name) == (3, original.population_size, name)
    for _ in range(3):  # bit for bit, through asks, tells and covariance updates
        asked, again = original.ask_generation(), restored.ask_generation()
        assert all(np.array_equal(a, b) for a, b in zip(asked, again))
        original.tell(asked, [sphere(g) for g in asked])
        restored.tell(again, [sphere(g) for g in again])
    assert np.array_equal(original.mean, restored.mean)
