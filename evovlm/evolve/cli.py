"""``evovlm evolve CONFIG.yaml --out RUN_DIR`` and ``evovlm evolve --resume RUN_DIR``."""

from __future__ import annotations

import argparse
import time

from evovlm.argtypes import count, number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="evolution config YAML (see examples/evolve-*.yaml)")
    parser.add_argument("--out", help="run directory to create (config, history, states, plot, best model)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (after a crash or kill)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    parser.add_argument("--workers", type=count(1), help="parallel evaluation processes (default: one per GPU, else 1)")
    parser.add_argument("--devices", help="comma-separated devices for the workers, e.g. cuda:0,cuda:1 or cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--backend", choices=["local", "ray"],
                        help="local: this process or a process pool (default); ray: Ray actors (pip install "
                             "'evovlm[ray]')")
    parser.add_argument("--ray-address", help="join the Ray cluster at ADDR (host:port or auto) instead of starting "
                                              "a local Ray; implies --backend ray")
    parser.add_argument("--plan", action="store_true",
                        help="print what one worker must hold (sources, live model, KV cache) and whether it fits "
                             "--gpu-gib, from config.json files alone; runs nothing")
    parser.add_argument("--gpu-gib", type=number(above=0), default=80.0, help="GPU memory for --plan (default 80)")
    parser.add_argument("--prompt-tokens", type=count(1), default=512,
                        help="prompt length (image tokens included) assumed by --plan's KV cache (default 512)")


def run(args: argparse.Namespace) -> int:
    from evovlm.errors import EvoVLMError
    from evovlm.evolve.runs import run_evolution

    if args.plan:
        return _plan(args)
    if args.resume and (args.config or args.out):
        raise EvoVLMError("--resume RUN_DIR continues a run with its own config: give no CONFIG or --out")
    if not args.resume and not (args.config and args.out):
        raise EvoVLMError("give CONFIG.yaml and --out RUN_DIR (or --resume RUN_DIR)")
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    started = time.perf_counter()
    out = args.resume or args.out
    summary = run_evolution(None if args.resume else args.config, out, resume=bool(args.resume),
                            overwrite=args.overwrite, progress=False if args.quiet else None,
                            workers=args.workers, devices=devices,
                            backend="ray" if args.ray_address else args.backend, ray_address=args.ray_address)
    best = summary["best"]
    metric = summary.get("metric") or "fitness"
    print(f"{summary['mode']} evolution finished in {time.perf_counter() - started:.1f} s: best {metric} "
          f"{best['fitness']:.4f} (generation {best['generation']}, candidate {best['index']})")
    test = summary.get("test")
    if test and test.get("fitness") is not None:
        print(f"held-out test ({test['benchmark']}, split {test['split']}): {test['metric']} {test['fitness']:.4f}")
    if summary.get("model_dir"):
        print(f"best model: {summary['model_dir']}")
    print(f"run directory: {out}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evovlm.errors import EvoVLMError
    from evovlm.evolve.config import load_config
    from evovlm.evolve.plan import plan

    if not args.config or args.resume or args.out:
        raise EvoVLMError("--plan takes CONFIG.yaml only (no --out or --resume): it runs nothing")
    config = load_config(args.config)
    base = Path(args.config).resolve().parent  # model folders may be written relative to the config
    print(plan(config, gpu_gib=args.gpu_gib, prompt_tokens=args.prompt_tokens, base_dir=base).text())
    return 0
