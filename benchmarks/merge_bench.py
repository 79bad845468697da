"""Merge-engine benchmark: three ~850M-parameter Mistral-shaped bf16 checkpoints.

    python benchmarks/merge_bench.py [--work-dir /tmp/evovlm-merge-bench] [--workers 1]

Builds (once) a base and three synthetic fine-tunes (hidden 2048, 16 layers, intermediate
5632, vocab 32000, 32 heads / 8 KV heads), then times, each in a fresh subprocess:
disk-to-disk TIES, DARE-TIES and task arithmetic, and an in-memory task-arithmetic
re-merge into a live model with the sources already resident (a second candidate after a
first one has paged the memory-mapped sources in, as in an evolution). Prints seconds, GB/s
of source weights read and peak memory (VmHWM, which counts touched memory-mapped source
pages, and the peak of anonymous memory alone, sampled every 20 ms). Needs ~14 GB of disk
and ~10 GB of RAM.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

SHAPE = dict(hidden=2048, layers=16, intermediate=5632, vocab=32000, heads=32, kv_heads=8)
TARGETS = {"ties": 15.0, "dare_ties": 20.0, "task_arithmetic": 8.0, "in-memory re-merge": 3.0}


def _tensor_shapes() -> dict[str, tuple[int, ...]]:
    hidden, inter, vocab = SHAPE["hidden"], SHAPE["intermediate"], SHAPE["vocab"]
    kv = hidden // SHAPE["heads"] * SHAPE["kv_heads"]
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for layer in range(SHAPE["layers"]):
        prefix = f"model.layers.{layer}."
        shapes.update({
            prefix + "self_attn.q_proj.weight": (hidden, hidden), prefix + "self_attn.k_proj.weight": (kv, hidden),
            prefix + "self_attn.v_proj.weight": (kv, hidden), prefix + "self_attn.o_proj.weight": (hidden, hidden),
            prefix + "mlp.gate_proj.weight": (inter, hidden), prefix + "mlp.up_proj.weight": (inter, hidden),
            prefix + "mlp.down_proj.weight": (hidden, inter),
            prefix + "input_layernorm.weight": (hidden,), prefix + "post_attention_layernorm.weight": (hidden,)})
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def build_models(work_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import MistralConfig

    config = MistralConfig(hidden_size=SHAPE["hidden"], intermediate_size=SHAPE["intermediate"],
                           num_hidden_layers=SHAPE["layers"], num_attention_heads=SHAPE["heads"],
                           num_key_value_heads=SHAPE["kv_heads"], vocab_size=SHAPE["vocab"], dtype="bfloat16")
    config.architectures = ["MistralForCausalLM"]
    names = ["base", "ft1", "ft2", "ft3"]
    if all((work_dir / name / "model.safetensors.index.json").is_file() for name in names):
        return
    generator = torch.Generator().manual_seed(0)
    for index, name in enumerate(names):
        out = work_dir / name
        out.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(out)
        weight_map, shard, shard_bytes, shard_index = {}, {}, 0, 0
        shapes = _tensor_shapes()
        for key, shape in shapes.items():
            base_gen = torch.Generator().manual_seed(hash(key) % (2**31))
            tensor = torch.randn(shape, generator=base_gen) * 0.02
            if index:  # a fine-tune: base plus a small task vector
                tensor += torch.randn(shape, generator=generator) * 0.002
            shard[key] = tensor.bfloat16()
            shard_bytes += shard[key].numel() * 2
            if shard_bytes > 1_000_000_000 or key == "lm_head.weight":
                file_name = f"model-{shard_index:05d}.safetensors"
                save_file(shard, str(out / file_name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, file_name))
                shard, shard_bytes, shard_index = {}, 0, shard_index + 1
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        print(f"built {out}", flush=True)


class _AnonPeak:
    """Samples RssAnon from /proc/self/status: the memory that is not file-backed."""

    def __init__(self) -> None:
        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            time.sleep(0.02)

    def __enter__(self) -> "_AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _hwm_gb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def run_one(work_dir: Path, job: str, workers: int) -> dict:
    """Runs in a fresh subprocess so its peak memory is its own."""
    import shutil

    from evovlm.merge.recipe import recipe_from_dict

    sources = [{"model": str(work_dir / f"ft{i}"), "weight": w, "density": d}
               for i, w, d in ((1, 0.5, 0.5), (2, 0.3, 0.4), (3, 0.7, 0.6))]
    method = "task_arithmetic" if job == "in-memory re-merge" else job
    recipe = recipe_from_dict({"method": method, "base_model": str(work_dir / "base"), "models": sources, "seed": 1})
    source_bytes = 4 * sum(2 * math.prod(shape) for shape in _tensor_shapes().values())
    with _AnonPeak() as anon:
        if job == "in-memory re-merge":
            import torch
            from transformers import AutoModelForCausalLM

            from evovlm.merge.engine import ResidentSources, merge_into_module

            resident = ResidentSources.load(recipe)
            module = AutoModelForCausalLM.from_pretrained(str(work_dir / "base"), dtype=torch.bfloat16)
            merge_into_module(module, recipe, resident)  # first candidate: pages the sources in
            for spec, weight in zip(recipe.models, (0.2, 0.9, 0.4)):
                spec.weight = weight  # the next candidate of an evolution: new weights, same sources
            started = time.perf_counter()
            merge_into_module(module, recipe, resident)
        else:
            from evovlm.merge.engine import merge_checkpoints

            out = work_dir / f"out-{job}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            merge_checkpoints(recipe, out, overwrite=True, workers=workers, progress=False)
        seconds = time.perf_counter() - started
    return {"job": job, "seconds": seconds, "gbps": source_bytes / seconds / 1e9, "hwm_gb": _hwm_gb(),
            "anon_gb": anon.peak_kb / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/evovlm-merge-bench"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--jobs", nargs="*", default=list(TARGETS))
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        print(json.dumps(run_one(args.work_dir, args.run_one, args.workers)))
        return
    build_models(args.work_dir)
    model_gb = sum(2 * math.prod(shape) for shape in _tensor_shapes().values()) / 1e9
    params = sum(math.prod(shape) for shape in _tensor_shapes().values())
    print(f"\n{params / 1e6:.0f}M parameters per model, {model_gb:.2f} GB in bf16; 1 base + 3 sources; "
          f"workers={args.workers}\n")
    print(f"| {'job':<20} | {'seconds':>8} | {'target':>7} | {'GB/s read':>9} | {'peak RSS GB':>11} | "
          f"{'peak anon GB':>12} |")
    print(f"|{'-' * 22}|{'-' * 10}|{'-' * 9}|{'-' * 11}|{'-' * 13}|{'-' * 14}|")
    for job in args.jobs:
        result = subprocess.run([sys.executable, __file__, "--work-dir", str(args.work_dir), "--workers",
                                 str(args.workers), "--run-one", job], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"| {job:<20} | failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"| {job:<20} | {row['seconds']:8.2f} | {TARGETS[job]:7.1f} | {row['gbps']:9.2f} | "
              f"{row['hwm_gb']:11.2f} | {row['anon_gb']:12.2f} |", flush=True)
    print(f"\nMemory target: peak anonymous memory <= 2 x one model = {2 * model_gb:.2f} GB "
          "(memory-mapped source pages come on top and are reclaimable page cache).")


if __name__ == "__main__":
    main()
