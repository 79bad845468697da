"""``evovlm zoo build``: train the miniature zoo (see :mod:`evovlm.zoo.build`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from evovlm.errors import EvoVLMError

DEFAULT_OUT = Path(__file__).resolve().parent / "models"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="train base, JA expert, MATH expert and VLM (deterministic for a seed)")
    build.add_argument("--seed", type=int, default=0, help="build seed (default 0: the committed zoo)")
    build.add_argument("--quick", action="store_true", help="a small zoo in about a minute (for tests)")
    build.add_argument("--out", type=Path, default=None,
                       help=f"output folder (default: {DEFAULT_OUT}, where zoo:NAME resolves)")
    build.add_argument("--overwrite", action="store_true", help="replace models already in the output folder")
    build.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from evovlm.zoo.build import ZooSettings, build_zoo

    out = args.out or DEFAULT_OUT
    existing = [name for name in ("base", "ja", "math", "vlm") if (out / name).exists()]
    if existing and not args.overwrite:
        raise EvoVLMError(f"{out} already holds {', '.join(existing)}; pass --overwrite to rebuild them")
    if args.threads < 0:
        raise EvoVLMError(f"--threads must be >= 0, got {args.threads}")
    settings = ZooSettings.quick() if args.quick else ZooSettings()
    if args.threads:
        from dataclasses import replace

        settings = replace(settings, threads=args.threads)
    paths = build_zoo(out, seed=args.seed, settings=settings, progress=not args.quiet)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
