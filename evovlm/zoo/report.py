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
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

from evovlm.errors import EvoVLMError
from evovlm.zoo import MODELS

ORACLE = "oracle: MATH inside, JA output blocks"
KANJI = "zoo-mgsm-ja-kanji"  # issue 18: numbers in kanji, which only a layer path through the reader reads
DFS_ORACLE = "DFS oracle: the oracle's block 0, the reader's blocks 1-3, the oracle's blocks 1-5"
READER_ADDED = "oracle + the reader's task vector (λ=1)"  # what a weight merge makes of the reader
VLM_ORACLE = "oracle: VLM inside, JA output blocks"
BLANK = " on a blank image"  # suffix of the image-ablated rows: what proves a merge looks
FIXED_REPLY = "best fixed reply"  # prefix of the blind template row, then the reply itself


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
        ORACLE: {
            "method": "task_arithmetic", "base_model": base,
            "models": [{"model": math, "weight": inner_weight}, {"model": ja, "weight": ja_weight}]},
    }


def vlm_oracle_recipe(refs: dict[str, str], layers: int, output_blocks: int) -> dict:
    """The JA expert's output blocks in the VLM's language tower; vision tower and projector kept."""
    inner_weight, ja_weight = oracle_weights(layers, output_blocks)
    return {"method": "task_arithmetic", "base_model": refs["base"], "target": refs["vlm"],
            "models": [{"model": refs["vlm"], "weight": inner_weight}, {"model": refs["ja"], "weight": ja_weight}]}


def zoo_shape(zoo: Path) -> tuple[int, int]:
    build = zoo / "build.json"
    if not build.is_file():
        raise EvoVLMError(f"{zoo} has no build.json: not a zoo built by `evovlm zoo build`")
    settings = json.loads(build.read_text(encoding="utf-8"))["settings"]
    return int(settings["layers"]), int(settings["output_blocks"])


class TableScorer:
    """Scores models into table rows on the test splits (or a fresh draw); merges into ``scratch``."""

    def __init__(self, scratch: str | Path, *, limit: int | None = None, data_seed: int | None = None,
                 split: str = "test", progress: bool = True, log: Callable[[str], None] = print) -> None:
        self.scratch = Path(scratch)
        self.limit, self.data_seed, self.progress, self.log = limit, data_seed, progress, log
        self.split = None if data_seed is not None else split
        self.rows: list[dict] = []
        self._benches: dict[str, object] = {}
        self._numbers = itertools.count()
        self._merges: dict[str, Path] = {}

    def bench(self, name: str):
        from evovlm.eval.benchmarks import load_benchmark

        if name not in self._benches:
            self._benches[name] = load_benchmark(name, split=self.split, data_seed=self.data_seed, limit=self.limit)
        return self._benches[name]

    def score(self, model: str, path: str | Path, bench_name: str, keys: tuple[str, ...],
              blind: bool = False, blank: bool = False) -> dict:
        """``blind``: a text-only model gets the image questions without the images; ``blank``: a VLM
        gets every question with an empty scene instead of its image (the image-ablated row)."""
        from evovlm.eval.evaluate import evaluate
        from evovlm.eval.runners import load_runner

        benchmark = self.bench(bench_name)
        if blind:
            benchmark = dataclasses.replace(benchmark, kind="qa")
        if blank:
            from evovlm.zoo.scenes import render

            empty = render(())
            benchmark = dataclasses.replace(benchmark, samples=[
                dataclasses.replace(sample, image=empty, image_ref="zoo-scene:") for sample in benchmark.samples])
        results = evaluate(load_runner(path), benchmark, progress=self.progress)
        return self._add(model, bench_name, results["summary"], results["samples"], keys)

    def score_replies(self, model: str, bench_name: str, replies: list[str], keys: tuple[str, ...]) -> dict:
        """A row for replies written without a model (a fixed reply's baseline)."""
        from evovlm.eval.metrics import score_rouge_ja

        samples = self.bench(bench_name).samples
        summary, scored = score_rouge_ja([s.reference for s in samples], replies, contents=[s.content for s in samples],
                                         n_resamples=10)
        return self._add(model, bench_name, summary, scored, keys)

    def _add(self, model: str, bench_name: str, summary: dict, samples: list[dict], keys: tuple[str, ...]) -> dict:
        row = {"model": model, "benchmark": bench_name, "n": summary["n"],
               **{key: round(float(summary[key]), 1) for key in keys}}
        # per problem, in order, for paired sign tests (zoo.evolution): right in Japanese
        right = "correct_ja" if "acc_ja" in keys else "content_ja" if "content_ja" in keys else None
        if right:
            row["correct_ja"] = "".join("1" if sample[right] else "0" for sample in samples)
        self.rows.append(row)
        self.log("  " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "correct_ja"))
        return row

    def best_fixed_reply(self, bench_name: str) -> dict:
        """The row of the best reply that never looks at the image (by content_ja, then ROUGE-L-ja).

        Tried: ``丸=V; 答えはVです。`` for every answer V, and the same with the question's own
        shape word in front (the form that games ROUGE-L-ja). Chosen on the very questions it is
        scored on, so the baseline is as strong as a blind reply can be made.
        """
        from evovlm.eval.metrics import score_rouge_ja
        from evovlm.zoo.scenes import ANSWERS, COUNTS, SCENE_COLOURS

        samples = self.bench(bench_name).samples
        values = [c[1] for c in SCENE_COLOURS] + list(COUNTS)
        assert len(values) == len(ANSWERS)
        candidates = {}
        for value in values:
            candidates[f"丸={value}; 答えは{value}です。"] = [f"丸={value}; 答えは{value}です。"] * len(samples)
            candidates[f"(shape in the question)={value}; 答えは{value}です。"] = [
                f"{s.reference.split('=')[0]}={value}; 答えは{value}です。" for s in samples]
        scored = {}
        for reply, replies in candidates.items():
            summary, _ = score_rouge_ja([s.reference for s in samples], replies, contents=[s.content for s in samples],
                                        n_resamples=1)
            scored[reply] = (summary["content_ja"], summary["rougeL_ja"])
        best = max(scored, key=scored.get)
        return self.score_replies(f"{FIXED_REPLY}: {best}", bench_name, candidates[best], VQA_KEYS)

    def folder(self, kind: str) -> Path:
        """A new folder name in the scratch folder (``merge-0``, ``path-1``, ...)."""
        return self.scratch / f"{kind}-{next(self._numbers)}"

    def merged(self, name: str, recipe: dict) -> Path:
        from evovlm.merge.engine import merge_checkpoints
        from evovlm.merge.recipe import recipe_from_dict

        key = json.dumps(recipe, sort_keys=True, ensure_ascii=False)  # a recipe two tables share is merged once
        if key not in self._merges:
            out = self.folder("merge")
            merge_checkpoints(recipe_from_dict(recipe, name), out, progress=False)
            self._merges[key] = out
        return self._merges[key]


TARGET_KEYS = ("acc", "acc_ja", "acc_pure")  # zoo-mgsm-ja
VQA_KEYS = ("rougeL_ja", "content_ja", "content")  # zoo-vqa-ja


def score_sources_and_baselines(table: TableScorer, zoo: Path, *, own_tasks: bool = True, text: bool = True,
                                vlm: bool = True) -> None:
    """The rows the acceptance table and the evolution table share: sources, uniform merges, oracles
    (``text``: the zoo-mgsm-ja rows; ``vlm``: the zoo-vqa-ja rows)."""
    refs = zoo_refs(zoo)
    layers, output_blocks = zoo_shape(zoo)
    if own_tasks:
        table.log("sources on their own tasks")
        table.score("ja", zoo / "ja", "zoo-ja-qa", ("content_ja",))
        table.score("math", zoo / "math", "zoo-math-en", ("acc",))
        if vlm:
            table.score("vlm", zoo / "vlm", "zoo-vqa-en", ("content",))
    if text:
        table.log("zoo-mgsm-ja: sources, uniform merges, oracle")
        for name in ("base", "ja", "math"):
            table.score(name, zoo / name, "zoo-mgsm-ja", TARGET_KEYS)
        for name, recipe in llm_recipes(refs, layers, output_blocks).items():
            table.score(name, table.merged(name, recipe), "zoo-mgsm-ja", TARGET_KEYS)
    if vlm:
        score_vlm_baselines(table, zoo, refs, layers, output_blocks)


def score_kanji_baselines(table: TableScorer, zoo: Path, refs: dict[str, str], layers: int,
                          output_blocks: int) -> None:
    """zoo-mgsm-ja-kanji: every source, the oracle alone and with the reader's task vector added (a weight
    merge), and the DFS oracle: the reader's blocks between the oracle's block 0 and its block 1."""
    table.log(f"{KANJI}: sources, oracle, oracle with the reader's weights, DFS oracle")
    score_kanji_sources(table, zoo)
    oracle_recipe = llm_recipes(refs, layers, output_blocks)[ORACLE]
    added = {**oracle_recipe, "models": [*oracle_recipe["models"], {"model": refs["reader"], "weight": 1.0}]}
    score_with_reader(table, zoo, ORACLE, table.merged(ORACLE, oracle_recipe), table.merged(READER_ADDED, added),
                      READER_ADDED, DFS_ORACLE)


def score_kanji_sources(table: TableScorer, zoo: Path) -> None:
    for name in ("base", "ja", "math", "reader"):
        table.score(name, zoo / name, KANJI, TARGET_KEYS)


def score_with_reader(table: TableScorer, zoo: Path, row: str, model: Path, added: Path, added_row: str,
                      oracle_row: str) -> None:
    """zoo-mgsm-ja-kanji: ``model`` alone, ``added`` (``model`` plus the reader's task vector, a weight merge)
    and the DFS oracle over ``model``: the reader's blocks between its block 0 and its block 1."""
    from evovlm.zoo.paths import oracle_path, save_dfs_path
    from evovlm.zoo.reader import reading_blocks

    layers, output_blocks = zoo_shape(zoo)
    table.score(row, model, KANJI, TARGET_KEYS)
    table.score(added_row, added, KANJI, TARGET_KEYS)
    path = oracle_path(layers, reading_blocks(layers - output_blocks))
    saved = save_dfs_path(model, zoo / "reader", path, table.folder("path"))
    table.score(oracle_row, saved, KANJI, TARGET_KEYS)


def score_vlm_baselines(table: TableScorer, zoo: Path, refs: dict[str, str], layers: int, output_blocks: int) -> None:
    table.log("zoo-vqa-ja: VLM, blind baselines (JA expert without the image, best fixed reply), oracle")
    table.score("vlm", zoo / "vlm", "zoo-vqa-ja", VQA_KEYS)
    table.score("ja", zoo / "ja", "zoo-vqa-ja", VQA_KEYS, blind=True)
    table.best_fixed_reply("zoo-vqa-ja")
    oracle = table.merged("vlm-oracle", vlm_oracle_recipe(refs, layers, output_blocks))
    table.score(VLM_ORACLE, oracle, "zoo-vqa-ja", VQA_KEYS)
    table.score(VLM_ORACLE + BLANK, oracle, "zoo-vqa-ja", VQA_KEYS, blank=True)


def acceptance_report(zoo: str | Path, *, limit: int | None = None, data_seed: int | None = None,
                      split: str = "test", vlm: bool = True, progress: bool = True,
                      log: Callable[[str], None] = print) -> dict:
    """Measure every row of the acceptance table; returns ``{"rows": [...], "checks": [...]}``.

    ``split``: ``dev`` while designing the zoo, ``test`` once, for the table that is reported.
    ``vlm=False``: the text and kanji rows and criteria only (a zoo built without its VLM).
    """
    zoo = Path(zoo).resolve()
    with tempfile.TemporaryDirectory(prefix="evovlm-zoo-report-") as scratch:
        table = TableScorer(scratch, limit=limit, data_seed=data_seed, split=split, progress=progress, log=log)
        score_sources_and_baselines(table, zoo, vlm=vlm)
        score_kanji_baselines(table, zoo, zoo_refs(zoo), *zoo_shape(zoo))
    return {"zoo": str(zoo), "split": table.split, "data_seed": data_seed, "limit": limit,
            "half": None if vlm else "text", "rows": table.rows, "checks": acceptance_checks(table.rows, vlm=vlm)}


def row_value(rows: list[dict], model: str, bench: str, key: str) -> float:
    return next(row[key] for row in rows if row["model"] == model and row["benchmark"] == bench)


def fixed_reply_row(rows: list[dict], bench: str = "zoo-vqa-ja") -> str:
    return next(row["model"] for row in rows if row["model"].startswith(FIXED_REPLY) and row["benchmark"] == bench)


SIGNIFICANCE = 0.05  # "A beats B": higher, and a one-sided paired sign test below this


def sign_test(rows: list[dict], winner: str, loser: str, bench: str = "zoo-mgsm-ja") -> tuple[int, int, float]:
    """(problems only ``winner`` gets right in Japanese, problems only ``loser`` does, one-sided exact p).

    The exact sign test on the discordant pairs (McNemar's exact test): the chance of at least
    that many wins among them if each were a fair coin. Rows without per-problem results give p = 1.
    """
    first, second = (next(row for row in rows if row["model"] == name and row["benchmark"] == bench)
                     for name in (winner, loser))
    if "correct_ja" not in first or "correct_ja" not in second:
        return 0, 0, 1.0
    pairs = list(zip(first["correct_ja"], second["correct_ja"]))
    wins, losses = pairs.count(("1", "0")), pairs.count(("0", "1"))
    total = wins + losses
    return wins, losses, sum(math.comb(total, k) for k in range(wins, total + 1)) / 2 ** total


def beats(rows: list[dict], model: str, competitors: list[str], bench: str, key: str) -> tuple[bool, str]:
    """``model`` beats every competitor on ``key``: higher, and a sign test with p < SIGNIFICANCE against each.
    The text names the closest competitor's test."""
    tests = {name: sign_test(rows, model, name, bench) for name in competitors}
    value = row_value(rows, model, bench, key)
    closest = max(tests, key=lambda name: tests[name][2])
    wins, losses, p = tests[closest]
    best = max(row_value(rows, name, bench, key) for name in competitors)
    return (value > best and p < SIGNIFICANCE,
            f"sign test against {closest}: {wins} problems won, {losses} lost, p = {p:.2g}")


def vlm_baseline_checks(rows: list[dict], model: str, check: Callable[[str, bool, str], None]) -> None:
    """The VLM claims shared by the acceptance table (``model`` = the oracle) and the evolution table."""
    from evovlm.zoo.scenes import ANSWERS

    vqa = "zoo-vqa-ja"
    fixed = fixed_reply_row(rows)
    ceiling = 100 / len(ANSWERS)
    fixed_content, fixed_ja = row_value(rows, fixed, vqa, "content"), row_value(rows, fixed, vqa, "content_ja")
    check(f"no fixed reply names the right value on more than 1/k = {ceiling:.0f}% of {vqa}",
          fixed_content <= ceiling, f"{fixed} : content {fixed_content}, content_ja {fixed_ja}")
    value = row_value(rows, model, vqa, "content_ja")
    blind = {"ja": "JA expert (no image)", fixed: "best fixed reply", model + BLANK: "itself on a blank image"}
    gaps = {name: value - row_value(rows, name, vqa, "content_ja") for name in blind}
    check(f"{model} >= 40 points of content_ja above every blind baseline", min(gaps.values()) >= 40,
          f"{model} {value}; " + ", ".join(f"{label} {row_value(rows, name, vqa, 'content_ja')}"
                                           for name, label in blind.items()))
    passed, test = beats(rows, model, ["vlm", *blind], vqa, "content_ja")
    check(f"{model} beats the VLM and every blind baseline on {vqa} content_ja", passed,
          f"{model} {value}, vlm {row_value(rows, 'vlm', vqa, 'content_ja')}; {test}")


def acceptance_checks(rows: list[dict], *, vlm: bool = True) -> list[dict]:
    """The issue's criteria, each with the numbers it was decided on (``vlm=False``: the text ones only)."""
    mgsm = "zoo-mgsm-ja"
    checks = []

    def check(text: str, passed: bool, numbers: str) -> None:
        checks.append({"criterion": text, "passed": bool(passed), "numbers": numbers})

    own = {"ja": ("zoo-ja-qa", "content_ja"), "math": ("zoo-math-en", "acc")}
    if vlm:
        own["vlm"] = ("zoo-vqa-en", "content")
    own_scores = {name: row_value(rows, name, *spec) for name, spec in own.items()}
    check("each expert >= 90% on its own task", min(own_scores.values()) >= 90,
          ", ".join(f"{k} {v}" for k, v in own_scores.items()))
    sources = {name: row_value(rows, name, mgsm, "acc_ja") for name in ("base", "ja", "math")}
    check("no source reaches 10% acc_ja", max(sources.values()) < 10, ", ".join(f"{k} {v}" for k, v in sources.items()))
    best_source = max(sources.values())
    best_pure = max(row_value(rows, name, mgsm, "acc_pure") for name in sources)
    oracle_ja, oracle_pure = row_value(rows, ORACLE, mgsm, "acc_ja"), row_value(rows, ORACLE, mgsm, "acc_pure")
    check("oracle beats every source by >= 30 points of acc_ja", oracle_ja - best_source >= 30,
          f"oracle {oracle_ja}, best source {best_source}")
    check("oracle also wins on acc_pure", oracle_pure > best_pure, f"oracle {oracle_pure}, best source {best_pure}")
    uniform = {name: row_value(rows, name, mgsm, "acc_ja")
               for name in ("task arithmetic, λ=1", "TIES, density 0.5", "DARE-TIES, density 0.5")}
    check("uniform merges clearly below the oracle (>= 10 points)", max(uniform.values()) <= oracle_ja - 10,
          ", ".join(f"{k} {v}" for k, v in uniform.items()) + f"; oracle {oracle_ja}")
    competitors = ["base", "ja", "math", "reader", ORACLE, READER_ADDED]
    passed, test = beats(rows, DFS_ORACLE, competitors, KANJI, "acc_ja")
    check(f"DFS oracle beats every source, the oracle and its weight merge with the reader on {KANJI} "
          f"(a path exists that no weight average gives)", passed,
          f"DFS oracle {row_value(rows, DFS_ORACLE, KANJI, 'acc_ja')}; "
          + ", ".join(f"{name} {row_value(rows, name, KANJI, 'acc_ja')}" for name in competitors) + f"; {test}")
    if not vlm:
        return checks
    oracle_vqa = row_value(rows, VLM_ORACLE, "zoo-vqa-ja", "content_ja")
    check("VLM oracle >= 70% content_ja on zoo-vqa-ja (a good merge exists)", oracle_vqa >= 70,
          f"{VLM_ORACLE} {oracle_vqa}")
    vlm_baseline_checks(rows, VLM_ORACLE, check)
    return checks


def format_report(report: dict) -> str:
    """Markdown: one table of measurements, one of criteria."""
    lines = ["| model | benchmark | n | metrics |", "|---|---|---|---|"]
    for row in report["rows"]:
        metrics = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("model", "benchmark", "n", "correct_ja"))
        lines.append(f"| {row['model']} | {row['benchmark']} | {row['n']} | {metrics} |")
    lines += ["", "| criterion | result | numbers |", "|---|---|---|"]
    for item in report["checks"]:
        lines.append(f"| {item['criterion']} | {'pass' if item['passed'] else 'FAIL'} | {item['numbers']} |")
    return "\n".join(lines)
