"""Sparsification of task vectors: exact magnitude thresholds and seeded DARE masks.

Both work in linear time. The magnitude threshold is a two-level radix select on the
IEEE-754 bit pattern of |delta| (non-negative floats order like their bit patterns),
instead of the full sort mergekit does; for bf16 checkpoints its first level reads the
bf16-rounded deltas (:func:`bf16_delta_cut`). DARE draws its keep-mask from a per-tensor
PCG64 stream, so a tensor's mask depends only on (seed, numel), never on the order
or parallelism in which tensors are merged.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Union

import numpy as np
import torch

# 16-bit uniform draws: a keep-probability is quantised to 1/65536 (error < 1e-5).
_U16_LEVELS = 1 << 16

# A tensor, or a zero-argument callable that yields its chunks afresh on each call
# (the select makes two passes; streaming avoids materialising |delta| whole).
Chunks = Union[torch.Tensor, Callable[[], Iterable[torch.Tensor]]]


def _passes(chunks: Chunks) -> Iterable[torch.Tensor]:
    return [chunks] if isinstance(chunks, torch.Tensor) else chunks()


@dataclass(frozen=True)
class MagnitudeCut:
    """Which entries a top-k-by-magnitude trim keeps.

    Entries with |x| > ``threshold`` are kept, and of those with |x| == ``threshold``
    the first ``ties_kept`` in flat order, so exactly k entries survive. Ties are the
    rule, not the exception: bf16 fine-tunes differ from their base by a few ulps.
    """

    threshold: float
    ties_kept: int
    tie_count: int
    # When known: the kept ties are exactly those at flat index < tie_cutoff, so trimming needs
    # no tie counting (two hardshrinks split at this index). Not part of the cut's identity.
    tie_cutoff: int | None = field(default=None, compare=False)

    @property
    def keeps_all_ties(self) -> bool:
        return self.ties_kept >= self.tie_count


KEEP_ALL = MagnitudeCut(threshold=0.0, ties_kept=0, tie_count=0)  # |x| >= 0: everything
KEEP_NONE = MagnitudeCut(threshold=float("inf"), ties_kept=0, tie_count=0)


def _edge_cut(density: float, numel: int) -> MagnitudeCut | None:
    """KEEP_ALL or KEEP_NONE when the density alone decides the cut, else None."""
    if density >= 1.0:
        return KEEP_ALL
    return KEEP_NONE if int(density * numel) <= 0 else None


def _top_bucket(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """(bucket holding the k-th largest, count in buckets above it)."""
    at_or_above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])
    bucket = int(torch.nonzero(at_or_above >= k).max())
    return bucket, int(at_or_above[bucket + 1]) if bucket + 1 < hist.numel() else 0


def magnitude_cut(chunks: Chunks, numel: int, density: float) -> MagnitudeCut:
    """The exact top-``density`` trim by magnitude: two histogram passes, no sort.

    Level 1 histograms the top 16 bits of the fp32 pattern of |x| (exponent and 7
    mantissa bits); level 2 histograms the low 16 bits inside the one bucket that holds
    the k-th largest value, which pins down that value exactly.
    """
    return _edge_cut(density, numel) or _cut_top_k(chunks, int(density * numel))


def bf16_delta_cut(base: torch.Tensor, source: torch.Tensor, density: float,
                   chunk_elements: int = 1 << 20) -> MagnitudeCut:
    """:func:`magnitude_cut` of ``source - base`` (as fp32) for bf16 tensors, at two bytes per entry.

    Level 1 keys are the bf16 patterns of |source - base| rounded to bf16, which is what
    ``source - base`` gives in bf16 (torch subtracts in fp32, then rounds once). Rounding is
    monotone, so the key of the k-th largest marks off every entry above and below it; level 2
    then needs only the entries that share its key. Those are gathered and their exact fp32
    deltas histogrammed (every fp32 value that rounds to a bf16 value lies within half a bf16
    step of it). Fine-tunes of a bf16 model differ from it by a few bf16 steps, so this is
    usually one bucket of a few per cent of the entries.
    """
    if base.dtype != torch.bfloat16 or source.dtype != torch.bfloat16 or base.shape != source.shape:
        raise ValueError("bf16_delta_cut needs two bf16 tensors of one shape")
    base, source = base.reshape(-1), source.reshape(-1)
    numel = base.numel()
    if edge := _edge_cut(density, numel):
        return edge
    k = int(density * numel)
    bounds = [(start, min(start + chunk_elements, numel)) for start in range(0, numel, chunk_elements)]

    def rounded_keys(start: int, stop: int) -> torch.Tensor:
        # Recomputed in pass 2: keeping a full 2-byte copy per tensor measured slower in merge_bench
        # (TIES 17-26 s against 13-16, three runs each), as fresh memory is slow to fault in on these VMs.
        return (source[start:stop] - base[start:stop]).abs_().view(torch.int16)

    keys = torch.zeros(1 << 15, dtype=torch.int64, device=base.device)
    for start, stop in bounds:
        keys += torch.bincount(rounded_keys(start, stop), minlength=1 << 15)
    key, above = _top_bucket(keys, k)
    members, positions = [], []
    for start, stop in bounds:
        where = torch.nonzero(rounded_keys(start, stop) == key).squeeze(1)
        members.append(source[start:stop][where].float() - base[start:stop][where].float())
        positions.append(where + start)
    magnitudes = torch.cat(members).abs_()
    low = max(0, (key << 16) - (1 << 15))
    cut = _cut_in_range(magnitudes, k - above, low, (key << 16) + (1 << 15) + 1 - low)
    if cut is KEEP_ALL:
        return cut
    ties = torch.cat(positions)[magnitudes == cut.threshold]  # flat indices, ascending
    cutoff = 0 if cut.ties_kept == 0 else int(ties[cut.ties_kept - 1]) + 1
    return replace(cut, tie_cutoff=cutoff)


def _cut_top_k(chunks: Chunks, k: int) -> MagnitudeCut:
    high_hist = None
    for part in _passes(chunks):
        high = part.float().abs().view(torch.int32) >> 16
        counts = torch.bincount(high.flatten(), minlength=1 << 15)
        high_hist = counts if high_hist is None else high_hist.add_(counts)
    bucket, _ = _top_bucket(high_hist, k)
    return _cut_in_range(chunks, k, bucket << 16, 1 << 16)


def _cut_in_range(chunks: Chunks, k: int, low: int, span: int) -> MagnitudeCut:
    """Level 2: the exact cut, given that the k-th largest |x| has an fp32 pattern in low..low+span-1."""
    # Offsets into the range without boolean indexing (slow on CPU), clamped so entries
    # below/above it land in two sentinel bins.
    hist = None
    for part in _passes(chunks):
        offsets = (part.float().abs().view(torch.int32).flatten() - low).clamp_(-1, span).add_(1)
        counts = torch.bincount(offsets, minlength=span + 2)
        hist = counts if hist is None else hist.add_(counts)
    above, inside = int(hist[-1]), hist[1:-1]
    assert above < k <= above + int(inside.sum()), "level 1 chose a range without the k-th largest"
    position, above_inside = _top_bucket(inside, k - above)
    threshold = torch.tensor([low + position], dtype=torch.int32).view(torch.float32).item()
    if threshold == 0.0:
        return KEEP_ALL  # only zeros are cut, and they contribute nothing
    return MagnitudeCut(threshold, ties_kept=k - above - above_inside, tie_count=int(inside[position]))


def kthvalue_cut(base: torch.Tensor, source: torch.Tensor, density: float) -> MagnitudeCut:
    """:func:`magnitude_cut` of ``source - base`` by ``torch.kthvalue`` on the whole |delta|.

    The same cut (threshold and tie quota) from one full-size fp32 copy and torch's own
    selection kernel, for devices where that beats the streamed radix select
    (``benchmarks/select_bench.py`` decides; see :data:`SELECT_BY_DEVICE`).
    """
    return _whole_cut(base, source, density, lambda magnitude, k: magnitude.kthvalue(magnitude.numel() - k + 1).values)


def topk_cut(base: torch.Tensor, source: torch.Tensor, density: float) -> MagnitudeCut:
    """As :func:`kthvalue_cut`, by ``torch.topk`` from the shorter side (k largest or numel - k + 1
    smallest): on a GPU, torch's radix top-k kernel is far faster than its kthvalue."""
    def kth_largest(magnitude: torch.Tensor, k: int) -> torch.Tensor:
        if 2 * k <= magnitude.numel():
            return torch.topk(magnitude, k, sorted=False).values.min()
        return torch.topk(magnitude, magnitude.numel() - k + 1, largest=False, sorted=False).values.max()
    return _whole_cut(base, source, density, kth_largest)


def _whole_cut(base: torch.Tensor, source: torch.Tensor, density: float,
               kth_largest: Callable[[torch.Tensor, int], torch.Tensor]) -> MagnitudeCut:
    numel = base.numel()
    if edge := _edge_cut(density, numel):
        return edge
    k = int(density * numel)
    magnitude = (source.reshape(-1).float() - base.reshape(-1).float()).abs_()
    threshold = kth_largest(magnitude, k)
    if float(threshold) == 0.0:
        return KEEP_ALL  # only zeros are cut, and they contribute nothing
    above = int(torch.count_nonzero(magnitude > threshold))
    ties = int(torch.count_nonzero(magnitude == threshold))
    return MagnitudeCut(float(threshold), ties_kept=k - above, tie_count=ties)


# Which select each device uses, from benchmarks/select_bench.py. CPU (2 threads): the streamed radix
# select, 2-3.6x faster than torch.kthvalue and with no full-size copy. An H200: torch.topk, under
# 2.5 ms per 7B matrix, 17-31x faster than the radix select on the MLP matrices (which is itself
# 6.5-12x faster than torch.kthvalue there). Devices not measured use torch.kthvalue.
SELECT_BY_DEVICE = {"cpu": "radix", "cuda": "topk"}


def delta_cut(base: torch.Tensor, source: torch.Tensor, density: float) -> MagnitudeCut:
    """The exact top-``density`` trim of ``source - base`` by magnitude, by the faster select for the device."""
    select = SELECT_BY_DEVICE.get(base.device.type, "kthvalue")
    if select == "topk":
        return topk_cut(base, source, density)
    if select == "kthvalue":
        return kthvalue_cut(base, source, density)
    base, source = base.reshape(-1), source.reshape(-1)
    if base.dtype == source.dtype == torch.bfloat16:
        return bf16_delta_cut(base, source, density)

    def chunks() -> Iterable[torch.Tensor]:
        for start in range(0, base.numel(), 1 << 18):
            yield source[start:start + (1 << 18)].float() - base[start:start + (1 << 18)].float()
    return magnitude_cut(chunks, base.numel(), density)


class MagnitudeTrimmer:
    """Applies a :class:`MagnitudeCut` chunk by chunk, in flat order (tie state carries over).

    Uses ``hardshrink`` (pure float arithmetic) rather than boolean masks, which are
    several times slower on CPU. With a ``tie_cutoff`` the chunk is split there; without
    one, ties are counted chunk by chunk and the chunk where the quota runs out needs a mask.
    """

    def __init__(self, cut: MagnitudeCut) -> None:
        self.cut = cut
        self.ties_left = cut.ties_kept
        self.position = 0  # flat index of the next chunk
        threshold = torch.tensor(cut.threshold, dtype=torch.float32)
        # hardshrink keeps |x| > lambd: lambd just below t keeps |x| >= t.
        self._below = float(torch.nextafter(threshold, torch.tensor(0.0)))

    def trim_(self, chunk: torch.Tensor) -> torch.Tensor:
        """Zero, in place, the entries of ``chunk`` (a float tensor) that the cut drops."""
        cut = self.cut
        start = self.position
        self.position += chunk.numel()
        if cut is KEEP_ALL:
            return chunk
        if cut is KEEP_NONE:
            return chunk.zero_()
        if cut.tie_cutoff is not None and not cut.keeps_all_ties:
            flat = chunk.view(-1)
            split = min(max(cut.tie_cutoff - start, 0), flat.numel())  # ties before it are kept
            torch.hardshrink(flat[:split], self._below, out=flat[:split])
            torch.hardshrink(flat[split:], cut.threshold, out=flat[split:])
            return chunk
        if cut.keeps_all_ties:
            return torch.hardshrink(chunk, self._below, out=chunk)
        if self.ties_left == 0:  # the quota of tied entries is used up: ties go too
            return torch.hardshrink(chunk, cut.threshold, out=chunk)
        magnitude = chunk.abs()
        ties = magnitude == cut.threshold
        ties_here = int(ties.sum())
        if ties_here <= self.ties_left:  # every tie in this chunk fits the quota
            self.ties_left -= ties_here
            return torch.hardshrink(chunk, self._below, out=chunk)
        tie_rank = torch.cumsum(ties.flatten(), 0).view_as(ties)
        drop = (magnitude < cut.threshold) | (ties & (tie_rank > self.ties_left))
        self.ties_left = 0
        return chunk.masked_fill_(drop, 0.0)


# PCG64 words per thread below which one thread draws a whole tensor (threads cost more than they save).
_WORDS_PER_THREAD = 1 << 20


class DareDraws:
    """The 16-bit uniform draws behind a tensor's DARE keep-masks, for every density at once.

    Entry i is kept at density d when its draw is below round(d * 65536). The draws are the
    per-tensor PCG64 stream, a pure function of (numel, seed). They do not depend on the
    density, so an evolution can draw them once and hold them (e.g. on the GPU) while the
    densities change from candidate to candidate. Held shifted into int16 (draw - 32768), which
    compares like the unsigned draw on every device.
    """

    def __init__(self, shifted: torch.Tensor) -> None:
        self.shifted = shifted

    @classmethod
    def generate(cls, numel: int, seed: int, *, threads: int | None = None) -> "DareDraws":
        """Drawn on the CPU; long streams are split across threads with PCG64's jump-ahead, which
        gives the same words as one pass."""
        words = (numel + 3) // 4  # 4 uint16 draws per 64-bit word
        raw = np.empty(words, dtype=np.uint64)
        parts = max(1, min(threads or os.cpu_count() or 1, words // _WORDS_PER_THREAD))
        bounds = [words * part // parts for part in range(parts + 1)]

        def draw(part: int) -> None:
            stream = np.random.PCG64(seed)
            stream.advance(bounds[part])
            raw[bounds[part]:bounds[part + 1]] = stream.random_raw(bounds[part + 1] - bounds[part])

        if parts == 1:
            draw(0)
        else:
            with ThreadPoolExecutor(parts) as pool:  # numpy draws without the GIL
                list(pool.map(draw, range(parts)))
        draws = raw.view(np.uint16)[:numel]
        return cls(torch.from_numpy((draws ^ np.uint16(0x8000)).view(np.int16)))

    @property
    def nbytes(self) -> int:
        return self.shifted.numel() * self.shifted.element_size()

    def to(self, device: torch.device | str) -> "DareDraws":
        return DareDraws(self.shifted.to(device))

    def keep_mask(self, density: float) -> torch.Tensor:
        """Bernoulli(density) keep-mask, on the draws' device."""
        edge = _edge_mask(self.shifted.numel(), density, self.shifted.device)
        return edge if edge is not None else self.shifted < round(density * _U16_LEVELS) - (_U16_LEVELS >> 1)


def _edge_mask(numel: int, density: float, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The mask of a density that needs no draws (keep all, or none); None for any other."""
    if density >= 1.0 or round(density * _U16_LEVELS) >= _U16_LEVELS:
        return torch.ones(numel, dtype=torch.bool, device=device)
    if density <= 0.0:
        return torch.zeros(numel, dtype=torch.bool, device=device)
    return None


def dare_keep_mask(numel: int, density: float, seed: int) -> torch.Tensor:
    """Bernoulli(density) keep-mask of ``numel`` entries, a pure function of (numel, density, seed)."""
    edge = _edge_mask(numel, density)
    return edge if edge is not None else DareDraws.generate(numel, seed).keep_mask(density)


def tensor_seed(recipe_seed: int, tensor_name: str, source_index: int) -> int:
    """A 64-bit seed for one (tensor, source) pair, stable across runs and platforms."""
    sequence = np.random.SeedSequence([recipe_seed, zlib.crc32(tensor_name.encode()), source_index])
    return int(sequence.generate_state(1, dtype=np.uint64)[0])
