"""Candidate x shard evaluation (runtime.shards with the Ray backend): a candidate's fitness from its
shards equals its unsharded fitness bit for bit, because each shard generates whole batches of the
unsharded batching and the same metric scores all the responses at once."""

from __future__ import annotations

import pytest

from evovlm.errors import EvoVLMError
from evovlm.eval.runners import GenerationSettings, make_runner
from evovlm.evolve.config import config_from_dict
from evovlm.evolve.evaluators import BenchmarkScorer, shard_batches
from helpers import TINY, tiny_causal_lm


@pytest.mark.parametrize("samples,batch,shards", [(10, 3, 2), (10, 3, 4), (7, 7, 3), (100, 16, 8), (5, 1, 5)])
def test_shard_batches_cover_every_batch_once_in_order(samples, batch, shards):
    batches = -(-samples // batch)  # by hand: 10 samples in batches of 3 -> 4 batches (3, 3, 3, 1)
    ranges = [shard_batches(samples, batch, shard, shards) for shard in range(shards)]
    assert [b for r in ranges for b in r] == list(range(batches))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    assert [list(r) for r in (shard_batches(10, 3, s, 2) for s in range(2))] == [[0, 1], [2, 3]]


def test_a_runner_generates_only_the_batches_asked_for():
    model, tokenizer = tiny_causal_lm()
    runner = make_runner(model, tokenizer, name="tiny")
    questions = ["a", "bbbb", "cc", "ddddddd", "e"]  # longest first: d(3) b(1) c(2) | a(0) e(4)
    settings = GenerationSettings(template="{input}", max_new_tokens=3, batch_size=3)
    whole = runner.answer(questions, settings, progress=False)
    second = runner.answer(questions, settings, progress=False, batches=range(1, 2))
    assert second == [whole[0], None, None, None, whole[4]]


def _fitness(bench: str, **extra) -> dict:
    return {"benchmark": bench, "split": "fitness", "limit": 10, "generation": {"max_new_tokens": 12, "batch_size": 3},
            **extra}


@pytest.mark.parametrize("model,bench,metric", [
    ("math", "zoo-ja-qa", "rougeL"),  # the tiny model's replies overlap the references a little: fitness > 0
    ("llava", "zoo-vqa-ja", {"content": 1.0, "rougeL": 0.009})])
def test_sharded_fitness_equals_the_unsharded_one_bit_for_bit(model, bench, metric):
    from evovlm.eval.runners import load_runner

    config = config_from_dict({"mode": "ps", "ps": {"base_model": str(TINY / "base"), "models": [str(TINY / "ja")]},
                               "fitness": _fitness(bench, metric=metric)})
    runner = load_runner(TINY / model)
    scorer = BenchmarkScorer(config.fitness, "fitness")
    whole = scorer(runner)
    every = scorer.shard_responses(runner, 0, 1)  # one shard: every batch
    assert sorted(every) == list(range(10)) and len(set(every.values())) > 1
    if model == "math":
        assert 0 < whole[0] < 100
    for shards in (2, 3, 4):  # 10 samples in 4 batches of 3
        responses: dict[int, str] = {}
        for shard in range(shards):
            part = scorer.shard_responses(runner, shard, shards)
            assert not set(part) & set(responses)
            responses.update(part)
        assert responses == every  # the same batches give the same replies
        assert scorer.combine(responses) == whole  # fitness, summary and label alike
    with pytest.raises(ValueError, match="no response to 3 of the 10"):
        scorer.combine({index: "x" for index in range(7)})


@pytest.mark.parametrize("runtime,fitness,words", [
    ({"shards": 2}, _fitness("zoo-mgsm-ja"), "only the ray backend shards"),
    ({"shards": 2, "backend": "ray"}, {"callable": "test_evolve_runs:logit_margin"}, "not a callable one"),
    ({"shards": 0, "backend": "ray"}, _fitness("zoo-mgsm-ja"), "runtime.shards")])
def test_shards_need_ray_and_a_benchmark(runtime, fitness, words):
    with pytest.raises(EvoVLMError, match=words):
        config_from_dict({"mode": "ps", "ps": {"base_model": str(TINY / "base"), "models": [str(TINY / "ja")]},
                          "fitness": fitness, "runtime": runtime})


def test_the_utilisation_benchmark_keeps_8_heterogeneous_actors_busy_with_shards():
    """benchmarks/tail_bench.py (issue 17): 8 actors whose speeds differ up to 3x; whole candidates leave an
    idle tail, candidate x shard pieces keep them >= 90% busy."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "tail_bench.py")], capture_output=True, text=True,
                         check=True).stdout
    rows = {cells[0]: float(cells[2].rstrip("%")) for line in out.splitlines() if line.startswith("| ")
            and (cells := [cell.strip() for cell in line.strip("|").split("|")])[0][0].isdigit()}
    assert rows["8"] >= 90.0 > rows["1 (whole candidates)"], out
    assert re.search(r"8 actors, speeds drawn in \[1, 3\]", out)
