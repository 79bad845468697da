"""``evovlm eval --model M --bench B``: generate on a benchmark, score, print a table, write JSON.

Cheap checks (benchmark name, limit, data, output path, model directory) run before the model
is loaded, so a typo fails in a second rather than after minutes of loading; an error leaves
no output file behind.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from evovlm.argtypes import MAX_NEW_TOKENS, count, number
from evovlm.errors import EvoVLMError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model directory, zoo:NAME, or HF repo id in the local cache")
    parser.add_argument("--bench", help="benchmark name (see --list-benchmarks)")
    parser.add_argument("--list-benchmarks", action="store_true", help="list known benchmarks and exit")
    parser.add_argument("--limit", type=count(1), help="score only the first N samples")
    parser.add_argument("--out", type=Path,
                        help="results JSON path (default: results/<model>__<bench>.json)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="also load a model whose weights are only *.bin/*.pt (with torch.load(weights_only=True))")
    parser.add_argument("--data", help="read the benchmark from this file or directory instead of the default places")
    parser.add_argument("--split", help="dataset split (default: test)")
    parser.add_argument("--data-seed", type=count(0), help="draw of a synthetic benchmark (zoo benchmarks only)")
    gen = parser.add_argument_group("generation (defaults: the benchmark's, i.e. the paper's settings)")
    gen.add_argument("--template", help="prompt template: ja-alpaca-cot, ja-shisa-vqa, llava-mistral, plain, chat")
    gen.add_argument("--num-beams", type=count(1, 64))
    gen.add_argument("--max-new-tokens", type=count(1, MAX_NEW_TOKENS))
    gen.add_argument("--repetition-penalty", type=number(above=0.0, maximum=10.0))
    gen.add_argument("--stop", action="append", metavar="STRING",
                     help="stop string (repeatable; replaces the benchmark's list)")
    gen.add_argument("--batch-size", type=count(1, 4096))
    gen.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    gen.add_argument("--dtype", help="float32, bfloat16 or float16 (default: bf16/fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--bootstrap-seed", type=count(0), default=0, help="seed of the bootstrap confidence intervals")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _default_out(model_ref: str, bench: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model_ref.rstrip("/")).name or model_ref).strip("_") or "model"
    return Path("results") / f"{slug}__{bench}.json"


def run(args: argparse.Namespace) -> int:
    from evovlm.eval.benchmarks import describe_benchmarks, load_benchmark

    if args.list_benchmarks:
        for name, text in describe_benchmarks().items():
            print(f"{name:<28}{text}")
        return 0
    if not args.model or not args.bench:
        raise EvoVLMError("both --model and --bench are required (see --list-benchmarks)")
    out = args.out or _default_out(args.model, args.bench)

    from evovlm.io.atomic import ensure_writable_file
    from evovlm.io.resolve import resolve_model_path

    bench = load_benchmark(args.bench, split=args.split, data_seed=args.data_seed, path=args.data, limit=args.limit)
    settings = bench.generation.with_overrides(
        template=args.template, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty, batch_size=args.batch_size, stop_strings=args.stop,
    )
    if settings.template != "chat":  # "chat" can only be checked against the model's tokenizer
        from evovlm.eval.prompts import build_prompt

        build_prompt(settings.template, "?")  # an unknown template fails here, before the model loads
    model_dir = resolve_model_path(args.model)
    ensure_writable_file(out, "results.json")  # now, not after the whole evaluation

    from evovlm.eval.evaluate import evaluate, format_summary, write_results
    from evovlm.eval.runners import load_runner, pick_device_dtype

    pick_device_dtype(args.device, args.dtype)  # validate before the (slow) load
    runner = load_runner(model_dir, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    results = evaluate(runner, bench, generation=settings, model_name=args.model, limit=args.limit,
                       bootstrap_seed=args.bootstrap_seed, progress=not args.no_progress)
    print(format_summary(results))
    print(f"results: {write_results(results, out)}")
    return 0
