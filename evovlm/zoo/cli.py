"""``evovlm zoo build`` trains the miniature zoo (:mod:`evovlm.zoo.build`), ``evovlm zoo report`` measures it,
``evovlm zoo evolve`` evolves merges on it (:mod:`evovlm.zoo.evolution`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection
from pathlib import Path

from evovlm.argtypes import count
from evovlm.errors import EvoVLMError
from evovlm.zoo import MODELS, MODELS_DIR

DEFAULT_OUT = MODELS_DIR


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="train base, JA expert, MATH expert, reader and VLM (deterministic for a "
                                         "seed on one machine)")
    build.add_argument("--seed", type=count(0), default=0, help="build seed (default 0: the committed zoo)")
    build.add_argument("--quick", action="store_true", help="a small zoo in about a minute (for tests)")
    build.add_argument("--out", type=Path, default=None,
                       help=f"output folder (default: {DEFAULT_OUT}, where zoo:NAME resolves)")
    build.add_argument("--overwrite", action="store_true", help="replace models already in the output folder")
    build.add_argument("--reuse-base", action="store_true",
                       help="keep the base already in the output folder (built with the same seed and pretraining "
                            "settings) and retrain only the experts and the VLM")
    build.add_argument("--only", nargs="+", choices=MODELS[1:], metavar="NAME",
                       help="retrain only these of ja, math, reader, vlm (reusing the base, as --reuse-base); "
                            "each model trains from the base alone, so the result is the same as a full build")
    build.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                       help="change a build setting (repeatable), e.g. --set ja_steps=1600: how the zoo "
                            "experiments built their variants; build.json records every setting")
    build.add_argument("--threads", type=count(0), default=0, help="torch CPU threads (default: torch's choice)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    evolve = sub.add_parser("evolve", help="PS, DFS and PS+DFS on the zoo, and the VLM merge, as the paper's Table 1")
    evolve.add_argument("--zoo", type=Path, default=None, help=f"zoo folder (default: {DEFAULT_OUT})")
    evolve.add_argument("--out", type=Path, required=True,
                        help="folder for the three evolution runs (ps-dfs, dfs, vlm) and table.json")
    evolve.add_argument("--seed", type=count(0), default=0, help="CMA-ES seed of every run (default 0)")
    evolve.add_argument("--resume", action="store_true",
                        help="finish the runs already started in --out instead of starting them again")
    budgets = evolve.add_mutually_exclusive_group()
    budgets.add_argument("--quick", action="store_const", const="quick", dest="budget", default="default",
                         help="a short budget (40 DFS and 30 PS+DFS generations, 100 VLM candidates): the text "
                              "half in about 8 minutes on 2 cores")
    budgets.add_argument("--full", action="store_const", const="full", dest="budget",
                         help="the published settings: every fitness problem for every candidate (19 minutes on 2 "
                              "cores before run 61's PS+DFS stage, which adds about 27 on one core since run 64)")
    evolve.add_argument("--ps-trials", type=count(1), default=None, help="PS budget in candidates (default 120)")
    evolve.add_argument("--dfs-generations", type=count(1), default=None,
                        help="DFS budget in generations (default 100)")
    evolve.add_argument("--dfs-workers", type=count(1), default=None,
                        help="processes scoring the DFS, PS and PS+DFS candidates (default: the CPU count, at most 4)")
    evolve.add_argument("--fitness-subset", metavar="METHOD:SIZE", default=None,
                        help="reduced fitness for the PS, PS+DFS and VLM searches: each candidate answers SIZE "
                             "problems chosen by METHOD (irt, stratified, entropy, random), the rest estimated "
                             "(default irt:20; 'none': every problem)")
    evolve.add_argument("--limit", type=count(1), default=None,
                        help="score only the first N test problems in the table (searches use the fitness split)")
    evolve.add_argument("--data-seed", type=count(0), default=None, help="score the table on a fresh draw")
    evolve.add_argument("--split", choices=("dev", "test"), default=None,
                        help="score the table on this split (default test; dev while designing)")
    evolve.add_argument("--half", choices=("text", "vlm"), default=None,
                        help="only the text runs (ps-dfs, dfs) or only the VLM runs (vlm, vlm-rouge) and their rows")
    evolve.add_argument("--install", action="store_true",
                        help="copy the evolved PS, DFS, PS+DFS and VLM models into the zoo folder as evollm, "
                             "evodfs, evohybrid and evovlm")
    evolve.add_argument("--quiet", action="store_true", help="no progress bars")
    report = sub.add_parser("report", help="measure the acceptance table: sources, uniform merges, oracles")
    report.add_argument("--zoo", type=Path, default=None, help=f"zoo folder (default: {DEFAULT_OUT})")
    report.add_argument("--limit", type=count(1), default=None,
                        help="score only the first N problems of each benchmark")
    report.add_argument("--split", choices=("dev", "test"), default=None,
                        help="dev while designing a zoo; test (the default) for the reported table")
    report.add_argument("--data-seed", type=count(0), default=None,
                        help="score on a fresh draw instead of the test splits")
    report.add_argument("--half", choices=("text",), default=None,
                        help="only the text and kanji rows and criteria: a zoo built without its VLM")
    report.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    report.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    return {"build": _build, "evolve": _evolve, "report": _report}[args.zoo_command](args)


def _build(args: argparse.Namespace) -> int:
    from evovlm.zoo.build import ZooSettings, build_zoo

    out = args.out or DEFAULT_OUT
    names = tuple(args.only) if args.only else MODELS[1:] if args.reuse_base else MODELS
    existing = [name for name in names if (out / name).exists()]
    if existing and not args.overwrite:
        raise EvoVLMError(f"{out} already holds {', '.join(existing)}; pass --overwrite to rebuild them")
    settings = (ZooSettings.quick() if args.quick else ZooSettings()).with_changes(args.settings)
    if args.threads:
        from dataclasses import replace

        settings = replace(settings, threads=args.threads)
    paths = build_zoo(out, seed=args.seed, settings=settings, progress=not args.quiet, models=names)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


TEXT_MODELS = ("base", "ja", "math", "reader")  # what the text half (evolution and acceptance rows) needs


def _built_zoo(zoo: Path | None, needed: Collection[str] = MODELS) -> Path:
    zoo = zoo or DEFAULT_OUT
    missing = [name for name in MODELS if name in needed and not (zoo / name / "config.json").is_file()]
    if missing:
        hint = "" if "base" in missing else f"; `evovlm zoo build --out {zoo} --only {' '.join(missing)}` adds them"
        raise EvoVLMError(f"{zoo} lacks {', '.join(missing)}: build the zoo first (`evovlm zoo build`{hint})")
    return zoo


def _evolve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from evovlm.zoo.evolution import (
        BUDGETS,
        RUN_NAMES,
        TEXT_RUNS,
        VLM_RUNS,
        claims_hold,
        format_table,
        install_models,
        zoo_evolution,
    )

    needed = {"text": TEXT_MODELS, "vlm": ("base", "ja", "vlm")}.get(args.half, MODELS)
    zoo = _built_zoo(args.zoo, needed)
    budget = BUDGETS[args.budget]
    if args.ps_trials:
        budget = replace(budget, ps_trials=args.ps_trials)
    if args.dfs_generations:
        budget = replace(budget, dfs_generations=args.dfs_generations)
    if args.dfs_workers:
        budget = replace(budget, dfs_workers=args.dfs_workers)
    if args.fitness_subset == "none":
        budget = replace(budget, fitness_subset=None)
    elif args.fitness_subset:
        from evovlm.evolve.subset import METHODS

        method, _, size = args.fitness_subset.partition(":")
        if method not in METHODS or not size.isdigit() or int(size) < 1:
            raise EvoVLMError(f"--fitness-subset {args.fitness_subset!r}: use METHOD:SIZE with METHOD one of "
                              f"{', '.join(METHODS)}, e.g. irt:20, or none")
        budget = replace(budget, fitness_subset={"method": method, "size": int(size)})
    if args.data_seed is not None and args.split is not None:
        raise EvoVLMError("--data-seed draws a fresh set; it cannot be combined with --split")
    runs = {"text": TEXT_RUNS, "vlm": VLM_RUNS, None: RUN_NAMES}[args.half]
    result = zoo_evolution(zoo, args.out, seed=args.seed, budget=budget, resume=args.resume,
                           data_seed=args.data_seed, limit=args.limit, split=args.split or "test", runs=runs,
                           progress=not args.quiet)
    print(format_table(result))
    print(f"runs and table.json: {args.out}")
    if args.install:
        for name, path in install_models(args.out, zoo, runs).items():
            print(f"zoo:{name}: {path}")
    return 0 if claims_hold(result) else 1


def _report(args: argparse.Namespace) -> int:
    from evovlm.io.atomic import ensure_writable_file, write_atomic
    from evovlm.zoo.report import acceptance_report, format_report

    text_only = args.half == "text"
    zoo = _built_zoo(args.zoo, TEXT_MODELS)
    if not text_only and not (zoo / "vlm" / "config.json").is_file():  # a text table can still be measured
        raise EvoVLMError(f"{zoo} lacks vlm: `--half text` measures the text and kanji rows without it "
                          f"(or build the VLM first: `evovlm zoo build`)")
    if args.data_seed is not None and args.split is not None:
        raise EvoVLMError("--data-seed draws a fresh set; it cannot be combined with --split")
    if args.out:
        ensure_writable_file(args.out, "report.json")  # before the report is measured
    report = acceptance_report(zoo, limit=args.limit, data_seed=args.data_seed, split=args.split or "test",
                               vlm=not text_only, progress=not args.quiet)
    print(format_report(report))
    if args.out:
        write_atomic(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0 if all(item["passed"] for item in report["checks"]) else 1
