"""The zoo builder in --quick mode: it trains, saves loadable models, and is deterministic for a seed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from evovlm.cli import main
from evovlm.eval.benchmarks import load_benchmark
from evovlm.eval.evaluate import evaluate
from evovlm.eval.runners import load_runner
from evovlm.zoo.train import layer_index


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    torch.set_num_threads(1)
    assert main(["zoo", "build", "--quick", "--quiet", "--out", str(out), "--seed", "3"]) == 0
    return out


def test_quick_build_writes_loadable_models(quick_zoo):
    report = json.loads((quick_zoo / "build.json").read_text())
    assert report["seed"] == 3 and set(report["final_loss"]) == {"base", "ja", "math", "vlm"}
    assert all(loss == loss for loss in report["final_loss"].values())  # not NaN
    text = load_runner(quick_zoo / "math")
    assert text.kind == "causal-lm"
    results = evaluate(text, load_benchmark("zoo-mgsm-ja", split="fitness", limit=4),
                       generation={"max_new_tokens": 8}, progress=False)
    assert results["summary"]["n"] == 4 and "acc_pure" in results["summary"]
    vlm = load_runner(quick_zoo / "vlm")
    assert vlm.kind == "vlm"
    results = evaluate(vlm, load_benchmark("zoo-vqa-ja", split="fitness", limit=3),
                       generation={"max_new_tokens": 6}, progress=False)
    assert "content_ja" in results["summary"] and results["samples"][0]["image"].startswith("zoo-scene:")


def test_experts_move_where_their_profiles_allow(quick_zoo):
    base = load_file(quick_zoo / "base" / "model.safetensors")
    ja = load_file(quick_zoo / "ja" / "model.safetensors")
    math = load_file(quick_zoo / "math" / "model.safetensors")
    layers = 4  # ZooSettings.quick()

    def drift(expert, depth):
        names = [n for n in base if layer_index(n, layers) == depth]
        return sum((expert[n] - base[n]).norm() for n in names) / sum(base[n].norm() for n in names)

    # quick profiles: JA trains embeddings, blocks 0 and 3, head at 1x and blocks 1-2 at 0.1x; MATH the reverse
    assert drift(ja, 0) > drift(ja, 1) and drift(ja, 3) > drift(ja, 2)
    assert drift(math, 1) > drift(math, 0) and drift(math, 2) > drift(math, 3)


def test_build_is_deterministic_and_refuses_to_overwrite(quick_zoo, tmp_path, capsys):
    assert main(["zoo", "build", "--quick", "--quiet", "--out", str(tmp_path), "--seed", "3"]) == 0
    for name in ("base", "ja"):
        first = load_file(quick_zoo / name / "model.safetensors")
        second = load_file(tmp_path / name / "model.safetensors")
        assert all(torch.equal(first[k], second[k]) for k in first)
    assert main(["zoo", "build", "--quick", "--quiet", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
