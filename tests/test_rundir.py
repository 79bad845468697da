"""The run directory format (evovlm.evolve.rundir): a real ``evovlm evolve`` run read back through
the app's reader, field by field against what evolve wrote; versions; files that are not to be read.

The run: ps+dfs on the tiny models with synthetic (gene-scoring) fitness, validation and test, so
that one run of about ten seconds writes every kind of file and record the app shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evovlm.app import plots
from evovlm.app import runs as run_lib
from evovlm.errors import EvoVLMError
from evovlm.evolve.report import plot_fitness
from evovlm.evolve.rundir import FORMAT_VERSION, MAX_FILE_BYTES, RunDir
from evovlm.evolve.runs import run_evolution
from helpers import REPO, TINY, make_run_dir

CONFIG = {"mode": "ps+dfs", "seed": 0,
          "ps": {"method": "dare_ties", "base_model": str(TINY / "base"),
                 "models": [str(TINY / "ja"), str(TINY / "math")], "group_size": 1, "budget": {"generations": 2}},
          "dfs": {"model_a": "ps", "model_b": str(TINY / "math"), "repeats": 2, "budget": {"generations": 2}},
          "optimizer": {"population": 4}, "fitness": {"synthetic": "sphere", "target": 0.3},
          "validation": {"synthetic": "sphere", "target": 0.4}, "test": {"synthetic": "sphere", "target": 0.6},
          "runtime": {"workers": 1, "devices": ["cpu"]}}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rundir")
    config = root / "evolve.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "evovlm.cli", "evolve", str(config), "--out", str(root / "run"),
                             "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def _records(path: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r["type"] == kind]


def test_a_real_run_reads_back_field_by_field(real_run):
    run = RunDir(real_run)
    assert json.loads((real_run / "run.json").read_text())["format_version"] == FORMAT_VERSION == run.format_version
    summary = json.loads((real_run / "summary.json").read_text())
    assert summary["format_version"] == FORMAT_VERSION and run.summary == summary and run.finished
    assert run.config == yaml.safe_load((real_run / "config.yaml").read_text()) and run.config["ps"]["group_size"] == 1
    assert run.mode == "ps+dfs" and [s.name for s in run.stages] == ["ps", "dfs"] and run.problems == []
    assert run.model_dir == real_run / "dfs" / "model" and (run.model_dir / "config.json").is_file()
    for stage in run.stages:
        result = json.loads((stage.path / "result.json").read_text())
        assert stage.path == real_run / stage.name and stage.result == result and stage.finished
        assert stage.model_dir == stage.path / "model" and stage.skipped_lines == 0
        written = _records(stage.path / "history.jsonl", "candidate")
        assert len(stage.candidates) == len(written) == result["trials"] and len(stage.failed) == result["failed"] == 0
        for read, record in zip(stage.candidates, written):
            assert (read.stage, read.generation, read.index, read.fitness, read.error, read.metric) == (
                stage.name, record["generation"], record["index"], record["fitness"], None, "sphere")
            assert (read.genome, read.candidate) == (record["genome"], record["candidate"])
            assert (read.wall_s, read.merge_s, read.eval_s) == (record["wall_s"], record["merge_s"], record["eval_s"])
            assert read.start == (record.get("start") is True)
        validations = _records(stage.path / "history.jsonl", "validation")
        assert [(v.generation, v.index, v.fitness) for v in stage.validations] == [
            (r["generation"], r["index"], r["fitness"]) for r in validations] and len(validations) == 2
        choice, best = stage.best(), result["best"]
        assert (choice.candidate.generation, choice.candidate.index, choice.candidate.fitness, choice.validation,
                choice.candidate.genome) == (best["generation"], best["index"], best["fitness"], best["validation"],
                                             best["genome"])
        assert [t.fitness for t in stage.tests] == [result["test"]["fitness"]]
        best_file = stage.path / ("best_recipe.yaml" if stage.name == "ps" else "best_dfs.yaml")
        assert stage.best_text == best_file.read_text()
    ps, dfs = run.stages
    assert ps.best_recipe == yaml.safe_load(ps.best_text)
    assert ps.best_recipe["models"] == ps.result["candidate"]["models"]
    assert dfs.best_path == [(o[0], int(o[2:])) for o in dfs.result["candidate"]["path"]]
    assert dfs.best_scales == dfs.result["candidate"]["scales"] and dfs.best_recipe is None and ps.best_path is None
    # DFS init a: model A itself scored once, as candidate `population` of generation 0, marked as the start
    (start,) = [c for c in dfs.candidates if c.start]
    assert (start.generation, start.index, start.candidate["path"]) == (0, dfs.result["population"], ["A:0", "A:1"])
    assert not any(c.start for c in ps.candidates)


def test_the_app_shows_the_real_run(real_run):
    run = run_lib.read_run(real_run)
    ps, dfs = run.stages
    ps_result, dfs_result = ps.result, dfs.result
    summary = run_lib.summary_markdown(run)
    assert summary.startswith("**run** · mode ps+dfs · seed 0 · finished · history updated ") and "⚠" not in summary
    for stage, result in ((ps, ps_result), (dfs, dfs_result)):
        name, best = stage.name.upper(), result["best"]
        top = max(r["fitness"] for r in _records(stage.path / "history.jsonl", "candidate"))
        assert (f"{name}: generations: 2 · candidates: {result['trials']} · failed: 0 · finished" in summary)
        assert f"{name}: **best fitness so far: {top:.4g}** (sphere; higher is better)" in summary
        assert (f"{name}: chosen by validation: generation {best['generation']}, candidate {best['index']} "
                f"(validation {best['validation']:.4g}, fitness {best['fitness']:.4g})") in summary
        assert f"{name}: held-out test: {result['test']['fitness']:.4g}" in summary
        assert f"{name}: model: `{stage.name}/model`" in summary
    start = next(r for r in _records(real_run / "dfs" / "history.jsonl", "candidate") if r.get("start"))
    rows = []
    for label, result in (("best PS", ps_result), ("best DFS", dfs_result)):
        if label == "best DFS":
            rows.append(["PS result", "DFS start: model A itself", round(start["fitness"], 4)])
        best = result["best"]
        rows += [[label, f"fitness · generation {best['generation']}, candidate {best['index']}",
                  round(best["fitness"], 4)], [label, "validation", round(best["validation"], 4)],
                 [label, "held-out test", round(result["test"]["fitness"], 4)]]
    assert run_lib.scores_table(run) == rows
    # the heat map's inputs: the best recipe's per-layer-group weights and densities, as evolve chose them
    recipe = ps_result["candidate"]["models"]
    for parameter in ("weight", "density"):
        names, groups, values = run_lib.recipe_matrix(run, parameter)
        assert names == [str(TINY / "ja"), str(TINY / "math")] and groups == ["layers.0", "layers.1", "default"]
        assert values == [[m[parameter][g] for g in groups] for m in recipe]
    path = dfs_result["candidate"]
    assert run_lib.dfs_path(run) == [(i, o[0], int(o[2:]), s) for i, (o, s) in enumerate(zip(path["path"],
                                                                                           path["scales"]))]
    assert run.recipe_text == (f"# ps/best_recipe.yaml\n{(real_run / 'ps' / 'best_recipe.yaml').read_text()}\n"
                               f"# dfs/best_dfs.yaml\n{(real_run / 'dfs' / 'best_dfs.yaml').read_text()}")
    frame = plots.fitness_frame(run)  # the interactive curve: the DFS stage's generations follow PS's
    best = frame[frame.series == "DFS best so far"]
    assert best.fitness.iloc[-1] == max(c.fitness for c in dfs.searched if c.fitness is not None)
    assert best.generation.min() == 1 + max(c.generation for c in ps.candidates)
    for image in (plots.heatmap_plot(run), plots.dfs_plot(run)):
        assert image.size[0] > 300 and image.size[1] > 150 and len(image.getcolors(1 << 20)) > 10
    # one plotter: the stage read back draws evolve's own fitness.png byte for byte
    assert plot_fitness([dfs], "ps+dfs: DFS search (seed 0)") == (real_run / "dfs" / "fitness.png").read_bytes()
    assert run_lib.find_runs([real_run.parent]) == [str(real_run)]


def test_a_run_of_a_newer_format_is_refused_with_a_message(tmp_path):
    run = make_run_dir(tmp_path / "run")
    assert RunDir(run).format_version == 1
    (run / "run.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(EvoVLMError, match=f"newer EvoVLM \\(run format {FORMAT_VERSION + 1}; .*upgrade evovlm"):
        RunDir(run)
    shown = run_lib.read_run(run)
    assert shown.error and shown.stages == [] and plots.fitness_frame(shown).empty
    assert run_lib.summary_markdown(shown).startswith(f"⚠ `run`: {run} was written by a newer EvoVLM")
    history = (run / "history.jsonl").read_bytes()
    with pytest.raises(EvoVLMError, match="newer EvoVLM"):  # nor does evolve --resume guess
        run_evolution(None, run, resume=True)
    assert (run / "history.jsonl").read_bytes() == history
    (run / "run.json").unlink()  # a finished run says it in summary.json too
    (run / "summary.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "mode": "ps"}))
    with pytest.raises(EvoVLMError, match="newer EvoVLM"):
        RunDir(run)


def test_a_run_from_before_format_versions_reads_as_version_1(real_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(real_run, old, ignore=shutil.ignore_patterns("model", "state"))
    (old / "run.json").unlink()
    summary = json.loads((old / "summary.json").read_text())
    del summary["format_version"]
    (old / "summary.json").write_text(json.dumps(summary))
    for stage in ("ps", "dfs"):  # nor did candidates carry "start": result.json's population tells
        history = old / stage / "history.jsonl"
        history.write_text(history.read_text().replace(', "start": true', ""))
    run = RunDir(old)
    assert run.format_version == 1 and run.problems == [] and run.finished
    assert [len(s.candidates) for s in run.stages] == [len(s.candidates) for s in RunDir(real_run).stages]
    assert [(c.generation, c.index) for c in run.stage("dfs").candidates if c.start] == [(0, 4)]
    assert run_lib.find_runs([tmp_path]) == [str(old)]


def test_files_that_are_not_to_be_read_are_messages(tmp_path):
    run = make_run_dir(tmp_path / "run")
    secret = tmp_path / "secret.yaml"
    secret.write_text("mode: ps\nseed: TOP-SECRET\n")
    (run / "config.yaml").unlink()
    (run / "config.yaml").symlink_to(secret)
    (run / "best_recipe.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    (run / "result.json").write_text('{"stage": "ps", ')
    reader = RunDir(run)
    stage = reader.stages[0]
    assert reader.config == {} and reader.mode is None and stage.name == "ps"  # the layout tells
    assert stage.best_text == "" and stage.result is None and len(stage.candidates) == 20
    assert reader.problems == ["`config.yaml` is not a file inside the run folder: not read",
                               "`result.json` is not valid JSON: not read",
                               "`best_recipe.yaml` is larger than 16 MiB: not read"]
    summary = run_lib.summary_markdown(run_lib.read_run(run))
    assert "TOP-SECRET" not in summary and "⚠ `config.yaml` is not a file inside the run folder" in summary
    assert "best fitness so far: 0.38" in summary
