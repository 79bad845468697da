"""``evovlm zoo report``: the zoo's acceptance table, measured.

Every source on its own task and on the target, the uniform merges with default parameters,
and the hand-written oracles (a layer-wise merge written from how the zoo is built: the MATH
expert's or the VLM's inner blocks, the JA expert's output blocks). Merges are written to a
temporary folder with the merge engine and scored with the evaluator, on the benchmarks' test
splits (or on a fresh draw with ``--data-seed``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from evovlm.errors import EvoVLMError
from evovlm.zoo import MODELS


def oracle_weights(layers: int, output_blocks: int) -> tuple[dict, dict]:
    """Per-layer-group weights of the oracle: (inner model, JA expert)."""
    outer = f"layers.{layers - output_blocks}-{layers - 1}"
    inner_weight = {"default": 1.0, outer: 0.0, "norm": 0.0, "lm_head": 0.0}
    ja_weight = {"default": 0.0, outer: 1.0, "norm": 1.0, "lm_head": 1.0}
    return inner_weight, ja_weight


def zoo_refs(zoo: Path) -> dict[str, str]:
    return {name: str(zoo / name) for name in MODELS}


def llm_recipes(refs: dict[str, str], layers: int, output_blocks: int) -> dict[str, dict]:
    """The text merges of the table, as recipe dicts over the models ``refs`` names."""
    base, ja, math = refs["base"], refs["ja"], refs["math"]
    inner_weight, ja_weight = oracle_weights(layers, output_blocks)
    uniform = [{"model": ja, "weight": 1.0, "density": 0.5}, {"model": math, "weight": 1.0, "density": 0.5}]
    return {
        "task arithmetic, λ=1": {"method": "task_arithmetic", "base_model": base,
                                 "models": [{"model": ja, "weight": 1.0}, {"model": math, "weight": 1.0}]},
        "TIES, density 0.5": {"method": "ties", "base_model": base, "models": uniform},
        "DARE-TIES, density 0.5": {"method": "dare_ties", "base_model": base, "seed": 0, "models": uniform},
        "oracle: MATH inside, JA output blocks": {
            "method": "task_arithmetic", "base_model": base,
            "models": [{"model": math, "weight": inner_weight}, {"model": ja, "weight": ja_weight}]},
    }


def vlm_oracle_recipe(refs: dict[str, str], layers: int, output_blocks: int) -> dict:
    """The JA expert's output blocks in the VLM's language tower; vision tower and projector kept."""
    inner_weight, ja_weight = oracle_weights(layers, output_blocks)
    return {"method": "task_arithmetic", "base_model": refs["base"], "target": refs["vlm"],
            "models": [{"model": refs["vlm"], "weight": inner_weight}, {"model": refs["ja"], "weight": ja_weight}]}


def _zoo_shape(zoo: Path) -> tuple[int, int]:
    build = zoo / "build.json"
    if not build.is_file():
        raise EvoVLMError(f"{zoo} has no build.json: not a zoo built by `evovlm zoo build`")
    settings = json.loads(build.read_text(encoding="utf-8"))["settings"]
    return int(settings["layers"]), int(settings["output_blocks"])


def acceptance_report(zoo: str | Path, *, limit: int | None = None, data_seed: int | None = None,
                      progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Measure every row of the acceptance table; returns ``{"rows": [...], "checks": [...]}``."""
    from evovlm.eval.benchmarks import load_benchmark
    from evovlm.eval.evaluate import evaluate
    from evovlm.eval.runners import load_runner
    from evovlm.merge.engine import merge_checkpoints
    from evovlm.merge.recipe import recipe_from_dict

    zoo = Path(zoo).resolve()
    refs = zoo_refs(zoo)
    layers, output_blocks = _zoo_shape(zoo)
    split = None if data_seed is not None else "test"
    benches: dict[str, object] = {}

    def bench(name: str):
        if name not in benches:
            benches[name] = load_benchmark(name, split=split, data_seed=data_seed, limit=limit)
        return benches[name]

    rows: list[dict] = []

    def score(model: str, path: Path, bench_name: str, keys: tuple[str, ...], blind: bool = False) -> None:
        benchmark = bench(bench_name)
        if blind:  # a text-only model gets the image questions without the images
            benchmark = dataclasses.replace(benchmark, kind="qa")
        results = evaluate(load_runner(path), benchmark, progress=progress)
        summary = results["summary"]  # every metric is in percent
        row = {"model": model, "benchmark": bench_name, "n": summary["n"],
               **{key: round(float(summary[key]), 1) for key in keys}}
        rows.append(row)
        log("  " + ", ".join(f"{k}={v}" for k, v in row.items()))

    with tempfile.TemporaryDirectory(prefix="evovlm-zoo-report-") as scratch:
        numbers = itertools.count()

        def merged(name: str, recipe: dict) -> Path:
            out = Path(scratch) / f"merge-{next(numbers)}"
            merge_checkpoints(recipe_from_dict(recipe, name), out, progress=False)
            return out

        log("sources on their own tasks")
        score("ja", zoo / "ja", "zoo-ja-qa", ("content_ja",))
        score("math", zoo / "math", "zoo-math-en", ("acc",))
        score("vlm", zoo / "vlm", "zoo-vqa-en", ("content",))
        log("zoo-mgsm-ja: sources, uniform merges, oracle")
        target_keys = ("acc", "acc_ja", "acc_pure")
        for name in ("base", "ja", "math"):
            score(name, zoo / name, "zoo-mgsm-ja", target_keys)
        for name, recipe in llm_recipes(refs, layers, output_blocks).items():
            score(name, merged(name, recipe), "zoo-mgsm-ja", target_keys)
        log("zoo-vqa-ja: VLM, JA expert (no image), oracle")
        vqa_keys = ("rougeL_ja", "content_ja", "content")
        score("vlm", zoo / "vlm", "zoo-vqa-ja", vqa_keys)
        score("ja", zoo / "ja", "zoo-vqa-ja", vqa_keys, blind=True)
        score("oracle: VLM inside, JA output blocks", merged("vlm-oracle", vlm_oracle_recipe(refs, layers, output_blocks)),
              "zoo-vqa-ja", vqa_keys)
    return {"zoo": str(zoo), "split": split, "data_seed": data_seed, "limit": limit, "rows": rows,
            "checks": acceptance_checks(rows)}


def _value(rows: list[dict], model: str, bench: str, key: str) -> float:
    return next(row[key] for row in rows if row["model"] == model and row["benchmark"] == bench)


def acceptance_checks(rows: list[dict]) -> list[dict]:
    """The issue's criteria, each with the numbers it was decided on."""
    oracle, vlm_oracle = "oracle: MATH inside, JA output blocks", "oracle: VLM inside, JA output blocks"
    mgsm = "zoo-mgsm-ja"
    checks = []

    def check(text: str, passed: bool, numbers: str) -> None:
        checks.append({"criterion": text, "passed": bool(passed), "numbers": numbers})

    own = {"ja": ("zoo-ja-qa", "content_ja"), "math": ("zoo-math-en", "acc"), "vlm": ("zoo-vqa-en", "content")}
    own_scores = {name: _value(rows, name, *spec) for name, spec in own.items()}
    check("each expert >= 90% on its own task", min(own_scores.values()) >= 90,
          ", ".join(f"{k} {v}" for k, v in own_scores.items()))
    sources = {name: _value(rows, name, mgsm, "acc_ja") for name in ("base", "ja", "math")}
    check("no source reaches 10% acc_ja", max(sources.values()) < 10, ", ".join(f"{k} {v}" for k, v in sources.items()))
    best_source = max(sources.values())
    best_pure = max(_value(rows, name, mgsm, "acc_pure") for name in sources)
    oracle_ja, oracle_pure = _value(rows, oracle, mgsm, "acc_ja"), _value(rows, oracle, mgsm, "acc_pure")
    check("oracle beats every source by >= 30 points of acc_ja", oracle_ja - best_source >= 30,
          f"oracle {oracle_ja}, best source {best_source}")
    check("oracle also wins on acc_pure", oracle_pure > best_pure, f"oracle {oracle_pure}, best source {best_pure}")
    uniform = {name: _value(rows, name, mgsm, "acc_ja")
               for name in ("task arithmetic, λ=1", "TIES, density 0.5", "DARE-TIES, density 0.5")}
    check("uniform merges clearly below the oracle (>= 10 points)", max(uniform.values()) <= oracle_ja - 10,
          ", ".join(f"{k} {v}" for k, v in uniform.items()) + f"; oracle {oracle_ja}")
    vqa = "zoo-vqa-ja"
    for key in ("rougeL_ja", "content_ja"):
        values = {name: _value(rows, name, vqa, key) for name in ("vlm", "ja", vlm_oracle)}
        check(f"VLM oracle beats the VLM and the JA expert on {vqa} {key}",
              values[vlm_oracle] > max(values["vlm"], values["ja"]), ", ".join(f"{k} {v}" for k, v in values.items()))
    return checks


def format_report(report: dict) -> str:
    """Markdown: one table of measurements, one of criteria."""
    lines = ["| model | benchmark | n | metrics |", "|---|---|---|---|"]
    for row in report["rows"]:
        metrics = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("model", "benchmark", "n"))
        lines.append(f"| {row['model']} | {row['benchmark']} | {row['n']} | {metrics} |")
    lines += ["", "| criterion | result | numbers |", "|---|---|---|"]
    for item in report["checks"]:
        lines.append(f"| {item['criterion']} | {'pass' if item['passed'] else 'FAIL'} | {item['numbers']} |")
    return "\n".join(lines)
