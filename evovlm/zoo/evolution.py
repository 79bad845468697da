"""``evovlm zoo evolve``: EvoLLM-JP and EvoVLM-JP in miniature, scored like the paper's Table 1.

Three evolution runs on a zoo folder, each an ordinary ``evovlm evolve`` run directory:

- ``ps-dfs`` (mode ps+dfs): PS first (task arithmetic of the JA and MATH experts, one weight per model and
  per pair of decoder blocks), then DFS with the PS result as model A and MATH as model B.
  Its ``ps`` stage is the table's PS row.
- ``dfs``: a layer path through the JA expert (A) and the MATH expert (B), with the scale matrix W,
  for the paper's 100 generations. Its fitness is the log-likelihood of the reference replies
  (:mod:`evovlm.zoo.fitness`): accuracy on 100 problems is flat over nearly all paths.
- ``vlm``: PS merge of the JA expert into the zoo VLM's language tower (vision tower and
  projector kept), fitness ROUGE-L-ja on zoo-vqa-ja.

Every run optimises on the benchmarks' ``fitness`` split; the table scores every model on the
``test`` split (or a fresh draw), which the searches never saw.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evovlm.errors import EvoVLMError
from evovlm.io.atomic import write_atomic
from evovlm.zoo import MODELS, MODELS_DIR, PREFIX
from evovlm.zoo.report import (
    ORACLE,
    TARGET_KEYS,
    VLM_ORACLE,
    VQA_KEYS,
    TableScorer,
    row_value,
    score_sources_and_baselines,
    zoo_refs,
)

RUN_NAMES = ("ps-dfs", "dfs", "vlm")
PS_ROW, DFS_ROW, HYBRID_ROW, VLM_ROW = "evolved PS", "evolved DFS", "evolved PS+DFS", "evolved VLM (PS)"


@dataclass
class EvolveBudget:
    """CPU defaults: PS and the VLM take a few minutes on one core, DFS 35-40 minutes on two."""

    ps_trials: int = 120
    dfs_generations: int = 100  # the paper's count; population 19 (4 + 3 ln 180 genes)
    dfs_workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))  # CPU processes
    hybrid_generations: int = 4
    vlm_trials: int = 60
    repeats: int = 3  # DFS: r, T = M * r slots
    fitness_limit: int | None = None  # problems of the fitness split (default: all 100)


def run_configs(zoo: Path, *, seed: int, budget: EvolveBudget) -> dict[str, dict]:
    """Run folder name -> ``evovlm evolve`` config (a YAML dict) over the models of ``zoo``."""
    refs = zoo_refs(zoo)
    mgsm = {"benchmark": "zoo-mgsm-ja", "split": "fitness", "limit": budget.fitness_limit, "metric": "acc_ja"}
    mgsm_test = {"benchmark": "zoo-mgsm-ja", "split": "test", "metric": "acc_ja"}
    ps = {"method": "task_arithmetic", "base_model": refs["base"], "models": [refs["ja"], refs["math"]],
          "group_size": 2, "budget": {"trials": budget.ps_trials}}
    # W in [0.5, 1.5]: with [0, 2] the early random scales (about +-0.33) buried the first good flips (run 28)
    dfs = {"repeats": budget.repeats, "scales": "matrix", "scale_range": [0.5, 1.5], "init": "a"}
    return {
        "ps-dfs": {"mode": "ps+dfs", "seed": seed, "ps": ps,
                   "dfs": {"model_a": "ps", "model_b": refs["math"], **dfs,
                           "budget": {"generations": budget.hybrid_generations}},
                   "fitness": mgsm, "test": mgsm_test},
        "dfs": {"mode": "dfs", "seed": seed, "dfs": {"model_a": refs["ja"], "model_b": refs["math"], **dfs},
                "budget": {"generations": budget.dfs_generations},
                "fitness": {"callable": "evovlm.zoo.fitness:mgsm_ja_reply_logprob"}, "test": mgsm_test,
                "runtime": {"workers": budget.dfs_workers}},
        "vlm": {"mode": "ps", "seed": seed,
                "ps": {"method": "task_arithmetic", "base_model": refs["base"], "target": refs["vlm"],
                       "models": [refs["vlm"], refs["ja"]], "group_size": 2},
                "budget": {"trials": budget.vlm_trials},
                "fitness": {"benchmark": "zoo-vqa-ja", "split": "fitness", "limit": budget.fitness_limit,
                            "metric": "rougeL_ja"},
                "test": {"benchmark": "zoo-vqa-ja", "split": "test", "metric": "rougeL_ja"}},
    }


def evolved_models(out_dir: Path) -> dict[str, Path]:
    """Table row -> best model directory of each finished run in ``out_dir``."""
    return {PS_ROW: out_dir / "ps-dfs" / "ps" / "model", DFS_ROW: out_dir / "dfs" / "model",
            HYBRID_ROW: out_dir / "ps-dfs" / "dfs" / "model", VLM_ROW: out_dir / "vlm" / "model"}


def zoo_evolution(zoo: str | Path, out_dir: str | Path, *, seed: int = 0, budget: EvolveBudget | None = None,
                  resume: bool = False, data_seed: int | None = None, limit: int | None = None,
                  progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the three runs in ``out_dir`` (``resume`` finishes interrupted ones; finished ones are kept),
    then score the table on the test split; returns it and writes it to ``out_dir/table.json``."""
    from evovlm.evolve.config import load_config
    from evovlm.evolve.runs import CONFIG_NAME, run_evolution

    zoo, out_dir = Path(zoo).resolve(), Path(out_dir)
    budget = budget or EvolveBudget()
    started_runs = [name for name in RUN_NAMES if (out_dir / name).exists()]
    if started_runs and not resume:
        raise EvoVLMError(f"{out_dir} already holds the run(s) {', '.join(started_runs)}; pass --resume to finish "
                          f"them (finished runs are kept and re-scored) or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    wall: dict[str, float] = {}
    for name, config in run_configs(zoo, seed=seed, budget=budget).items():
        run_dir = out_dir / name
        again = (run_dir / CONFIG_NAME).is_file()
        started_with = load_config(run_dir / CONFIG_NAME).seed if again else seed
        if started_with != seed:
            raise EvoVLMError(f"{run_dir} was started with seed {started_with}, not {seed}: use the same --seed "
                              f"or another --out")
        if (run_dir / "summary.json").is_file():
            log(f"{name}: finished earlier in {run_dir}")
            continue
        log(f"{name}: evolving in {run_dir}")
        started = time.perf_counter()
        run_evolution(None if again else config, run_dir, resume=again, overwrite=not again, progress=progress)
        wall[name] = round(time.perf_counter() - started, 1)
    with tempfile.TemporaryDirectory(prefix="evovlm-zoo-evolve-") as scratch:
        table = TableScorer(scratch, limit=limit, data_seed=data_seed, progress=progress, log=log)
        score_sources_and_baselines(table, zoo, own_tasks=False)
        models = evolved_models(out_dir)
        log("evolved models")
        for row in (PS_ROW, DFS_ROW, HYBRID_ROW):
            table.score(row, models[row], "zoo-mgsm-ja", TARGET_KEYS)
        table.score(VLM_ROW, models[VLM_ROW], "zoo-vqa-ja", VQA_KEYS)
    result = {"zoo": str(zoo), "seed": seed, "budget": asdict(budget), "split": table.split, "data_seed": data_seed,
              "limit": limit, "evolution_wall_s": wall, "rows": table.rows, "checks": evolution_checks(table.rows)}
    write_atomic(out_dir / "table.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


SIGNIFICANCE = 0.05  # "A beats B" on acc_ja: higher, and a one-sided paired sign test below this


def sign_test(rows: list[dict], winner: str, loser: str, bench: str = "zoo-mgsm-ja") -> tuple[int, int, float]:
    """(problems only ``winner`` solves, problems only ``loser`` solves, one-sided exact p-value).

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


def evolution_checks(rows: list[dict]) -> list[dict]:
    """The evolution issue's claims, each with the numbers it was decided on (test split, acc_ja).

    "Beats" means a higher ``acc_ja`` and a paired sign test against each competitor with p below
    :data:`SIGNIFICANCE`: 6 right answers against 4 out of 500 is not a win.
    """
    mgsm, vqa = "zoo-mgsm-ja", "zoo-vqa-ja"
    checks = []

    def check(text: str, passed: bool, numbers: str) -> None:
        checks.append({"criterion": text, "passed": bool(passed), "numbers": numbers})

    def beats(model: str, competitors: dict[str, float]) -> tuple[bool, str]:
        tests = {name: sign_test(rows, model, name) for name in competitors}
        value = row_value(rows, model, mgsm, "acc_ja")
        closest = max(tests, key=lambda name: tests[name][2])
        wins, losses, p = tests[closest]
        return (value > max(competitors.values()) and p < SIGNIFICANCE,
                f"sign test against {closest}: {wins} problems won, {losses} lost, p = {p:.2g}")

    sources = {name: row_value(rows, name, mgsm, "acc_ja") for name in ("base", "ja", "math")}
    uniform = {name: row_value(rows, name, mgsm, "acc_ja")
               for name in ("task arithmetic, λ=1", "TIES, density 0.5", "DARE-TIES, density 0.5")}
    best_source, oracle = max(sources.values()), row_value(rows, ORACLE, mgsm, "acc_ja")
    ps, dfs, hybrid = (row_value(rows, row, mgsm, "acc_ja") for row in (PS_ROW, DFS_ROW, HYBRID_ROW))
    passed, test = beats(PS_ROW, {**sources, **uniform})
    check("PS beats every source and every uniform merge", passed,
          f"PS {ps}; best source {best_source}; best uniform {max(uniform.values())}; {test}")
    gain = oracle - best_source
    recovered = (ps - best_source) / gain if gain > 0 else float("nan")
    check("PS recovers >= 80% of the oracle's gain over the best source", gain > 0 and recovered >= 0.8,
          f"PS {ps}, oracle {oracle}, best source {best_source}: {100 * recovered:.0f}%")
    passed, test = beats(DFS_ROW, sources)
    check("DFS beats every source", passed, f"DFS {dfs}; best source {best_source}; {test}")
    check("PS+DFS at least as good as PS", hybrid >= ps, f"PS+DFS {hybrid}; PS {ps}")
    for key in ("rougeL_ja", "content_ja"):
        values = {name: row_value(rows, name, vqa, key) for name in ("vlm", VLM_ROW, VLM_ORACLE)}
        check(f"evolved VLM beats the source VLM on {vqa} {key}", values[VLM_ROW] > values["vlm"],
              ", ".join(f"{k} {v}" for k, v in values.items()))
    return checks


def format_table(result: dict) -> str:
    """Markdown in the shape of the paper's Table 1, then the VLM rows, then the claims."""
    lines = ["| model | zoo-mgsm-ja acc_ja | acc_ja (pure) | acc (any language) |", "|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['acc_ja']} | {row['acc_pure']} | {row['acc']} |"
              for row in result["rows"] if row["benchmark"] == "zoo-mgsm-ja"]
    lines += ["", "| model | zoo-vqa-ja ROUGE-L-ja | content_ja | content (any language) |", "|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['rougeL_ja']} | {row['content_ja']} | {row['content']} |"
              for row in result["rows"] if row["benchmark"] == "zoo-vqa-ja"]
    lines += ["", "| claim | result | numbers |", "|---|---|---|"]
    lines += [f"| {item['criterion']} | {'pass' if item['passed'] else 'FAIL'} | {item['numbers']} |"
              for item in result["checks"]]
    return "\n".join(lines)


INSTALLED = {"evollm": PS_ROW, "evovlm": VLM_ROW}  # zoo:NAME <- row (EvoLLM-JP-v1-7B is a PS merge)


def install_models(out_dir: str | Path, zoo: str | Path) -> dict[str, Path]:
    """Copy the evolved PS and VLM models into ``zoo`` as ``evollm`` and ``evovlm`` (replacing them)."""
    models, zoo = evolved_models(Path(out_dir)), Path(zoo)
    installed = {}
    for name, row in INSTALLED.items():
        source, target = models[row], zoo / name
        if not (source / "config.json").is_file():
            raise EvoVLMError(f"{source} holds no model: run `evovlm zoo evolve` to the end first")
        partial = zoo / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        if zoo.resolve() == MODELS_DIR:  # the embedded zoo: the card and recipe name zoo:NAME, not this machine's paths
            for text in (partial / "README.md", partial / "evovlm_recipe.yaml"):
                if text.is_file():
                    content = text.read_text(encoding="utf-8")
                    for model in MODELS:
                        content = content.replace(str(MODELS_DIR / model), f"{PREFIX}{model}")
                    text.write_text(content, encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
        installed[name] = target
    return installed
