"""Magnitude-select benchmark: the streamed radix select against torch.kthvalue and torch.topk.

    python benchmarks/select_bench.py [--repeats 3] [--devices cpu,cuda]

TIES trims each task vector to its top ``density`` share by magnitude. For each device present
and each 7B-shaped tensor (Mistral-7B's 4096 x 4096 attention and 14336 x 4096 MLP matrices,
fp32 and bf16), this times the exact cut of ``source - base`` at density 0.5 three ways:

* ``radix``:    EvoVLM's two-level histogram select, streamed over chunks (no full-size copy);
* ``kthvalue``: one fp32 |delta| copy, then ``torch.kthvalue`` (what non-radix devices use);
* ``topk``:     one fp32 |delta| copy, then ``torch.topk`` from the shorter side.

Each is a whole cut (threshold and tie quota), checked to give the same threshold. The last
column is what ``evovlm.merge.sparsify`` uses on that device (``SELECT_BY_DEVICE``): the fastest.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from evovlm.merge.sparsify import SELECT_BY_DEVICE, bf16_delta_cut, kthvalue_cut, magnitude_cut, topk_cut

SHAPES = {"attn 4096x4096": (4096, 4096), "mlp 14336x4096": (14336, 4096)}
DENSITY = 0.5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _radix(base: torch.Tensor, source: torch.Tensor) -> float:
    if base.dtype == torch.bfloat16:
        return bf16_delta_cut(base, source, DENSITY).threshold
    flat_base, flat_source = base.reshape(-1), source.reshape(-1)

    def chunks():
        for start in range(0, flat_base.numel(), 1 << 18):
            yield flat_source[start:start + (1 << 18)].float() - flat_base[start:start + (1 << 18)].float()
    return magnitude_cut(chunks, flat_base.numel(), DENSITY).threshold


def _kthvalue(base: torch.Tensor, source: torch.Tensor) -> float:
    return kthvalue_cut(base, source, DENSITY).threshold


def _topk(base: torch.Tensor, source: torch.Tensor) -> float:
    return topk_cut(base, source, DENSITY).threshold


def _time(fn, base: torch.Tensor, source: torch.Tensor, repeats: int) -> tuple[float, float]:
    fn(base, source)  # warm-up (allocator, kernels)
    _sync(base.device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn(base, source)
        _sync(base.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; absent ones are skipped")
    args = parser.parse_args()
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available())]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, density {DENSITY}, "
          f"median of {args.repeats}")
    print("| device | tensor | dtype | radix s | kthvalue s | topk s | radix / kthvalue | radix / topk | used |")
    print("|---|---|---|---|---|---|---|---|---|")
    for device_name in devices:
        device = torch.device(device_name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        for shape_name, shape in SHAPES.items():
            for dtype in (torch.float32, torch.bfloat16):
                generator = torch.Generator().manual_seed(0)
                base = torch.randn(shape, generator=generator).to(dtype)
                source = (base.float() + 0.01 * torch.randn(shape, generator=generator)).to(dtype)
                base, source = base.to(device), source.to(device)
                results = {name: _time(fn, base, source, args.repeats)
                           for name, fn in (("radix", _radix), ("kthvalue", _kthvalue), ("topk", _topk))}
                thresholds = {value for _, value in results.values()}
                assert len(thresholds) == 1, f"the selects disagree: {results}"
                used = SELECT_BY_DEVICE.get(device.type, "kthvalue")
                radix, kth, topk = (results[name][0] for name in ("radix", "kthvalue", "topk"))
                print(f"| {label} | {shape_name} | {str(dtype).split('.')[1]} | {radix:.3f} | {kth:.3f} | "
                      f"{topk:.3f} | {radix / kth:.2f} | {radix / topk:.2f} | {used} |", flush=True)
                del base, source


if __name__ == "__main__":
    main()
