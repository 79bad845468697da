"""``evovlm score`` end to end through the CLI dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evovlm.cli import main


def _write_jsonl(path: Path, rows: list) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_rouge_ja_end_to_end(tmp_path, capsys):
    data = _write_jsonl(
        tmp_path / "preds.jsonl",
        [
            {"id": "a", "question": "天気は？", "reference": "今日はいい天気です", "prediction": "今日は天気です"},
            {"id": "b", "answer": "東京タワーは333メートルです", "response": "The tower is 333 meters tall."},
            "",  # blank lines are skipped
            {"id": "c", "reference": "ABC123", "prediction": ""},  # empty prediction is valid: scores 0
        ],
    )
    out = tmp_path / "scores.json"
    assert main(["score", str(data), "--metric", "rouge-ja", "--out", str(out), "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "rougeL_ja" in printed and "3 samples" in printed

    result = json.loads(out.read_text(encoding="utf-8"))
    assert "今日" in out.read_text(encoding="utf-8")  # ensure_ascii=False
    samples = result["samples"]
    assert [s["id"] for s in samples] == ["a", "b", "c"]
    assert samples[0]["question"] == "天気は？"
    # hand-computed in test_eval_metrics: 8/9, 2/13 (zeroed by the Japanese rule), 0
    assert [s["rougeL"] for s in samples] == pytest.approx([800 / 9, 200 / 13, 0.0])
    assert [s["rougeL_ja"] for s in samples] == pytest.approx([800 / 9, 0.0, 0.0])
    summary = result["summary"]
    assert summary["metric"] == "rouge-ja" and summary["n"] == 3 and summary["bootstrap_seed"] == 5
    assert summary["rougeL"] == pytest.approx((800 / 9 + 200 / 13) / 3)
    assert summary["rougeL_ja"] == pytest.approx(800 / 27)
    assert summary["rougeL_ci_low"] <= summary["rougeL"] <= summary["rougeL_ci_high"]


def test_mgsm_end_to_end(tmp_path, capsys):
    data = _write_jsonl(
        tmp_path / "mgsm.jsonl",
        [
            {"id": 1, "answer": "2,125", "response": "合計は２，１２５個です。答えは2,125です。"},
            {"id": 2, "answer": 18, "response": "The answer is 18."},
            {"id": 3, "answer": 18, "response": "答えはわかりません。"},
            {"id": 4, "reference": "5,600", "prediction": "答えは5600メートルです。"},
        ],
    )
    out = tmp_path / "mgsm_scores.json"
    assert main(["score", str(data), "--metric", "mgsm", "--out", str(out)]) == 0
    assert "acc_ja" in capsys.readouterr().out
    result = json.loads(out.read_text(encoding="utf-8"))
    samples = result["samples"]
    assert [s["id"] for s in samples] == [1, 2, 3, 4]
    assert [s["extracted"] for s in samples] == [2125, 18, None, 5600]
    assert [s["correct"] for s in samples] == [True, True, False, True]
    assert [s["correct_ja"] for s in samples] == [True, False, False, True]
    assert [s["is_ja"] for s in samples] == [True, False, True, True]
    assert result["summary"]["acc"] == pytest.approx(75.0)
    assert result["summary"]["acc_ja"] == pytest.approx(50.0)


def test_same_seed_same_output(tmp_path):
    data = _write_jsonl(
        tmp_path / "p.jsonl",
        [{"answer": str(i), "response": f"答えは{i % 3}です"} for i in range(20)],
    )
    outs = []
    for name in ("one.json", "two.json"):
        assert main(["score", str(data), "--metric", "mgsm", "--out", str(tmp_path / name), "--seed", "9"]) == 0
        outs.append((tmp_path / name).read_text(encoding="utf-8"))
    assert outs[0] == outs[1]


BAD_INPUTS = [
    # (file content or None for a missing file, metric, expected fragment of the message)
    (None, "mgsm", "no such file"),
    ("", "mgsm", "empty file"),
    ("\n\n", "rouge-ja", "empty file"),
    ('{"answer": 1, "response": "1"}\n{"answer": 2, "response": \n', "mgsm", "line 2: malformed JSON"),
    ('{"answer": 1, "response": "1"}\n\n[1, 2]\n', "mgsm", "line 3: expected a JSON object"),
    ('{"answer": 1, "response": "1"}\n{"id": 2, "response": "2"}\n', "mgsm", "line 2: missing 'reference'"),
    ('{"reference": "猫"}\n', "rouge-ja", "line 1: missing 'prediction'"),
    ('{"answer": 1, "response": "1"}\n{"answer": 2, "response": null}\n', "mgsm",
     "line 2: 'response' must be a string, got null"),
    ('{"reference": "猫", "prediction": 3}\n', "rouge-ja", "line 1: 'prediction' must be a string, got a number"),
    ('{"reference": null, "prediction": "猫"}\n', "rouge-ja", "line 1: 'reference' must be a string"),
    ('{"answer": 1, "response": "1"}\n{"answer": "many", "response": "2"}\n', "mgsm",
     "line 2: gold 'answer' must be a number"),
]


@pytest.mark.parametrize("content, metric, message", BAD_INPUTS)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, content, metric, message):
    data = tmp_path / "in.jsonl"
    if content is not None:
        data.write_text(content, encoding="utf-8")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["score", str(data), "--metric", metric, "--out", str(out_dir / "s.json")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []


def test_invalid_utf8_names_the_line(tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_bytes(b'{"answer": 1, "response": "1"}\n{"answer": 2, "response": "\xff"}\n')
    assert main(["score", str(data), "--metric", "mgsm"]) == 2
    assert "line 2: not valid UTF-8" in capsys.readouterr().err


def test_missing_output_folder_is_a_user_error(tmp_path, capsys):
    data = _write_jsonl(tmp_path / "p.jsonl", [{"answer": 1, "response": "1"}])
    assert main(["score", str(data), "--metric", "mgsm", "--out", str(tmp_path / "nope" / "s.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    from evovlm.eval.cli_score import write_json_atomic

    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "s.json", {"summary": object()})  # not JSON-serialisable mid-write
    assert list(tmp_path.iterdir()) == []
    write_json_atomic(tmp_path / "s.json", {"summary": {"名前": 1}})
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == {"summary": {"名前": 1}}
