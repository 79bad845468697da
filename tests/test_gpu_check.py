"""benchmarks/gpu_check.py: the full-shape GPU check runs end to end at --small shapes on a CPU."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def test_small_run_times_every_step_and_prints_the_table(gpu_check, tmp_path, capsys):
    out = tmp_path / "gpu-check.json"
    assert gpu_check.main(["--small", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    checks = [row["check"] for row in result["rows"]]
    assert checks == ["re-merge, DARE-TIES of 3 resident sources", "re-merge, TIES of 3 resident sources",
                      "greedy generation, 8 MGSM-JA prompts",
                      "2-beam generation, 2 images 56x56", "DFS forward, T = 12 slots over 8 stored layers"]
    assert all(row["seconds"] > 0 for row in result["rows"]) and result["complete"] is True
    assert "GiB of DARE draws; first candidate" in result["rows"][0]["shape"]
    # the prompts are the real MGSM-JA ones, so their lengths vary
    assert "prompts 137-278 tokens, 8 new tokens each" in result["rows"][2]["shape"]
    assert "| check | shape | seconds | goal |" in capsys.readouterr().out


def test_full_shapes_refuse_a_cpu_with_a_message(gpu_check, capsys):
    assert gpu_check.main(["--device", "cpu"]) == 2
    assert "need a GPU" in capsys.readouterr().err


def test_the_full_shapes_are_the_real_7b_configs(gpu_check):
    text = gpu_check._text_config(small=False)
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (4096, 32, 32000)
    vlm = gpu_check._vlm_config(small=False, image_token_index=4)
    assert (vlm.vision_config.image_size, vlm.vision_config.patch_size, vlm.text_config.vocab_size) == (336, 14, 32064)
    assert gpu_check.Sizes().dfs_slots == 192 and 2 * text.num_hidden_layers == 64
