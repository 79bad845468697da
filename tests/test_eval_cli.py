"""``evovlm eval`` end to end on tiny saved models, the ``evaluate()`` library call, and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evovlm.cli import main
from evovlm.eval import benchmarks
from evovlm.eval.benchmarks import load_benchmark
from evovlm.eval.evaluate import SAMPLE_FIELDS, evaluate
from helpers import random_images, tiny_causal_lm, tiny_llava

TOP_LEVEL = {"schema_version", "model", "bench", "kind", "metric", "split", "data_seed", "data_source", "config",
             "summary", "timing", "samples", "created", "evovlm_version"}


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-lm")
    model, tokenizer = tiny_causal_lm()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-vlm")
    model, processor = tiny_llava()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def mgsm_tsv(tmp_path) -> Path:
    rows = [("ジャネットは卵を16個持っています。3個食べると何個残りますか？", "13"),
            ("1日に2ドル稼ぎます。5日で何ドル？", "10"), ("合計はいくつ？", "7")]
    path = tmp_path / "mgsm.tsv"
    path.write_text("".join(f"{q}\t{a}\n" for q, a in rows), encoding="utf-8")
    return path


def run_cli(*argv) -> int:
    return main(["eval", *map(str, argv), "--no-progress", "--device", "cpu"])


def test_eval_mgsm_end_to_end(lm_dir, mgsm_tsv, tmp_path, capsys):
    out = tmp_path / "res" / "mgsm.json"
    code = run_cli("--model", lm_dir, "--bench", "mgsm-ja", "--data", mgsm_tsv, "--out", out,
                   "--max-new-tokens", "6", "--batch-size", "2", "--limit", "2")
    assert code == 0
    printed = capsys.readouterr().out
    assert "acc" in printed and "acc_ja" in printed and str(out) in printed
    results = json.loads(out.read_text(encoding="utf-8"))
    assert set(results) == TOP_LEVEL
    assert (results["bench"], results["kind"], results["metric"], results["split"]) == (
        "mgsm-ja", "math", "mgsm", "test")
    assert results["model"] == str(lm_dir) and results["data_source"] == str(mgsm_tsv)
    config = results["config"]
    assert (config["template"], config["max_new_tokens"], config["batch_size"], config["num_beams"]) == (
        "ja-alpaca-cot", 6, 2, 1)
    assert config["limit"] == 2 and config["device"] == "cpu" and config["dtype"] == "float32"
    assert "Response" in config["stop_strings"]
    assert results["summary"]["n"] == 2 and 0 <= results["summary"]["acc"] <= 100
    assert len(results["samples"]) == 2
    for i, sample in enumerate(results["samples"]):
        assert set(sample) == set(SAMPLE_FIELDS)
        assert sample["index"] == i and sample["image"] is None and sample["rougeL"] is None
        assert isinstance(sample["response"], str) and isinstance(sample["correct"], bool)
        assert isinstance(sample["is_ja"], bool) and sample["reference"] in ("13", "10")
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file


def test_eval_vqa_end_to_end(vlm_dir, tmp_path):
    for i, image in enumerate(random_images(2)):
        image.save(tmp_path / f"{i}.png")
    data = tmp_path / "vqa.jsonl"
    data.write_text("".join(json.dumps({"image": f"{i}.png",
                                        "qas": [{"question": "何が見えますか？", "answer": "赤い車"}]},
                                       ensure_ascii=False) + "\n" for i in range(2)), encoding="utf-8")
    out = tmp_path / "vqa.json"
    assert run_cli("--model", vlm_dir, "--bench", "ja-vg-vqa-500", "--data", data, "--out", out,
                   "--max-new-tokens", "5", "--num-beams", "2", "--template", "llava-mistral") == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert (results["metric"], results["config"]["runner"], results["config"]["num_beams"]) == ("rouge-ja", "vlm", 2)
    assert results["config"]["repetition_penalty"] == 1.5  # benchmark default kept
    assert "rougeL" in results["summary"] and "rougeL_ja" in results["summary"]
    for sample in results["samples"]:
        assert sample["image"] == str(tmp_path / f"{sample['index']}.png")
        assert isinstance(sample["rougeL"], float) and sample["extracted"] is None and sample["reference"] == "赤い車"


def test_evaluate_in_memory_model(mgsm_tsv):
    """The evolution engine's path: a resident model + tokenizer, no files written."""
    model, tokenizer = tiny_causal_lm()
    bench = load_benchmark("mgsm-ja", path=mgsm_tsv)
    results = evaluate(model, bench, tokenizer=tokenizer, limit=2, generation={"max_new_tokens": 4},
                       model_name="candidate-3", progress=False)
    assert results["model"] == "candidate-3" and len(results["samples"]) == 2
    assert results["config"]["max_new_tokens"] == 4 and results["config"]["template"] == "ja-alpaca-cot"
    with pytest.raises(Exception, match="tokenizer"):
        evaluate(model, bench)


def test_vqa_bench_needs_a_vlm(lm_dir, tmp_path, capsys):
    random_images(1)[0].save(tmp_path / "a.png")
    data = tmp_path / "v.jsonl"
    data.write_text(json.dumps({"image": "a.png", "question": "q", "answer": "a"}) + "\n")
    out = tmp_path / "o.json"
    assert run_cli("--model", lm_dir, "--bench", "ja-vg-vqa-500", "--data", data, "--out", out) == 2
    assert "vision-language model" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("case", ["missing-model", "missing-data", "unknown-bench", "limit-0", "bad-template",
                                  "searched-data"])
def test_eval_bad_input(case, lm_dir, mgsm_tsv, tmp_path, capsys, monkeypatch):
    out = tmp_path / "never.json"
    args = {"--model": lm_dir, "--bench": "mgsm-ja", "--data": mgsm_tsv, "--out": out}
    expected = {
        "missing-model": "does not exist", "missing-data": "does not exist", "unknown-bench": "known benchmarks:",
        "limit-0": "argument --limit: must be at least 1, got 0", "bad-template": "unknown prompt template",
        "searched-data": "Looked in",
    }[case]
    extra: list[str] = []
    if case == "missing-model":
        args["--model"] = tmp_path / "no-such-model"
    elif case == "missing-data":
        args["--data"] = tmp_path / "no-such.tsv"
    elif case == "unknown-bench":
        args["--bench"] = "mgsm-xx"
    elif case == "limit-0":
        extra = ["--limit", "0"]
    elif case == "bad-template":
        extra = ["--template", "alpaca-typo"]
    elif case == "searched-data":
        del args["--data"]
        monkeypatch.setattr(benchmarks, "_REPO_ROOT", tmp_path / "repo")
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.delenv("EVOVLM_MGSM_JA", raising=False)
    argv = [str(x) for pair in args.items() for x in pair] + extra
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.startswith("evovlm eval: error:")
    assert not out.exists()
    if case == "unknown-bench":
        assert "mgsm-ja" in err and "ja-vg-vqa-500" in err


def test_list_benchmarks(capsys):
    assert main(["eval", "--list-benchmarks"]) == 0
    assert "ja-vlm-bench-in-the-wild" in capsys.readouterr().out
