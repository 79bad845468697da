"""``evovlm merge CONFIG.yaml --out DIR``: merge checkpoints from a recipe."""

from __future__ import annotations

import argparse
import sys
import time

from evovlm.argtypes import count


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="recipe YAML (EvoVLM format, or a mergekit config with merge_method)")
    parser.add_argument("--out", help="output directory (written atomically; required unless --to-mergekit)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty output directory")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="also read *.bin/*.pt weights (loaded with torch.load(weights_only=True))")
    parser.add_argument("--seed", type=count(0), help="override the recipe's seed (DARE masks)")
    parser.add_argument("--dtype", help="output dtype: bfloat16, float16 or float32 (default: the target's)")
    parser.add_argument("--shard-size", default="1GB", help="maximum shard size, e.g. 500MB or 5GB (default 1GB)")
    parser.add_argument("--workers", type=count(1), default=1, help="tensors merged in parallel (default 1)")
    parser.add_argument("--to-mergekit", action="store_true", help="print the recipe as a mergekit YAML and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from evovlm.errors import EvoVLMError
    from evovlm.io.writer import parse_size
    from evovlm.merge.engine import merge_checkpoints
    from evovlm.merge.recipe import load_recipe, to_mergekit

    recipe = load_recipe(args.config)
    if args.seed is not None:
        recipe.seed = args.seed
    if args.dtype:
        recipe.dtype = args.dtype
    if args.to_mergekit:
        sys.stdout.write(to_mergekit(recipe))
        return 0
    if not args.out:
        raise EvoVLMError("--out DIR is required")
    started = time.perf_counter()
    out = merge_checkpoints(recipe, args.out, allow_pickle=args.allow_pickle, overwrite=args.overwrite,
                            max_shard_bytes=parse_size(args.shard_size), workers=args.workers,
                            progress=not args.quiet)
    print(f"merged {len(recipe.models)} model(s) with {recipe.method} into {out} "
          f"in {time.perf_counter() - started:.1f} s")
    return 0
