"""The zoo builder in --quick mode: it trains, saves loadable models, and is deterministic for a seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evovlm.cli import main
from evovlm.errors import EvoVLMError
from evovlm.eval.benchmarks import load_benchmark
from evovlm.eval.evaluate import evaluate
from evovlm.eval.runners import load_runner
from evovlm.zoo.train import layer_index


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    assert main(["zoo", "build", "--quick", "--quiet", "--threads", "1", "--out", str(out), "--seed", "3"]) == 0
    return out


def test_quick_build_writes_loadable_models(quick_zoo):
    report = json.loads((quick_zoo / "build.json").read_text())
    assert report["seed"] == 3 and set(report["final_loss"]) == {"base", "ja", "math", "reader", "vlm"}
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

    # quick settings: 4 blocks, the last one is the output block. JA learns only there (and in the
    # head); MATH learns the inner blocks in phase 1 and the output block in phase 2.
    assert all(drift(ja, depth) == 0 for depth in (-1, 0, 1, 2))
    assert drift(ja, 3) > 0 and drift(ja, 4) > 0
    assert all(drift(math, depth) > 0 for depth in (-1, 0, 1, 2, 3, 4))
    # the reader learns its reading blocks (1 to the last inner block) and nothing else
    reader = load_file(quick_zoo / "reader" / "model.safetensors")
    assert all(drift(reader, depth) == 0 for depth in (-1, 0, 3, 4))
    assert drift(reader, 1) > 0 and drift(reader, 2) > 0


def test_build_is_deterministic_and_refuses_to_overwrite(quick_zoo, tmp_path, capsys):
    assert main(["zoo", "build", "--quick", "--quiet", "--threads", "1", "--out", str(tmp_path), "--seed", "3"]) == 0
    for name in ("base", "ja"):
        first = load_file(quick_zoo / name / "model.safetensors")
        second = load_file(tmp_path / name / "model.safetensors")
        assert all(torch.equal(first[k], second[k]) for k in first)
    assert main(["zoo", "build", "--quick", "--quiet", "--threads", "1", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err

    # --reuse-base keeps the pretrained base and retrains the rest identically; a base built
    # with another seed is refused
    base_file = tmp_path / "base" / "model.safetensors"
    built_at = base_file.stat().st_mtime_ns
    assert main(["zoo", "build", "--quick", "--quiet", "--threads", "1", "--out", str(tmp_path), "--seed", "3",
                 "--reuse-base", "--overwrite"]) == 0
    assert base_file.stat().st_mtime_ns == built_at
    again = load_file(tmp_path / "math" / "model.safetensors")
    assert all(torch.equal(again[k], load_file(quick_zoo / "math" / "model.safetensors")[k]) for k in again)
    assert main(["zoo", "build", "--quick", "--quiet", "--threads", "1", "--out", str(tmp_path), "--seed", "4",
                 "--reuse-base", "--overwrite"]) == 2
    assert "--reuse-base" in capsys.readouterr().err

    # --only retrains just the named models, to the same weights as a full build
    math_built_at = (tmp_path / "math" / "model.safetensors").stat().st_mtime_ns
    assert main(["zoo", "build", "--quick", "--quiet", "--threads", "1", "--out", str(tmp_path), "--seed", "3",
                 "--only", "vlm", "--overwrite"]) == 0
    assert (tmp_path / "math" / "model.safetensors").stat().st_mtime_ns == math_built_at
    vlm = load_file(tmp_path / "vlm" / "model.safetensors")
    assert all(torch.equal(vlm[k], load_file(quick_zoo / "vlm" / "model.safetensors")[k]) for k in vlm)


def test_oracle_recipe_takes_inner_blocks_from_math_and_output_blocks_from_ja(quick_zoo, tmp_path):
    from evovlm.merge.engine import merge_checkpoints
    from evovlm.merge.recipe import recipe_from_dict
    from evovlm.zoo.report import llm_recipes, zoo_refs

    recipe = llm_recipes(zoo_refs(quick_zoo), layers=4, output_blocks=1)["oracle: MATH inside, JA output blocks"]
    merged = load_file(merge_checkpoints(recipe_from_dict(recipe), tmp_path / "oracle", progress=False)
                       / "model.safetensors")
    ja = load_file(quick_zoo / "ja" / "model.safetensors")
    math = load_file(quick_zoo / "math" / "model.safetensors")
    for name, tensor in merged.items():
        expected = ja if layer_index(name, 4) in (3, 4) else math  # block 3, final norm and head from JA
        assert torch.allclose(tensor, expected[name], atol=1e-6), name


def test_report_measures_every_row_and_criterion(quick_zoo, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["zoo", "report", "--zoo", str(quick_zoo), "--limit", "2", "--quiet", "--out", str(out)]) in (0, 1)
    report = json.loads(out.read_text())
    assert len(report["rows"]) == 22 and all(row["n"] == 2 for row in report["rows"])
    assert len(report["checks"]) == 10
    kanji = [row["model"] for row in report["rows"] if row["benchmark"] == "zoo-mgsm-ja-kanji"]
    assert kanji == ["base", "ja", "math", "reader", "oracle: MATH inside, JA output blocks",
                     "oracle + the reader's task vector (λ=1)",
                     "DFS oracle: the oracle's block 0, the reader's blocks 1-3, the oracle's blocks 1-5"]
    blind = [row["model"] for row in report["rows"] if row["benchmark"] == "zoo-vqa-ja"]
    assert blind[2].startswith("best fixed reply: ")
    assert blind[-1] == "oracle: VLM inside, JA output blocks on a blank image"
    assert "| criterion | result | numbers |" in capsys.readouterr().out
    assert report["split"] == "test"
    assert main(["zoo", "report", "--zoo", str(tmp_path)]) == 2  # not a zoo: a clear error
    # design decisions look at dev; a fresh draw replaces the split, so the two do not combine
    assert main(["zoo", "report", "--zoo", str(quick_zoo), "--limit", "1", "--quiet", "--split", "dev",
                 "--out", str(out)]) in (0, 1)
    assert json.loads(out.read_text())["split"] == "dev"
    assert main(["zoo", "report", "--zoo", str(quick_zoo), "--split", "dev", "--data-seed", "1"]) == 2
    assert "cannot be combined with --split" in capsys.readouterr().err


def test_text_report_measures_a_zoo_without_its_vlm(quick_zoo, tmp_path, capsys):
    import shutil

    zoo = tmp_path / "zoo"  # a zoo built with `--only base ja math reader`
    for name in ("base", "ja", "math", "reader"):
        shutil.copytree(quick_zoo / name, zoo / name)
    shutil.copy(quick_zoo / "build.json", zoo / "build.json")
    out = tmp_path / "report.json"
    assert main(["zoo", "report", "--zoo", str(zoo), "--limit", "1", "--quiet", "--out", str(out)]) == 2
    assert "lacks vlm: `--half text` measures" in capsys.readouterr().err  # said, with the way out
    assert main(["zoo", "report", "--zoo", str(zoo), "--half", "text", "--limit", "1", "--quiet",
                 "--out", str(out)]) in (0, 1)
    report = json.loads(out.read_text())
    assert report["half"] == "text" and {row["benchmark"] for row in report["rows"]} == {
        "zoo-ja-qa", "zoo-math-en", "zoo-mgsm-ja", "zoo-mgsm-ja-kanji"}
    assert len(report["rows"]) == 2 + 7 + 7 and len(report["checks"]) == 6
    own = next(item for item in report["checks"] if item["criterion"] == "each expert >= 90% on its own task")
    assert own["numbers"].startswith("ja ") and "vlm" not in own["numbers"]
    assert not any("VLM" in item["criterion"] or "zoo-vqa" in item["criterion"] for item in report["checks"])


def test_build_settings_changes_are_typed_and_checked(tmp_path, capsys):
    from evovlm.zoo.build import ZooSettings

    changed = ZooSettings().with_changes(["ja_steps=1600", "ja_lr=1e-4", "vlm_ja_work=count"])
    assert (changed.ja_steps, changed.ja_lr, changed.vlm_ja_work) == (1600, 1e-4, "count")
    assert changed.math_steps == ZooSettings().math_steps
    refused = (("bogus=1", "one of hidden"), ("ja_steps=many", "ja_steps takes a value of type int"),
               ("ja_steps", "NAME=VALUE"))
    for change, words in refused:
        assert main(["zoo", "build", "--quick", "--out", str(tmp_path / "zoo"), "--set", change]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "zoo").exists()


def test_example_oracle_recipes_match_the_report():
    """examples/zoo-oracle*.yaml are the recipes `evovlm zoo report` measures on the default zoo."""
    from pathlib import Path

    from evovlm.io.yamlfile import read_yaml_file
    from evovlm.zoo.build import ZooSettings
    from evovlm.zoo.report import llm_recipes, vlm_oracle_recipe

    refs = {name: f"zoo:{name}" for name in ("base", "ja", "math", "vlm")}
    shape = (ZooSettings().layers, ZooSettings().output_blocks)
    examples = Path(__file__).resolve().parent.parent / "examples"
    assert read_yaml_file(examples / "zoo-oracle.yaml", "recipe") == llm_recipes(refs, *shape)[
        "oracle: MATH inside, JA output blocks"]
    assert read_yaml_file(examples / "zoo-oracle-vlm.yaml", "recipe") == vlm_oracle_recipe(refs, *shape)


def test_zoo_evolve_runs_ps_dfs_hybrid_and_vlm_and_installs_the_results(quick_zoo, tmp_path, capsys):
    import shutil

    from evovlm.zoo.evolution import (
        DFS_ROW,
        HAND_ROW,
        HYBRID_ROW,
        PS_DFS_ORACLE,
        PS_READER_ADDED,
        PS_ROW,
        VLM_ROW,
        EvolveBudget,
        evolution_checks,
        format_table,
        install_models,
        zoo_evolution,
    )

    budget = EvolveBudget(ps_trials=1, dfs_generations=1, dfs_workers=1, hybrid_generations=1, hybrid_problems=2,
                          vlm_trials=1, repeats=1, fitness_limit=2,
                          fitness_subset=None)  # tests/test_subset.py: with one
    out = tmp_path / "runs"
    result = zoo_evolution(quick_zoo, out, budget=budget, limit=3, progress=False, log=lambda _: None)
    assert json.loads((out / "table.json").read_text(encoding="utf-8")) == result
    for run in ("ps-dfs/ps", "ps-dfs/dfs", "dfs", "vlm", "vlm-rouge"):
        assert (out / run / "result.json").is_file() and (out / run / "model" / "config.json").is_file()
    rows = {(row["model"], row["benchmark"]): row for row in result["rows"]}
    for name in ("base", "ja", "math", PS_ROW, DFS_ROW, HYBRID_ROW):
        assert rows[name, "zoo-mgsm-ja"]["n"] == 3
    # PS+DFS: PS's model and the reader, on the kanji problems; its rows and the best hand path's
    for name in ("base", "ja", "math", "reader", PS_ROW, PS_READER_ADDED, PS_DFS_ORACLE, HYBRID_ROW):
        assert rows[name, "zoo-mgsm-ja-kanji"]["n"] == 3
    assert [name for name, bench in rows if name.startswith(HAND_ROW + ": A0 ")] == [next(
        name for name, _ in rows if name.startswith(HAND_ROW))]
    from evovlm.io.yamlfile import read_yaml_file

    ps_dfs_config = read_yaml_file(out / "ps-dfs" / "config.yaml", "config")
    assert ps_dfs_config["runtime"]["workers"] == 1  # --dfs-workers
    hybrid_config = ps_dfs_config["dfs"]
    assert hybrid_config["model_b"] == str(quick_zoo / "reader") and hybrid_config["scales"] == "none"
    assert hybrid_config["fitness"] == {"callable": "evovlm.zoo.fitness:mgsm_ja_both_exact_logprob",
                                        "arguments": {"problems": 2}}
    assert hybrid_config["test"]["benchmark"] == "zoo-mgsm-ja-kanji"
    assert set(rows[VLM_ROW, "zoo-vqa-ja"]) >= {"rougeL_ja", "content_ja", "content"}
    assert [item["criterion"] for item in result["checks"]] == [item["criterion"] for item in evolution_checks(
        result["rows"])] and len(result["checks"]) == 11

    vlm_config = read_yaml_file(out / "vlm" / "config.yaml", "config")
    assert vlm_config["fitness"]["metric"] == {"content_ja": 1.0, "rougeL_ja": 0.45}  # 0.9 / 2 problems
    table = format_table(result)
    assert f"| {PS_ROW} | {rows[PS_ROW, 'zoo-mgsm-ja']['acc_ja']} |" in table and "| claim | result |" in table
    assert "| model | zoo-mgsm-ja-kanji acc_ja |" in table

    # the claims are decided on the numbers: a PS row at the best source fails (more on hand-built rows below)
    def with_ps(value: float) -> list[dict]:
        return [dict(row, acc_ja=value) if row["model"] == PS_ROW else row for row in result["rows"]]
    best_source = max(rows[name, "zoo-mgsm-ja"]["acc_ja"] for name in ("base", "ja", "math"))
    recovered = next(c for c in evolution_checks(with_ps(best_source)) if "80%" in c["criterion"])
    assert not recovered["passed"]

    # a second call without --resume refuses to clobber the runs; with --resume it re-scores them
    assert main(["zoo", "evolve", "--zoo", str(quick_zoo), "--out", str(out), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(EvoVLMError, match="seed 0, not 1"):
        zoo_evolution(quick_zoo, out, seed=1, budget=budget, resume=True, progress=False, log=lambda _: None)

    zoo_copy = tmp_path / "zoo"
    shutil.copytree(quick_zoo, zoo_copy)
    installed = install_models(out, zoo_copy)
    assert set(installed) == {"evollm", "evodfs", "evohybrid", "evovlm"}
    hybrid = load_runner(zoo_copy / "evohybrid").model.config
    assert hybrid.model_type == "evovlm_dfs" and hybrid.dfs_path[0] == 0
    assert load_runner(zoo_copy / "evodfs").model.config.model_type == "evovlm_dfs"
    assert load_runner(zoo_copy / "evollm").kind == "causal-lm" and load_runner(zoo_copy / "evovlm").kind == "vlm"
    assert not list(zoo_copy.glob(".*partial"))


def test_the_dfs_claims_on_hand_counted_rows():
    from evovlm.zoo.evolution import (
        DFS_ROW,
        HAND_ROW,
        HYBRID_ROW,
        PS_DFS_ORACLE,
        PS_READER_ADDED,
        PS_ROW,
        evolution_checks,
    )

    def row(model, right, bench="zoo-mgsm-ja-kanji", n=100):
        bits = "1" * right + "0" * (n - right)
        return {"model": model, "benchmark": bench, "n": n, "acc_ja": float(right), "acc_pure": float(right),
                "acc": float(right), "correct_ja": bits}

    digits = [row(name, right, "zoo-mgsm-ja") for name, right in (
        ("base", 0), ("ja", 1), ("math", 2), ("task arithmetic, λ=1", 3), ("TIES, density 0.5", 3),
        ("DARE-TIES, density 0.5", 3), ("oracle: MATH inside, JA output blocks", 90), (PS_ROW, 90),
        (DFS_ROW, 30), (HYBRID_ROW, 80), (HAND_ROW + ": A0 B1-3 A4-5", 30))]

    def checks(hybrid_right, reader_added=0, digit_rows=digits):
        kanji = [row(name, right) for name, right in (
            ("base", 0), ("ja", 1), ("math", 1), ("reader", 0), (PS_ROW, 3), (PS_READER_ADDED, reader_added),
            (PS_DFS_ORACLE, 60), (HYBRID_ROW, hybrid_right))]
        return {c["criterion"]: c for c in evolution_checks(digit_rows + kanji)}

    claim = "PS+DFS beats PS, every source and PS plus the reader's task vector on zoo-mgsm-ja-kanji"
    # the first 3 problems are right for both: 40 won, 0 lost against PS; p = 2^-40
    passed = checks(43)
    assert passed[claim]["passed"] and "PS+DFS 43.0; PS 3.0; DFS oracle over PS 60.0" in passed[claim]["numbers"]
    assert "PS+DFS at least as good as PS" not in passed  # on digits it is a row, not the claim (80 < 90)
    assert passed["DFS reaches the best legal hand-written path"]["passed"]  # 30 = 30
    # ... and costs PS 10 digit problems (10 won, 0 lost for PS: p = 2^-10); 2 of them would be noise (p = 1/4)
    from evovlm.zoo.evolution import DIGITS_CLAIM

    assert not passed[DIGITS_CLAIM]["passed"]
    digits_numbers = passed[DIGITS_CLAIM]["numbers"]
    assert "PS+DFS 80.0; PS 90.0; PS's sign test against evolved PS+DFS: 10 problems won, 0 lost, p = 0.00098" in (
        digits_numbers)
    kept = [r for r in digits if r["model"] != HYBRID_ROW] + [row(HYBRID_ROW, 88, "zoo-mgsm-ja")]
    assert checks(43, digit_rows=kept)[DIGITS_CLAIM]["passed"]
    assert not checks(7)[claim]["passed"]  # 4 won against PS, 0 lost: p = 1/16
    assert not checks(43, reader_added=44)[claim]["passed"]  # the weight merge reads more
    lower = {c["criterion"]: c for c in evolution_checks(
        [dict(r, acc_ja=29.0) if r["model"] == DFS_ROW else r for r in digits])}
    assert not lower["DFS reaches the best legal hand-written path"]["passed"]
    assert "PS+DFS at least as good as PS" in lower  # a table without kanji rows keeps the old claim
    # --quick's DFS is too short for the hand path: that claim is printed, but does not fail the run
    from evovlm.zoo.evolution import HAND_CLAIM, QUICK, claims_hold, format_table

    result = {"rows": digits, "checks": list(lower.values()), "budget": {"not_gated": list(QUICK.not_gated)}}
    assert QUICK.not_gated == (HAND_CLAIM,) and claims_hold(result) is False  # PS+DFS 80 < PS 90 still gates
    result["checks"] = [c for c in result["checks"] if c["criterion"] != "PS+DFS at least as good as PS"]
    assert claims_hold(result) and f"| {HAND_CLAIM} | FAIL (not gated at this budget) |" in format_table(result)
    assert not claims_hold(dict(result, budget={"not_gated": []}))


def test_sign_test_and_beats_claims_on_hand_counted_rows():
    from evovlm.zoo.evolution import DFS_ROW, evolution_checks
    from evovlm.zoo.report import sign_test

    def row(model, bits, bench="zoo-mgsm-ja"):
        acc_ja = round(100 * bits.count("1") / len(bits), 1)
        return {"model": model, "benchmark": bench, "n": len(bits), "acc_ja": acc_ja, "correct_ja": bits}

    # pairs (1,0) (1,1) (0,1) (1,0): 2 won, 1 lost; P(X >= 2 | 3 fair coins) = (3 + 1) / 8
    assert sign_test([row("a", "1101"), row("b", "0110")], "a", "b") == (2, 1, 0.5)
    assert sign_test([row("a", "11111"), row("b", "00000")], "a", "b") == (5, 0, 1 / 32)
    assert sign_test([row("a", "10"), {"model": "b", "benchmark": "zoo-mgsm-ja", "acc_ja": 0}], "a", "b") == (0, 0, 1.0)

    # 500 problems: a DFS row with 6 right answers against a source with 4 is higher, but not a win
    def table(dfs_bits, ps_right=400):
        rest = "0" * 500
        names = ["base", "ja", "math", "task arithmetic, λ=1", "TIES, density 0.5", "DARE-TIES, density 0.5",
                 "oracle: MATH inside, JA output blocks", "evolved PS", "evolved PS+DFS"]
        rows = [row(name, "1" * 400 + "0" * 100 if "oracle" in name else
                    "1" * ps_right + "0" * (500 - ps_right) if "PS" in name else rest) for name in names]
        rows[1] = row("ja", "1111" + "0" * 496)
        rows.append(row(DFS_ROW, dfs_bits))
        rows += vqa_rows
        return {c["criterion"]: c for c in evolution_checks(rows)}

    # VLM rows: 10 questions, content_ja per question by hand
    def vqa(model, bits, content=None):
        value = 100 * bits.count("1") / len(bits)
        return {"model": model, "benchmark": "zoo-vqa-ja", "n": len(bits), "rougeL_ja": 50.0, "content_ja": value,
                "content": value if content is None else content, "correct_ja": bits}

    vqa_rows = [vqa("vlm", "0" * 10, content=90.0), vqa("ja", "1" + "0" * 9),
                vqa("best fixed reply: 丸=1; 答えは1です。", "0" * 9 + "1"),
                vqa("evolved VLM (PS)", "1" * 9 + "0"), vqa("evolved VLM (PS) on a blank image", "0" * 10)]

    checks = table("0000" + "111111" + "0" * 490)  # 6 right, none shared with ja's 4: 6 won, 4 lost
    assert not checks["DFS beats every source"]["passed"]
    assert "6 problems won, 4 lost, p = 0.38" in checks["DFS beats every source"]["numbers"]
    checks = table("0000" + "1" * 27 + "0" * 469)  # 27 won, 4 lost: p = 1.7e-5
    assert checks["DFS beats every source"]["passed"]
    assert checks["PS beats every source and every uniform merge"]["passed"]

    # the oracle (80.0) gains 79.2 points over the best source (ja, 0.8): PS must recover 80% of them
    recovered = "PS recovers >= 80% of the oracle's gain over the best source"
    assert table("0" * 500)[recovered]["passed"]  # PS = oracle: 100%
    assert table("0" * 500, ps_right=321)[recovered]["passed"]  # PS 64.2: (64.2 - 0.8) / 79.2 = 0.8005
    assert not table("0" * 500, ps_right=320)[recovered]["passed"]  # PS 64.0: 0.798

    # evolved VLM 90 content_ja: >= 80, within 5 of the VLM's 90 content, 80 points above every blind row;
    # closest: the fixed reply, right on the last question only: 9 won, 1 lost, p = (10 + 1) / 2^10
    checks = table("0" * 500)
    assert checks["evolved VLM >= 80% content_ja on zoo-vqa-ja"]["passed"]
    assert checks["evolved VLM keeps its sight: content_ja within 5 points of the source VLM's content "
                  "(any language)"]["passed"]
    beat = checks["evolved VLM (PS) beats the VLM and every blind baseline on zoo-vqa-ja content_ja"]
    assert beat["passed"] and "9 problems won, 1 lost, p = 0.011" in beat["numbers"], beat
    assert checks["evolved VLM (PS) >= 40 points of content_ja above every blind baseline"]["passed"]
    assert checks["no fixed reply names the right value on more than 1/k = 10% of zoo-vqa-ja"]["passed"]
    vqa_rows[0]["content"] = 96.0  # the merge now sees worse than the VLM: 90 < 96 - 5
    assert not table("0" * 500)["evolved VLM keeps its sight: content_ja within 5 points of the source VLM's "
                                "content (any language)"]["passed"]
    vqa_rows[4] = vqa("evolved VLM (PS) on a blank image", "1" * 6 + "0" * 4)  # 60: only 30 points below
    assert not table("0" * 500)["evolved VLM (PS) >= 40 points of content_ja above every blind baseline"]["passed"]


@pytest.mark.parametrize("ja_context", ["none", "sentence", "hidden", "value"])
def test_vlm_inner_batches_hold_the_japanese_sentence_as_asked(ja_context):
    """After Japanese work: the base's predictions (sentence), its residual stream (hidden; value: from the
    value's last token on, the separator untaught) or nothing (none)."""
    import random

    from evovlm.zoo.build import _vqa_batches, zoo_processor, zoo_tokenizer

    processor = zoo_processor(zoo_tokenizer())
    batch = _vqa_batches(processor, random.Random(0), batch_size=6, phase="inner", ja_share=1.0, ja_work="all",
                         ja_context=ja_context)(0)
    tokenizer = processor.tokenizer
    for row in range(6):
        length = int(batch["attention_mask"][row].sum())
        text = tokenizer.decode(batch["input_ids"][row][:length])
        work = batch["exit_labels"][row] != -100
        last_work = int(work.nonzero()[-1])
        anchored = batch["anchor_mask"][row].nonzero().flatten().tolist()
        held = batch["hidden_anchor_mask"][row].nonzero().flatten().tolist() if "hidden_anchor_mask" in batch else []
        assert torch.equal(batch["labels"][row] != -100, work)  # the loss covers the work, never the sentence
        assert ("答えは" in text) == (ja_context != "none")
        taught = tokenizer.decode(batch["input_ids"][row][work])
        if ja_context == "sentence":
            assert anchored == list(range(last_work, length)) and not held
        elif ja_context == "value":  # the separator is not taught; its positions and the value's last are held
            assert not taught.endswith("; ") and "=" in taught
            separator = last_work + 1
            assert tokenizer.decode(batch["input_ids"][row][separator:separator + 2]) == "; "
            assert anchored == [separator + 1] and held == list(range(last_work, length))
        else:  # where the work ends: what the untrained VLM writes next
            assert taught.endswith("; ")
            assert anchored == [last_work]
            assert held == (list(range(last_work + 1, length)) if ja_context == "hidden" else [])
        assert "soft_anchor_mask" not in batch  # only with work_anchor


def test_vlm_answer_context_teaches_the_sentence_value_through_the_early_exit():
    """ja_context=answer: as hidden, but the early exit also learns the value after 答えは, and the
    positions that predict it are free of the hidden anchor; the loss through the head stays on the work."""
    import random

    from evovlm.zoo.build import _vqa_batches, zoo_processor, zoo_tokenizer

    processor = zoo_processor(zoo_tokenizer())
    batch = _vqa_batches(processor, random.Random(2), batch_size=8, phase="inner", ja_share=1.0, ja_work="all",
                         ja_context="answer")(0)
    tokenizer = processor.tokenizer
    values = set()
    for row in range(8):
        ids = batch["input_ids"][row]
        length = int(batch["attention_mask"][row].sum())
        work = (batch["labels"][row] != -100).nonzero().flatten().tolist()
        exits = (batch["exit_labels"][row] != -100).nonzero().flatten().tolist()
        last_work = work[-1]
        assert tokenizer.decode(ids[work]).endswith("; ") and exits[:len(work)] == work
        answer = exits[len(work):]
        sentence = tokenizer.decode(ids[last_work + 1:length])
        value = sentence.removeprefix("答えは").removesuffix("です。")
        assert answer and tokenizer.decode(ids[answer]) == value and answer[0] == last_work + 4
        assert batch["anchor_mask"][row].nonzero().flatten().tolist() == [last_work]
        held = batch["hidden_anchor_mask"][row].nonzero().flatten().tolist()
        assert held == [p for p in range(last_work + 1, length) if p + 1 not in answer]
        values.add(value)
    assert len(values) > 2


def test_vlm_work_anchor_marks_the_japanese_work_only():
    """vlm_work_anchor: the work's positions (prompt end to the separator) of Japanese questions, beside the
    hidden anchor on the sentence; English questions keep theirs free. Refused without the hidden anchor
    (contexts hidden and answer)."""
    import random

    from evovlm.errors import EvoVLMError
    from evovlm.zoo.build import ZooSettings, _vqa_batches, build_zoo, zoo_processor, zoo_tokenizer

    processor = zoo_processor(zoo_tokenizer())
    batch = _vqa_batches(processor, random.Random(1), batch_size=8, phase="inner", ja_share=0.5, ja_work="all",
                         ja_context="hidden", work_anchor=True)(0)
    japanese = 0
    for row in range(8):
        work = (batch["exit_labels"][row] != -100).nonzero().flatten().tolist()
        soft = batch["soft_anchor_mask"][row].nonzero().flatten().tolist()
        text = processor.tokenizer.decode(batch["input_ids"][row][:int(batch["attention_mask"][row].sum())])
        if "答えは" in text:
            japanese += 1
            assert soft == work
        else:
            assert soft == []
    assert 0 < japanese < 8
    with pytest.raises(EvoVLMError, match="vlm_work_anchor"):
        refused = ZooSettings.quick().with_changes(["vlm_ja_context=sentence", "vlm_work_anchor=0.1"])
        build_zoo("unused", settings=refused, models=("vlm",))


def test_hidden_anchor_is_the_relative_squared_distance():
    from evovlm.zoo.train import _anchor_hidden

    anchor = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])
    hidden = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    # position 0 only: mean((0-1)^2, (0-0)^2) / mean(1^2, 0^2) = 0.5 / 0.5
    assert _anchor_hidden(anchor, hidden, mask).item() == pytest.approx(1.0)
    assert _anchor_hidden(anchor, anchor, torch.tensor([[True, True]])).item() == 0.0


def test_ja_smallest_number_reads_ones_and_zeros_back_and_the_benchmark_keeps_two():
    import random

    from evovlm.errors import EvoVLMError
    from evovlm.zoo import world
    from evovlm.zoo.build import ZooSettings, _ja_examples, build_zoo

    def numbers(smallest: int) -> set[int]:
        draws = (world.japanese_instruction(random.Random(seed), smallest) for seed in range(3000))
        return {int(item.value) for item in draws if "持っていますか" in item.question}

    assert min(numbers(2)) == 2 and {0, 1} <= numbers(0)
    rng, reference = random.Random(4), random.Random(4)  # the builder passes it on, same draws otherwise
    assert [_ja_examples(frozenset(), 0.0, 0)(rng) for _ in range(30)] == [
        (item.question, " " + item.answer) for item in (world.japanese_instruction(reference, 0) for _ in range(30))]
    with pytest.raises(EvoVLMError, match="ja_smallest_number"):
        build_zoo("unused", settings=ZooSettings.quick().with_changes(["ja_smallest_number=-1"]), models=("ja",))


def test_ja_colour_reading_share():
    """Share 0 draws exactly the instructions of before; a share mixes in colours read back from the question."""
    import random

    from evovlm.zoo import world
    from evovlm.zoo.build import _ja_examples

    rng, reference = random.Random(5), random.Random(5)
    plain = [_ja_examples(frozenset(), 0.0)(rng) for _ in range(50)]
    assert plain == [(item.question, " " + item.answer) for item in
                     (world.japanese_instruction(reference) for _ in range(50))]
    mixed = [_ja_examples(frozenset(), 0.5)(random.Random(seed)) for seed in range(200)]
    readings = [(question, answer) for question, answer in mixed if "何色ですか" in question and "。" in question]
    assert 60 < len(readings) < 140
    for question, answer in readings:
        value = answer.split("答えは")[1].removesuffix("です。")
        assert value in {colour[1] for colour in world.COLOURS} and value in question.split("。")[0]
        assert not any(shape[2] in question for shape in world.SHAPES)  # no shape: nothing of the VQA task


def test_train_loop_pulls_the_masked_residual_stream_towards_the_anchor():
    """With a hidden anchor the residual stream after block 1 moves to the anchor's; without it, it does not."""
    import copy

    from transformers import MistralConfig, MistralForCausalLM

    from evovlm.zoo.train import _anchor_hidden, train_loop

    config = MistralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, vocab_size=20, max_position_embeddings=32)
    torch.manual_seed(0)
    start, anchor = MistralForCausalLM(config), MistralForCausalLM(config).eval()
    ids = torch.randint(0, 20, (2, 8))
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]  # one token to learn, so every loss term is finite
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, 4:] = True

    def trained(hidden_anchor: bool) -> float:
        model = copy.deepcopy(start)
        batch = {"input_ids": ids, "labels": labels, "exit_labels": labels, "anchor_mask": torch.zeros_like(mask)}
        if hidden_anchor:
            batch["hidden_anchor_mask"] = mask
        losses = train_loop(model, lambda step: dict(batch), steps=40, lr=1e-2, warmup=1, exit_layer=1,
                            anchor=anchor, progress=False)
        assert all(torch.isfinite(torch.tensor(losses)))
        with torch.no_grad():
            return _anchor_hidden(anchor(ids, output_hidden_states=True).hidden_states[1],
                                  model(ids, output_hidden_states=True).hidden_states[1], mask).item()

    assert trained(True) < 0.01 * trained(False)  # measured: 0.0005 against 11.2


def test_vlm_questions_balanced_draws_every_answer_as_often_as_the_benchmark():
    """"balanced": answers uniform over scenes.ANSWERS (a count of 4 is 10% of the questions, as in the
    benchmark); "scene": as random scenes fall (a count of 4 under 1%); any other value is refused."""
    import collections
    import random

    from evovlm.zoo import scenes
    from evovlm.zoo.build import ZooSettings, _vqa_example, build_zoo

    def shares(questions: str) -> collections.Counter:
        rng = random.Random(3)
        drawn = collections.Counter(_vqa_example(rng, "inner", 0.3, "all", "answer", questions)[1].value_en
                                    for _ in range(2000))
        return collections.Counter({answer: drawn[answer] / 2000 for answer in scenes.ANSWERS})

    balanced, scene = shares("balanced"), shares("scene")
    assert all(0.07 < share < 0.13 for share in balanced.values())
    assert scene["4"] < 0.01 and scene["0"] > 0.2
    assert ZooSettings().vlm_questions == "balanced"
    for change in ("vlm_questions=uniform", "vlm_ja_work=colour", "vlm_ja_context=words"):
        with pytest.raises(EvoVLMError, match=change.split("=")[0] + " must be one of"):
            build_zoo("unused", settings=ZooSettings.quick().with_changes([change]), models=("vlm",))


def test_the_dfs_oracle_runs_the_readers_blocks_between_block_0_and_block_1(quick_zoo, tmp_path):
    from evovlm.zoo.paths import hand_paths, oracle_path, path_name, save_dfs_path
    from evovlm.zoo.reader import reading_blocks

    assert reading_blocks(4) == [1, 2, 3] and reading_blocks(3) == [1, 2]
    # stored layers: A's 0-5, then the reader's 6-11
    assert oracle_path(6, [1, 2, 3]) == [0, 7, 8, 9, 1, 2, 3, 4, 5]
    assert path_name([0, 7, 8, 9, 1, 2, 3, 4, 5], 6) == "A0 B1-3 A1-5" and path_name([6, 0, 0], 6) == "B0 A0 A0"
    paths = hand_paths(6, 4)  # run 17's paths, every one legal: from A's block 0 to A's last
    assert paths["A0 B1-3 A4-5"] == [0, 7, 8, 9, 4, 5] and len(paths) == 8
    assert all(path[0] == 0 and path[-1] == 5 for path in paths.values())
    saved = save_dfs_path(quick_zoo / "math", quick_zoo / "reader", oracle_path(4, [1, 2]), tmp_path / "oracle")
    oracle = load_runner(saved)
    config = oracle.model.config
    assert [config.dfs_layer_origins[i] for i in config.dfs_path] == ["A:0", "B:1", "B:2", "A:1", "A:2", "A:3"]
    reader = load_file(quick_zoo / "reader" / "model.safetensors")
    stored = oracle.model.model.layers[config.dfs_path[1]].mlp.down_proj.weight
    assert torch.equal(stored, reader["model.layers.1.mlp.down_proj.weight"])


def test_the_reader_trains_only_its_reading_blocks_and_deep_holds_each_block(quick_zoo):
    import random

    from evovlm.zoo.build import _reload, zoo_tokenizer
    from evovlm.zoo.reader import train_reader

    trained = {}
    for deep in (0.0, 1.0):
        reader = _reload(quick_zoo / "base")
        losses = train_reader(reader, zoo_tokenizer(), [_reload(quick_zoo / "math")], random.Random(0), steps=2,
                              lr=1e-3, batch_size=2, blocks=[1, 2], deep=deep, progress=False)
        assert len(losses) == 2 and all(loss == loss and loss > 0 for loss in losses)
        trained[deep] = reader.state_dict()
    base = load_file(quick_zoo / "base" / "model.safetensors")
    moved = {name for name, tensor in trained[0.0].items() if not torch.equal(tensor, base[name])}
    assert moved and all(name.startswith(("model.layers.1.", "model.layers.2.")) for name in moved)
    # the error after block 1 joins the loss: block 1 learns something else
    block1 = "model.layers.1.mlp.down_proj.weight"
    assert not torch.equal(trained[0.0][block1], trained[1.0][block1])


def test_reader_problems_hold_digit_problems_unchanged_and_zero_draws_as_before():
    import random

    from evovlm.zoo.build import ZooSettings, _build, _digit_problem_texts
    from evovlm.zoo.reader import _kanji_pair

    texts = _digit_problem_texts(frozenset())
    text = texts(random.Random(3))
    assert text.startswith("Q: ") and "A: " in text and any(c.isdigit() for c in text)
    pairs = [_kanji_pair(random.Random(seed), texts, 1.0) for seed in range(5)]
    assert all(digits == written and "Q: " in digits for digits, written in pairs)
    # share 0 (the default) leaves the random stream as it was: the committed reader's documents
    assert all(_kanji_pair(random.Random(seed), texts, 0.0) == _kanji_pair(random.Random(seed)) for seed in range(20))
    reserved = frozenset([texts(random.Random(7)).split("\n")[0].removeprefix("Q: ")])
    assert _digit_problem_texts(reserved)(random.Random(7)) != texts(random.Random(7))
    with pytest.raises(EvoVLMError, match="reader_problems is a share from 0 to 1, got 1.5"):
        _build(Path("unused"), 0, ZooSettings.quick().with_changes(["reader_problems=1.5"]), False, ("reader",))


@pytest.mark.parametrize("change, message", [
    ("ja_steps=-5", "ja_steps must be at least 1, got -5"),  # was a ZeroDivisionError after pretraining
    ("hidden=30", r"hidden must be a multiple of 2 x heads \(8\)"),  # was RoPE's error from transformers
    ("kv_heads=3", r"kv_heads must divide heads \(4\)"),
    ("output_blocks=4", r"output_blocks must be less than layers \(4\)"),
    ("pretrain_lr=nan", "pretrain_lr must be above 0, got nan"),
    ("math_ja_share=1.5", "math_ja_share is a share from 0 to 1"),
])
def test_zoo_settings_refuse_what_the_build_cannot_use(tmp_path, change, message):
    from evovlm.zoo.build import ZooSettings, build_zoo

    with pytest.raises(EvoVLMError, match=message):
        build_zoo(tmp_path / "zoo", settings=ZooSettings.quick().with_changes([change]))
    assert not (tmp_path / "zoo").exists()  # refused before anything was written
    ZooSettings().check()
    ZooSettings.quick().check()


def test_the_table_merges_a_recipe_once(quick_zoo, tmp_path):
    from evovlm.zoo.report import ORACLE, TableScorer, llm_recipes, zoo_refs, zoo_shape

    table = TableScorer(tmp_path, progress=False, log=lambda _: None)
    recipe = llm_recipes(zoo_refs(quick_zoo), *zoo_shape(quick_zoo))[ORACLE]
    first = table.merged(ORACLE, recipe)
    assert table.merged("the same recipe again", dict(recipe)) == first
    other = table.merged("TIES", llm_recipes(zoo_refs(quick_zoo), *zoo_shape(quick_zoo))["TIES, density 0.5"])
    assert other != first and sorted(p.name for p in tmp_path.glob("merge-*")) == ["merge-0", "merge-1"]


def test_zoo_evolve_on_a_build_without_the_reader_says_how_to_add_it(quick_zoo, tmp_path, capsys):
    import shutil

    older = tmp_path / "older"
    shutil.copytree(quick_zoo, older, ignore=shutil.ignore_patterns("reader"))
    assert main(["zoo", "evolve", "--zoo", str(older), "--out", str(tmp_path / "runs"), "--half", "text"]) == 2
    assert f"lacks reader: build the zoo first (`evovlm zoo build`; `evovlm zoo build --out {older} --only reader` " \
           "adds them)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
