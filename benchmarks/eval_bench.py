"""Evaluation speed: batched vs one-by-one greedy generation, and metric throughput.

    python benchmarks/eval_bench.py [--prompts 64] [--new-tokens 32] [--batch-size 16] [--threads 1]

Generation uses a random Mistral (built here, nothing downloaded) and a character tokenizer.
The one-by-one baseline is plain ``model.generate`` on each prompt alone (no padding); the
batched run is :class:`evovlm.eval.runners.CausalLMRunner`. Their outputs must be identical:
the script fails if a single one differs. Scoring throughput uses 10,000 synthetic pairs.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from evovlm.eval.runners import CausalLMRunner, GenerationSettings

CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 .,:?!\n") + [chr(c) for c in range(0x3041, 0x3041 + 86)]


def build_model(hidden: int, layers: int, seed: int):
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>")
    config = MistralConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.1,
    )
    torch.manual_seed(seed)
    return MistralForCausalLM(config).eval(), tokenizer


def one_by_one(model, tokenizer, prompts: list[str], new_tokens: int) -> list[str]:
    texts = []
    with torch.inference_mode():
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt")
            out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            texts.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return texts


def synthetic_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str], list[str]]:
    rng = random.Random(seed)
    words = ["赤い", "車", "が", "道路", "を", "走って", "います", "。", "白い", "猫", "は", "窓", "の", "近く", "に",
             "座って", "大きな", "木", "空", "青い", "人々", "公園", "で", "遊んで", "写真", "には", "建物", "あります"]
    refs = ["".join(rng.choices(words, k=rng.randint(4, 14))) for _ in range(n)]
    preds = ["".join(rng.choices(words, k=rng.randint(2, 20))) for _ in range(n)]
    golds = [str(rng.randint(1, 5000)) for _ in range(n)]
    replies = [f"まず{rng.randint(1, 99)}個あります。次に{rng.randint(1, 99)}を足します。"
               f"答えは{g if rng.random() < .5 else rng.randint(1, 5000)}です。"
               for g in golds]
    return refs, preds, golds, replies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per mode; the best is reported")
    # One thread by default: on a small shared CPU box, OpenMP threads competing with other jobs
    # make timings swing 10x; one thread keeps the comparison stable. 0 = torch's choice.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = build_model(args.hidden, args.layers, seed=0)
    rng = random.Random(1)
    prompts = ["".join(rng.choice(CHARS) for _ in range(rng.randint(8, 96))) for _ in range(args.prompts)]
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    runner = CausalLMRunner(model, tokenizer)
    settings = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=args.batch_size)
    runner.generate(prompts[:2], settings, progress=False)  # warm-up: first-call allocations
    one_by_one(model, tokenizer, prompts[:1], 2)

    # Interleaved repeats, best time of each mode: other jobs on a shared box slow single runs.
    single_times, batched_times, same = [], [], args.prompts
    for _ in range(args.repeats):
        start = time.perf_counter()
        single = one_by_one(model, tokenizer, prompts, args.new_tokens)
        single_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        batched = runner.generate(prompts, settings, progress=False)
        batched_times.append(time.perf_counter() - start)
        same = min(same, sum(a == b for a, b in zip(single, batched)))
    single_s, batched_s = min(single_times), min(batched_times)

    from evovlm.eval.metrics import score_mgsm, score_rouge_ja

    refs, preds, golds, replies = synthetic_pairs(args.pairs)
    score_rouge_ja(refs[:5], preds[:5], n_resamples=10)  # warm-up: loads MeCab and fastText once
    score_mgsm(golds[:5], replies[:5], n_resamples=10)
    start = time.perf_counter()
    score_rouge_ja(refs, preds)
    rouge_s = time.perf_counter() - start
    start = time.perf_counter()
    score_mgsm(golds, replies)
    mgsm_s = time.perf_counter() - start

    n = args.prompts
    print(f"EvoVLM eval benchmark - CPU, torch threads={torch.get_num_threads()}, torch {torch.__version__}")
    print(f"generation: random Mistral (hidden {args.hidden}, {args.layers} layers, vocab {len(tokenizer)}), "
          f"{n} prompts of {min(lengths)}-{max(lengths)} tokens, {args.new_tokens} new tokens, greedy, fp32, "
          f"best of {args.repeats}")
    print(f"{'mode':<34}{'seconds':>9}{'prompts/s':>11}")
    print(f"{'one-by-one model.generate':<34}{single_s:>9.2f}{n / single_s:>11.1f}")
    print(f"{f'batched runner (batch {args.batch_size})':<34}{batched_s:>9.2f}{n / batched_s:>11.1f}")
    print(f"{'speed-up':<34}{single_s / batched_s:>8.1f}x")
    print(f"identical outputs: {'yes' if same == n else 'NO'} ({same}/{n})")
    print(f"{f'scoring ({args.pairs:,} pairs)':<34}{'seconds':>9}{'samples/s':>11}")
    print(f"{'rouge-ja (1000 bootstrap)':<34}{rouge_s:>9.2f}{args.pairs / rouge_s:>11.0f}")
    print(f"{'mgsm (1000 bootstrap)':<34}{mgsm_s:>9.2f}{args.pairs / mgsm_s:>11.0f}")
    if same != n:
        for a, b in zip(single, batched):
            if a != b:
                print(f"first mismatch:\n  one-by-one: {a!r}\n  batched:    {b!r}", file=sys.stderr)
                break
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
