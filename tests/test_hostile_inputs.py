"""Hostile and careless input, against the CLI and the app (issue "Hardening").

Every case asserts what the user gets (an exit code of 2 and a message, or a bounded result) and
that nothing was executed, deleted or left behind. The classes:

- code from data: pickled optimiser states, pickled weights, YAML tags;
- big input: megabyte rows, oversized files, nesting, long chat histories;
- user data: --overwrite of someone else's folder or of a live run, kills mid-write;
- path escapes: symlinks out of a run folder, index entries out of a model folder;
- app handlers: malformed results files, nested JSON, NUL bytes;
- tracebacks: non-finite or non-numeric values, non-UTF-8 files, broken indexes, full disks,
  out-of-range numbers; non-finite tensors.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evovlm.cli import main
from helpers import BLOCK_ENV, REPO, TINY, make_results, make_run_dir, running_app

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), HF_HUB_OFFLINE="1")


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``evovlm ARGV`` in a subprocess: a segfault or a traceback shows here as it would to a user."""
    return subprocess.run([sys.executable, "-m", "evovlm.cli", *map(str, argv)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def refused(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "error:" in result.stderr, result.stderr[-2000:]
    for word in words:
        assert word in result.stderr, (word, result.stderr[-2000:])


def recipe(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


LINEAR = f"method: linear\nmodels:\n  - model: {TINY / 'ja'}\n  - model: {TINY / 'math'}\n"


class Touch:
    """A pickle that, when loaded, creates a file: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ===================================================================================================
# Code from data
# ===================================================================================================

def _finished_run(tmp_path: Path) -> Path:
    from evovlm.evolve.runs import run_evolution

    config = {"mode": "ps", "seed": 1,
              "ps": {"method": "linear", "models": [str(TINY / "ja"), str(TINY / "math")]},
              "budget": {"generations": 2}, "fitness": {"synthetic": "sphere", "target": [0.3, 0.7]},
              "runtime": {"save_model": False, "plot": False, "progress": False}}
    run_evolution(config, tmp_path / "run")
    return tmp_path / "run"


def test_resume_never_unpickles_a_state_planted_in_the_run_folder(tmp_path):
    run = _finished_run(tmp_path)
    (run / "summary.json").unlink()
    (run / "result.json").unlink()
    for state in (run / "state").iterdir():
        state.unlink()
    marker = tmp_path / "pwned"
    (run / "state" / "gen-0001.pkl").write_bytes(pickle.dumps(Touch(marker)))
    refused(cli("evolve", "--resume", run), "pickle", "no longer reads")
    assert not marker.exists()


def test_a_damaged_optimiser_state_is_a_message(tmp_path):
    run = _finished_run(tmp_path)
    (run / "summary.json").unlink()
    (run / "result.json").unlink()
    latest = sorted((run / "state").iterdir())[-1]
    latest.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}     " + os.urandom(64))
    refused(cli("evolve", "--resume", run), "cannot read optimiser state", latest.name)


def test_yaml_tags_build_no_python_objects(tmp_path):
    marker = tmp_path / "pwned"
    bad = recipe(tmp_path / "r.yaml", f"!!python/object/apply:os.system ['touch {marker}']\n")
    refused(cli("merge", bad, "--out", tmp_path / "o"), "not valid YAML")
    assert not marker.exists() and not (tmp_path / "o").exists()


def _pickled_model(tmp_path: Path, payload=None, legacy: bool = False) -> Path:
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(TINY / "ja" / "config.json", folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / "ja" / name, folder)
    state = payload if payload is not None else load_file(TINY / "ja" / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=not legacy)
    return folder


def test_eval_asks_for_allow_pickle_and_even_then_runs_no_code(tmp_path):
    model = _pickled_model(tmp_path)
    refused(cli("eval", "--model", model, "--bench", "zoo-mgsm-ja", "--limit", "1"), "pickle", "--allow-pickle")
    loaded = cli("eval", "--model", model, "--bench", "zoo-mgsm-ja", "--limit", "1", "--max-new-tokens", "4",
                 "--allow-pickle", "--out", tmp_path / "r.json", "--no-progress")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    marker = tmp_path / "pwned"
    (tmp_path / "evil").mkdir()
    evil = _pickled_model(tmp_path / "evil", payload={"weight": Touch(marker)})
    refused(cli("eval", "--model", evil, "--bench", "zoo-mgsm-ja", "--limit", "1", "--allow-pickle"))
    refused(cli("merge", recipe(tmp_path / "m.yaml", f"method: linear\nmodels:\n  - model: {evil}\n"), "--out",
                tmp_path / "o", "--allow-pickle"), "weights_only")
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_old_format_pickles_load_under_allow_pickle(tmp_path):
    model = _pickled_model(tmp_path, legacy=True)
    with open(model / "pytorch_model.bin", "rb") as handle:
        assert handle.read(2) != b"PK"  # not a zip: the format torch.load cannot memory-map
    out = tmp_path / "merged"
    result = cli("merge", recipe(tmp_path / "r.yaml", f"method: linear\nmodels:\n  - model: {model}\n"),
                 "--out", out, "--allow-pickle", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    merged, source = load_file(out / "model.safetensors"), load_file(TINY / "ja" / "model.safetensors")
    assert all(torch.equal(merged[key], source[key]) for key in source)


# ===================================================================================================
# Big input
# ===================================================================================================

def test_a_multi_megabyte_prediction_is_scored_not_a_crash(tmp_path):
    data = tmp_path / "p.jsonl"
    rows = [{"reference": "赤いりんごです。", "prediction": "あ" * 3_000_000},  # 9 MB of UTF-8 in one row
            {"reference": "赤いりんごです。", "prediction": "赤いりんごです。"}]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "s.json"
    started = time.monotonic()
    result = cli("score", data, "--metric", "rouge-ja", "--out", out)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])  # MeCab segfaulted (139) here
    assert time.monotonic() - started < 120 and "scored on their first 10,000" in result.stdout
    samples = json.loads(out.read_text(encoding="utf-8"))["samples"]
    assert samples[0]["truncated_chars"] == {"prediction": 3_000_000} and "truncated_chars" not in samples[1]
    assert samples[1]["rougeL_ja"] == 100.0
    mgsm = tmp_path / "m.jsonl"
    mgsm.write_text(json.dumps({"answer": 18, "prediction": "計算" * 2_000_000 + "答えは18です"}) + "\n",
                    encoding="utf-8")
    result = cli("score", mgsm, "--metric", "mgsm")
    assert result.returncode == 0 and "acc_ja" in result.stdout, result.stderr[-2000:]


def test_an_oversized_recipe_is_refused_unread(tmp_path):
    big = recipe(tmp_path / "r.yaml", LINEAR + "# " + "x" * (5 * 2**20) + "\n")
    refused(cli("merge", big, "--out", tmp_path / "o"), "too large")
    assert not (tmp_path / "o").exists()


def test_deeply_nested_json_in_a_data_file_is_a_message(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": ' + "[" * 200_000 + "]" * 200_000 + ', "answer": 1}\n', encoding="utf-8")
    refused(cli("eval", "--model", TINY / "ja", "--bench", "mgsm-ja", "--data", data), "nested too deeply")


def test_chat_history_is_bounded_in_turns_characters_and_tokens():
    from evovlm.app.config import Limits
    from evovlm.app.generate import Decoding, Prompt, UserError, bounded_prompt
    from evovlm.app.ui import Demo

    limits = Limits()
    demo = Demo.__new__(Demo)
    demo.config = type("C", (), {"limits": limits})()
    history = []
    for turn in range(7):
        history += [{"role": "user", "content": f"{turn}" * 4000}, {"role": "assistant", "content": "答" * 4000}]
    messages = demo._conversation(history * 1000, "最後の質問")  # 14,000 messages through the API
    assert sum(len(m["content"]) for m in messages) <= limits.max_prompt_chars
    assert messages[-1] == {"role": "user", "content": "最後の質問"} and len(messages) <= 2 * limits.max_turns

    class Tokenizer:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": list(text)}

    runner = type("R", (), {"name": "tiny", "tokenizer": Tokenizer(),
                            "model": type("M", (), {"config": type("K", (), {"max_position_embeddings": 512})()})()})()
    decoding = Decoding(num_beams=1, max_new_tokens=12, repetition_penalty=1.0)
    assert bounded_prompt(runner, Prompt("x" * 500, True), decoding, limits).text == "x" * 500
    with pytest.raises(UserError, match="too long for tiny .501 tokens; at most 500"):
        bounded_prompt(runner, Prompt("x" * 501, True), decoding, limits)
    greedy = Decoding(num_beams=1, max_new_tokens=1024, repetition_penalty=1.0)  # the context, not the chat, is short
    with pytest.raises(UserError, match="1024 new tokens leave no room for this prompt .90 tokens. in the 512-token "
                                        "context of tiny: set the new tokens to 422 or fewer"):
        bounded_prompt(runner, Prompt("x" * 90, True), greedy, limits)


# ===================================================================================================
# User data is never deleted
# ===================================================================================================

def test_merge_overwrite_never_deletes_a_folder_of_user_files(tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    refused(cli("merge", recipe(tmp_path / "r.yaml", LINEAR), "--out", mine, "--overwrite"), "nothing was deleted")
    assert sorted(os.listdir(mine)) == ["chapter1.tex"] and (mine / "chapter1.tex").read_text() == "precious"
    assert hidden_leftovers(tmp_path) == []


def test_evolve_overwrite_of_a_live_run_is_refused(tmp_path):
    config = tmp_path / "evolve.yaml"
    config.write_text(yaml.safe_dump({
        "mode": "ps", "seed": 7, "ps": {"method": "linear", "models": [str(TINY / "ja"), str(TINY / "math")]},
        "budget": {"generations": 3}, "fitness": {"synthetic": "helpers:sphere_blocking"},
        "runtime": {"save_model": False, "plot": False, "progress": False}}))
    run, marker = tmp_path / "run", tmp_path / "blocked"
    live = subprocess.Popen([sys.executable, "-m", "evovlm.cli", "evolve", str(config), "--out", str(run)],
                            env={**ENV, BLOCK_ENV: f"5:{marker}"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not marker.exists() and live.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists() and live.poll() is None, live.stderr.read().decode()
        before = (run / "history.jsonl").read_bytes()
        refused(cli("evolve", config, "--out", run, "--overwrite"), "another evovlm evolve is running",
                "nothing was changed")
        assert (run / "history.jsonl").read_bytes() == before and (run / "config.yaml").is_file()
        assert live.poll() is None  # the live run goes on
    finally:
        live.kill()
        live.wait()


KILL_AFTER_RENAMING_THE_OUTPUT = """
import os, sys
real = os.replace
def replace(source, target, *args, **kwargs):
    real(source, target, *args, **kwargs)
    if os.path.basename(os.fspath(source)) == "merged":  # the old output was just moved aside
        os.kill(os.getpid(), 9)
os.replace = replace
if sys.argv[1] == "fallback":
    import evovlm.io.atomic as atomic
    atomic._exchange = lambda first, second: False
sys.argv = ["evovlm", *sys.argv[2:]]
from evovlm.cli import main
main()
"""


@pytest.mark.parametrize("swap", ["exchange", "fallback"])
def test_a_kill_during_overwrite_never_leaves_the_output_missing(tmp_path, swap):
    config = recipe(tmp_path / "r.yaml", LINEAR)
    out = tmp_path / "merged"
    assert main(["merge", str(config), "--out", str(out), "--quiet"]) == 0
    first = load_file(out / "model.safetensors")
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_RENAMING_THE_OUTPUT, swap, "merge", str(config),
                             "--out", str(out), "--overwrite", "--quiet", "--seed", "5"], env=ENV, capture_output=True)
    if swap == "exchange":  # renameat2 swaps both at once: nothing is ever moved aside
        assert killed.returncode == 0, killed.stderr[-2000:]
        assert (out / "model.safetensors").is_file() and hidden_leftovers(tmp_path) == []
    else:  # killed between the two renames: the old output waits aside, and the next merge restores it
        assert killed.returncode == -signal.SIGKILL and not out.exists()
        assert main(["merge", str(config), "--out", str(out), "--overwrite", "--quiet"]) == 0
        again = load_file(out / "model.safetensors")
        assert all(torch.equal(first[key], again[key]) for key in first)
        assert hidden_leftovers(tmp_path) == []


KILL_MIDWAY = """
import os, sys
from evovlm.merge import engine
real, calls = engine.merge_tensor, []
def merge_tensor(*args, **kwargs):
    calls.append(1)
    if len(calls) == 4:
        os.kill(os.getpid(), 9)
    return real(*args, **kwargs)
engine.merge_tensor = merge_tensor
sys.argv = ["evovlm", *sys.argv[1:]]
from evovlm.cli import main
main()
"""


def test_the_next_merge_sweeps_what_a_killed_merge_left(tmp_path):
    config = recipe(tmp_path / "r.yaml", LINEAR)
    out = tmp_path / "merged"
    killed = subprocess.run([sys.executable, "-c", KILL_MIDWAY, "merge", str(config), "--out", str(out), "--quiet"],
                            env=ENV, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert [name for name in hidden_leftovers(tmp_path) if name.startswith(".merged.partial-")]
    assert main(["merge", str(config), "--out", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").is_file() and hidden_leftovers(tmp_path) == []


# ===================================================================================================
# Path escapes
# ===================================================================================================

def test_an_index_cannot_point_out_of_the_model_folder(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TINY / "ja", model)
    shutil.move(model / "model.safetensors", tmp_path / "outside.safetensors")
    names = list(load_file(tmp_path / "outside.safetensors"))
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": dict.fromkeys(names, "../outside.safetensors")}))
    refused(cli("merge", recipe(tmp_path / "r.yaml", f"method: linear\nmodels:\n  - model: {model}\n"), "--out",
                tmp_path / "o"), "not a file in the model folder")
    assert not (tmp_path / "o").exists()


# ===================================================================================================
# The app: handlers answer with messages, files stay inside their folders
# ===================================================================================================

@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory):
    gradio_client = pytest.importorskip("gradio_client")
    root = tmp_path_factory.mktemp("hostile-app")
    secret = root / "secret.txt"
    secret.write_text("method: linear\nmodels: [{model: TOP-SECRET-CONTENT}]\n")
    escape = make_run_dir(root / "runs" / "escape")
    (escape / "best_recipe.yaml").unlink()
    (escape / "best_recipe.yaml").symlink_to(secret)
    (escape / "config.yaml").unlink()
    (escape / "config.yaml").symlink_to(secret)
    make_results(root / "results")
    bad = root / "results" / "malformed.json"
    bad.write_text(json.dumps({"schema_version": 1, "model": ["not", "a", "name"], "summary": [1, 2],
                               "samples": [{"index": "seven", "id": {"x": 1}, "question": 5, "rougeL_ja": "high"},
                                           {"index": None, "response": ["a"], "image": 3}, "not a sample"]}))
    (root / "results" / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    models = root / "models.yaml"
    models.write_text(f"models:\n  - {{name: tiny-math, ref: {TINY / 'math'}, kind: llm}}\n"
                      f"  - {{name: tiny-ja, ref: {TINY / 'ja'}, kind: llm}}\n"
                      "defaults: {chat: [tiny-math, tiny-ja]}\n")
    with running_app(root, "--models", str(models), "--runs-dir", str(root / "runs"), "--allowed-path",
                     str(root)) as url:
        client = gradio_client.Client(url, verbose=False, analytics_enabled=False,
                                      download_files=str(root / "downloads"))
        yield client, root


def _no_exception_logged(root: Path) -> None:
    assert "The upstream Gradio app has raised an exception" not in (root / "server.log").read_text()


def test_the_run_reader_does_not_follow_symlinks_out_of_the_runs_folder(hostile_app):
    client, root = hostile_app
    summary, *_, recipe_text = client.predict(str(root / "runs" / "escape"), api_name="/run")
    assert "TOP-SECRET" not in recipe_text and "TOP-SECRET" not in summary
    assert "best fitness" in summary  # the run itself is still read


@pytest.mark.parametrize("name", ["malformed.json", "nested.json"])
def test_malformed_results_files_are_messages(hostile_app, name):
    from gradio_client import handle_file

    client, root = hostile_app
    out = client.predict(handle_file(str(root / "results" / name)), None, None, "all", "index", "", 0,
                         api_name="/cases")
    assert isinstance(out[0], str) and "Traceback" not in out[0]
    if name == "nested.json":
        assert out[0].startswith("⚠")
    _no_exception_logged(root)


def test_a_nul_byte_in_a_run_path_is_a_message(hostile_app):
    client, root = hostile_app
    summary = client.predict(str(root / "runs") + "/x\0y", api_name="/run")[0]
    assert summary.startswith("⚠")


def test_run_paths_the_file_system_refuses_are_messages(hostile_app):
    """Each was the app's catch-all error: RuntimeError from resolve() or expanduser(), OSError from is_dir()."""
    client, root = hostile_app
    loop = root / "runs" / "loop"
    loop.symlink_to(loop)
    for path in (str(loop), "~nosuchuser-evovlm/x", str(root / "runs" / ("x" * 300))):
        summary = client.predict(path, api_name="/run")[0]
        assert "cannot be opened as a folder" in summary or "outside the run folders" in summary, (path, summary)
    history = make_run_dir(root / "runs" / "huge") / "history.jsonl"
    with history.open("a") as handle:  # beyond 64 bits: the reply could not be sent and the stream broke
        handle.write('{"type": "candidate", "generation": 1000000000000000000000000000000, "index": 0, '
                     '"fitness": 0.5}\n')
    summary = client.predict(str(history.parent), api_name="/run")[0]
    assert "best fitness so far" in summary and "unreadable lines skipped: 1" in summary, summary


def test_a_long_chat_history_through_the_api_stays_bounded(hostile_app):
    client, root = hostile_app
    def message(role: str, text: str) -> dict:
        return {"role": role, "content": [{"type": "text", "text": text}]}

    history = [message(role, text) for _ in range(7)
               for role, text in (("user", "質問" * 2000), ("assistant", "答え" * 2000))]
    started = time.monotonic()
    out = client.predict("こんにちは", history, history, "tiny-math", "tiny-ja", "model default", 1, 8, 1.0,
                         api_name="/chat")
    assert time.monotonic() - started < 60 and out[3].startswith("✓"), out[3]
    _no_exception_logged(root)


# ===================================================================================================
# Messages, not tracebacks
# ===================================================================================================

@pytest.mark.parametrize("text, words", [
    (f"method: task_arithmetic\nbase_model: {TINY / 'base'}\nmodels:\n  - model: {TINY / 'ja'}\n    weight: .inf\n",
     ["weight", "finite"]),
    (f"merge_method: linear\nmodels:\n  - model: {TINY / 'ja'}\n    parameters: {{weight: .nan}}\n", ["finite"]),
    (f"method: task_arithmetic\nbase_model: {TINY / 'base'}\nparameters: {{lambda: lots}}\nmodels:\n"
     f"  - model: {TINY / 'ja'}\n", ["parameters.lambda: expected a finite number, got 'lots'"]),
    (f"method: linear\nparameters: {{normalize: maybe}}\nmodels:\n  - model: {TINY / 'ja'}\n", ["true or false"]),
    ("method: linear\nmodels:\n  - model: [1, 2]\n", ["models[0].model"]),
    (f"method: linear\ndtype: float8\nmodels:\n  - model: {TINY / 'ja'}\n",
     ["dtype: input should be", "'bf16'", "got 'float8'"]),
    (f"method: linear\nmodels:\n  - model: {TINY / 'ja'}\n    weight: {{default: 1, layers.1-5: 0.5}}\n",
     ["models[0].weight: layers.1-5 names a layer that", "it has 2 decoder layers, layers.0-1"]),
], ids=["inf-weight", "mergekit-nan", "text-lambda", "non-bool", "list-model", "dtype", "layer-out-of-range"])
def test_bad_recipe_values_are_messages_and_write_nothing(tmp_path, text, words):
    refused(cli("merge", recipe(tmp_path / "r.yaml", text), "--out", tmp_path / "o"), *words)
    assert not (tmp_path / "o").exists() and hidden_leftovers(tmp_path) == []


def test_non_utf8_files_are_messages(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_bytes(LINEAR.encode() + "# 日本語\n".encode("shift_jis"))
    refused(cli("merge", bad, "--out", tmp_path / "o"), "not UTF-8")
    data = tmp_path / "d.tsv"
    data.write_bytes("りんごは何個？\t3\n".encode("shift_jis"))
    refused(cli("eval", "--model", TINY / "ja", "--bench", "mgsm-ja", "--data", data), "d.tsv:1", "not UTF-8")


def test_an_index_entry_its_shard_lacks_is_a_message(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TINY / "ja", model)
    names = list(load_file(model / "model.safetensors"))
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {**dict.fromkeys(names, "model.safetensors"),
                                        "model.layers.9.mlp.up_proj.weight": "model.safetensors"}}))
    refused(cli("merge", recipe(tmp_path / "r.yaml", f"method: linear\nmodels:\n  - model: {model}\n"), "--out",
                tmp_path / "o"), "model.layers.9.mlp.up_proj.weight", "does not hold it")


def test_a_full_disk_while_copying_tokenizer_files_is_a_message(tmp_path, monkeypatch, capsys):
    import errno

    from evovlm.io import writer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.shutil, "copyfile", full)
    assert main(["merge", str(recipe(tmp_path / "r.yaml", LINEAR)), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and hidden_leftovers(tmp_path) == []


def test_a_merge_never_writes_non_finite_tensors(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(TINY / "math", broken)
    state = load_file(broken / "model.safetensors")
    state["model.layers.0.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    text = f"method: linear\nmodels:\n  - model: {TINY / 'ja'}\n  - model: {broken}\n"
    refused(cli("merge", recipe(tmp_path / "r.yaml", text), "--out", tmp_path / "o"), "non-finite",
            "model.layers.0.mlp.up_proj.weight")
    assert not (tmp_path / "o").exists() and hidden_leftovers(tmp_path) == []


OUT_OF_RANGE = [
    ("merge", "R", "--out", "O", "--seed", "-1"),
    ("merge", "R", "--out", "O", "--shard-size", "0"),
    ("merge", "R", "--out", "O", "--workers", "0"),
    ("eval", "--model", "M", "--bench", "mgsm-ja", "--bootstrap-seed", "-1"),
    ("eval", "--model", "M", "--bench", "mgsm-ja", "--repetition-penalty", "inf"),
    ("eval", "--model", "M", "--bench", "mgsm-ja", "--max-new-tokens", "100000000"),
    ("eval", "--model", "M", "--bench", "mgsm-ja", "--limit", "abc"),
    ("score", "P", "--metric", "rouge-ja", "--n-resamples", "100000000000"),
    ("score", "P", "--metric", "rouge-ja", "--seed", "-1"),
    ("evolve", "C", "--out", "O", "--workers", "0"),
    ("zoo", "evolve", "--out", "O", "--ps-trials", "0"),
    ("zoo", "evolve", "--out", "O", "--quick", "--full"),
    ("zoo", "report", "--data-seed", "-5"),
    ("demo", "--port", "70000"),
    ("demo", "--queue-size", "-1"),
    ("demo", "--max-models", "0"),
]


@pytest.mark.parametrize("argv", OUT_OF_RANGE, ids=[" ".join((a[0], *a[-2:])) for a in OUT_OF_RANGE])
def test_out_of_range_numbers_are_usage_errors(tmp_path, argv, capsys):
    files = {"R": recipe(tmp_path / "r.yaml", LINEAR), "O": tmp_path / "o", "M": TINY / "ja",
             "P": tmp_path / "p.jsonl", "C": REPO / "examples" / "evolve-ps-tiny.yaml"}
    (tmp_path / "p.jsonl").write_text('{"reference": "a", "prediction": "b"}\n')
    code = main([str(files.get(word, word)) for word in argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith(f"evovlm {argv[0]}"), err
    assert argv[-2] in err or "shard size" in err, err  # the message names the option
    assert not (tmp_path / "o").exists()


UNWRITABLE = [  # F: a plain file, so F/x can never be created; /proc refuses new files even to root
    ("eval", "--model", "M", "--bench", "zoo-mgsm-ja", "--limit", "1", "--out", "F/r.json"),
    ("eval", "--model", "M", "--bench", "zoo-mgsm-ja", "--limit", "1", "--out", "/proc/r.json"),
    ("evolve", "C", "--out", "F/run"),
    ("evolve", "C", "--out", "/proc/evovlm-run"),
    ("zoo", "evolve", "--quick", "--half", "text", "--out", "F"),
    ("zoo", "build", "--quick", "--out", "F/zoo"),
    ("zoo", "report", "--half", "text", "--limit", "1", "--out", "F/r.json"),
]


@pytest.mark.parametrize("argv", UNWRITABLE, ids=[" ".join((a[0], a[1], a[-1])) for a in UNWRITABLE])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(tmp_path, argv, capsys):
    """Once, `eval` ran every problem and then died writing its results; `zoo build` trained the base first."""
    blocker = tmp_path / "f"
    blocker.write_text("mine")
    files = {"F": blocker, "M": TINY / "ja", "C": REPO / "examples" / "evolve-ps-tiny.yaml"}
    argv = [str(files.get(word, word)).replace("F/", f"{blocker}/") for word in argv]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err and "--out: cannot create files in" in captured.err, captured
    assert captured.out == ""  # no scores, table or model came before the refusal
    assert blocker.read_text() == "mine"


def test_eval_refuses_a_checkpoint_missing_a_weight(tmp_path, capsys):
    """transformers would fill the tensor with random values and only log it; the score would mean nothing."""
    model = tmp_path / "ja"
    shutil.copytree(TINY / "ja", model)
    tensors = load_file(model / "model.safetensors")
    name = next(key for key in sorted(tensors) if key.endswith("input_layernorm.weight"))
    del tensors[name]
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    code = main(["eval", "--model", str(model), "--bench", "zoo-mgsm-ja", "--limit", "1",
                 "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot load {model}: its checkpoint lacks {name}" in err, err
    assert not (tmp_path / "r.json").exists()
