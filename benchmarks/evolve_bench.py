"""Evolution benchmark: candidates per minute for PS and DFS searches, and where the time goes.

    python benchmarks/evolve_bench.py                                   # examples/tiny, local MGSM-JA
    python benchmarks/evolve_bench.py --models zoo:base,zoo:ja,zoo:math \\
        --bench zoo-mgsm-ja --split fitness --limit 100                 # the zoo, once it exists
    python benchmarks/evolve_bench.py --config my-ps.yaml --config my-dfs.yaml --candidates 100
    python benchmarks/evolve_bench.py ... --subset irt:20 --subset random:20:mean:0  # + reduced-fitness PS rows

Runs real searches (``run_evolution``: in-memory merges or DFS paths, then the evaluator on the
fitness benchmark) for about ``--candidates`` candidates each, in a temporary run directory, and
reads the per-candidate timings from history.jsonl: ``merge`` is making the candidate (re-merge
into the resident model / setting the DFS path) and ``eval`` is generating and scoring, as shares
of the candidates' own time; ``busy`` is that time over wall time x workers (the rest is start-up,
model loading, the optimiser and the history). The target: a 100-candidate PS run in <= 10 minutes.

``--subset METHOD:SIZE[:ESTIMATOR[:RERANK]]`` adds a PS row per value whose fitness is reduced
(:mod:`evovlm.evolve.subset`): each candidate answers SIZE items. Its wall time includes the
calibration before the search and the re-ranking after it (``calib s``: the sources, the start and 8
random merges, then the 5 best, each on the whole fitness set), and ``problems`` counts every problem
any candidate answered, those too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_S = 600.0  # 100 PS candidates


def default_configs(args: argparse.Namespace) -> list[tuple[str, dict]]:
    base, *sources = args.models.split(",")
    if len(sources) < 2:
        raise SystemExit("--models needs BASE,SOURCE1,SOURCE2[,...] (DFS uses the first two sources as A and B)")
    fitness = {"benchmark": args.bench, "split": args.split, "limit": args.limit, "data_seed": args.data_seed,
               "metric": args.metric,
               "generation": {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}}
    fitness = {k: v for k, v in fitness.items() if v is not None}
    common = {"seed": 0, "fitness": fitness,
              "runtime": {"save_model": False, "plot": False, "progress": not args.quiet,
                          "workers": args.workers or "auto"}}
    ps = {**common, "mode": "ps",
          "ps": {"method": "dare_ties", "base_model": base, "models": sources, "group_size": "model"},
          "budget": {"trials": args.candidates}}
    dfs = {**common, "mode": "dfs", "dfs": {"model_a": sources[0], "model_b": sources[1], "repeats": 3},
           "budget": {"trials": args.dfs_candidates}}
    reduced = []
    for choice in args.subset or []:
        method, size, *rest = choice.split(":")
        subset = {"method": method, "size": int(size), "estimator": rest[0] if rest else "irt",
                  "rerank": int(rest[1]) if len(rest) > 1 else 5}
        reduced.append((f"PS {choice}", {**ps, "fitness": {**fitness, "subset": subset}}))
    return [("PS", ps), *reduced, ("DFS", dfs)]


def timed_run(label: str, config: dict, work: Path) -> dict:
    from evovlm.evolve.history import History
    from evovlm.evolve.runs import run_evolution
    from evovlm.evolve.subset import SUBSET_NAME, SubsetPlan

    run = work / label.lower().replace(" ", "-").replace(":", "-")
    started = time.perf_counter()
    summary = run_evolution(config, run)
    wall = time.perf_counter() - started
    history = History(run / "history.jsonl")
    records, reranks = history.of_type("candidate"), history.of_type("rerank")
    calibration = SubsetPlan.read(run / SUBSET_NAME).calibration if (run / SUBSET_NAME).exists() else []
    items = [(r["score"] or {}).get("n", 0) for r in records]
    merge = sum(r["merge_s"] for r in records)
    evaluation = sum(r["eval_s"] for r in records)
    busy = sum(r["wall_s"] for r in records)  # summed over workers
    workers = len({r["worker"] for r in records})
    stage = next(iter(summary["stages"].values()))
    return {"search": label, "candidates": len(records), "population": stage["population"], "workers": workers,
            "failed": stage["failed"], "wall_s": wall, "per_min": 60 * len(records) / wall,
            "merge_pct": 100 * merge / busy, "eval_pct": 100 * evaluation / busy,
            "busy_pct": 100 * busy / (wall * workers), "s_per_cand": wall / max(1, len(records)),
            "merge_ms": 1000 * merge / max(1, len(records)), "best": summary["best"]["fitness"],
            "calibration_s": sum(c["wall_s"] for c in calibration) + sum(r["wall_s"] for r in reranks),
            "problems": sum(items) + sum(len(c["right"]) for c in calibration)
            + sum((r["score"] or {}).get("n", 0) for r in reranks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="evolve config YAML to time (repeatable); "
                        "replaces the built-in PS and DFS configs")
    tiny = ",".join(str(ROOT / "examples" / "tiny" / name) for name in ("base", "ja", "math"))
    parser.add_argument("--models", default=tiny, help="BASE,SOURCE1,SOURCE2: PS merges the sources over BASE, "
                        "DFS uses SOURCE1 (A) and SOURCE2 (B)")
    parser.add_argument("--bench", default="mgsm-ja", help="fitness benchmark (default mgsm-ja)")
    parser.add_argument("--split", help="fitness split (zoo: fitness)")
    parser.add_argument("--limit", type=int, default=16, help="fitness samples per candidate (default 16)")
    parser.add_argument("--data-seed", type=int)
    parser.add_argument("--metric", help="summary key used as fitness (default: acc_ja / rougeL_ja)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=100, help="PS candidates (default 100)")
    parser.add_argument("--dfs-candidates", type=int, default=50, help="DFS candidates (default 50)")
    parser.add_argument("--subset", action="append", metavar="METHOD:SIZE[:ESTIMATOR[:RERANK]]",
                        help="add a PS row with reduced fitness (irt|entropy|stratified|random, items, irt|mean, "
                             "candidates re-ranked on the whole set, default 5)")
    parser.add_argument("--workers", type=int, help="evaluation processes (default: one per GPU, else 1)")
    parser.add_argument("--work-dir", type=Path, help="keep the run directories here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    import torch
    import yaml

    if args.config:
        configs = []
        for path in args.config:
            data = yaml.safe_load(Path(path).read_text())
            data["budget"] = {"trials": args.candidates}
            data.setdefault("runtime", {}).update(save_model=False, plot=False, progress=not args.quiet)
            data.pop("test", None)
            configs.append((Path(path).stem, data))
    else:
        configs = default_configs(args)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="evovlm-evolve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [timed_run(label, config, work) for label, config in configs]

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"EvoVLM evolve benchmark - {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if not args.config:
        print(f"models {args.models}; fitness {args.bench} (split {args.split or 'default'}, limit {args.limit}, "
              f"max_new_tokens {args.max_new_tokens}, batch {args.batch_size})")
    print("merge % / eval %: shares of the candidates' own time; busy %: that time over wall x workers "
          "(the rest: start-up, model loading, optimiser, history)")
    header = (f"{'search':<22}{'cands':>6}{'pop':>5}{'workers':>8}{'wall s':>9}{'calib s':>9}{'problems':>10}"
              f"{'cand/min':>10}{'s/cand':>8}{'merge ms':>10}{'merge %':>9}{'eval %':>8}{'busy %':>8}{'best':>8}")
    print(header)
    for row in rows:
        print(f"{row['search']:<22}{row['candidates']:>6}{row['population']:>5}{row['workers']:>8}"
              f"{row['wall_s']:>9.1f}{row['calibration_s']:>9.1f}{row['problems']:>10}"
              f"{row['per_min']:>10.1f}{row['s_per_cand']:>8.2f}{row['merge_ms']:>10.1f}"
              f"{row['merge_pct']:>9.1f}{row['eval_pct']:>8.1f}{row['busy_pct']:>8.1f}{row['best']:>8.3g}")
    ps = next((r for r in rows if r["search"] == "PS"), None)
    if ps:
        projected = 100 * ps["s_per_cand"]
        verdict = "met" if projected <= TARGET_S else "NOT met"
        print(f"100-candidate PS run: {projected:.0f} s projected (target {TARGET_S:.0f} s): {verdict}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
