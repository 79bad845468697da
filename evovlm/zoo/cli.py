"""``evovlm zoo build`` trains the miniature zoo (see :mod:`evovlm.zoo.build`); ``evovlm zoo report`` measures it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evovlm.errors import EvoVLMError
from evovlm.zoo import MODELS

DEFAULT_OUT = Path(__file__).resolve().parent / "models"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="train base, JA expert, MATH expert and VLM (deterministic for a seed)")
    build.add_argument("--seed", type=int, default=0, help="build seed (default 0: the committed zoo)")
    build.add_argument("--quick", action="store_true", help="a small zoo in about a minute (for tests)")
    build.add_argument("--out", type=Path, default=None,
                       help=f"output folder (default: {DEFAULT_OUT}, where zoo:NAME resolves)")
    build.add_argument("--overwrite", action="store_true", help="replace models already in the output folder")
    build.add_argument("--reuse-base", action="store_true",
                       help="keep the base already in the output folder (built with the same seed and pretraining "
                            "settings) and retrain only the experts and the VLM")
    build.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    report = sub.add_parser("report", help="measure the acceptance table: sources, uniform merges, oracles")
    report.add_argument("--zoo", type=Path, default=None, help=f"zoo folder (default: {DEFAULT_OUT})")
    report.add_argument("--limit", type=int, default=None, help="score only the first N problems of each benchmark")
    report.add_argument("--data-seed", type=int, default=None,
                        help="score on a fresh draw instead of the test splits")
    report.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    report.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.zoo_command == "report":
        return _report(args)
    from evovlm.zoo.build import ZooSettings, build_zoo

    out = args.out or DEFAULT_OUT
    names = MODELS[1:] if args.reuse_base else MODELS
    existing = [name for name in names if (out / name).exists()]
    if existing and not args.overwrite:
        raise EvoVLMError(f"{out} already holds {', '.join(existing)}; pass --overwrite to rebuild them")
    if args.threads < 0:
        raise EvoVLMError(f"--threads must be >= 0, got {args.threads}")
    settings = ZooSettings.quick() if args.quick else ZooSettings()
    if args.threads:
        from dataclasses import replace

        settings = replace(settings, threads=args.threads)
    paths = build_zoo(out, seed=args.seed, settings=settings, progress=not args.quiet, reuse_base=args.reuse_base)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from evovlm.io.atomic import write_atomic
    from evovlm.zoo.report import acceptance_report, format_report

    if args.limit is not None and args.limit < 1:
        raise EvoVLMError(f"--limit must be a positive number of problems, got {args.limit}")
    zoo = args.zoo or DEFAULT_OUT
    missing = [name for name in MODELS if not (zoo / name / "config.json").is_file()]
    if missing:
        raise EvoVLMError(f"{zoo} lacks {', '.join(missing)}: build the zoo first (`evovlm zoo build`)")
    report = acceptance_report(zoo, limit=args.limit, data_seed=args.data_seed, progress=not args.quiet)
    print(format_report(report))
    if args.out:
        write_atomic(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0 if all(item["passed"] for item in report["checks"]) else 1
