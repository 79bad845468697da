"""Sparsification of task vectors: exact magnitude thresholds and seeded DARE masks.

Both work in linear time. The magnitude threshold is a two-level radix select on the
IEEE-754 bit pattern of |delta| (non-negative floats order like their bit patterns),
instead of the full sort mergekit does. DARE draws its keep-mask from a per-tensor
PCG64 stream, so a tensor's mask depends only on (seed, numel), never on the order
or parallelism in which tensors are merged.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Union

import numpy as np
import torch
import torch.nn.functional as F

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

    @property
    def keeps_all_ties(self) -> bool:
        return self.ties_kept >= self.tie_count


KEEP_ALL = MagnitudeCut(threshold=0.0, ties_kept=0, tie_count=0)  # |x| >= 0: everything
KEEP_NONE = MagnitudeCut(threshold=float("inf"), ties_kept=0, tie_count=0)


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
    if density >= 1.0:
        return KEEP_ALL
    k = int(density * numel)
    return _cut_top_k(chunks, k) if k > 0 else KEEP_NONE


def _cut_top_k(chunks: Chunks, k: int) -> MagnitudeCut:
    high_hist = torch.zeros(1 << 15, dtype=torch.int64)
    for part in _passes(chunks):
        high = part.float().abs().view(torch.int32) >> 16
        high_hist += torch.bincount(high.flatten(), minlength=1 << 15)
    bucket, above = _top_bucket(high_hist, k)
    # Level 2 without boolean indexing (slow on CPU): offsets into the bucket, clamped so
    # entries below/above it land in two sentinel bins that are dropped afterwards.
    low_hist = torch.zeros((1 << 16) + 2, dtype=torch.int64)
    for part in _passes(chunks):
        offsets = (part.float().abs().view(torch.int32).flatten() - (bucket << 16)).clamp_(-1, 1 << 16).add_(1)
        low_hist += torch.bincount(offsets, minlength=(1 << 16) + 2)
    low_hist = low_hist[1:-1]
    low, above_in_bucket = _top_bucket(low_hist, k - above)
    threshold = torch.tensor([(bucket << 16) | low], dtype=torch.int32).view(torch.float32).item()
    if threshold == 0.0:
        return KEEP_ALL  # only zeros are cut, and they contribute nothing
    return MagnitudeCut(threshold, ties_kept=k - above - above_in_bucket, tie_count=int(low_hist[low]))


class MagnitudeTrimmer:
    """Applies a :class:`MagnitudeCut` chunk by chunk, in flat order (tie state carries over).

    Uses ``hardshrink`` (pure float arithmetic) rather than boolean masks, which are
    several times slower on CPU; only the one chunk where the tie quota runs out needs a mask.
    """

    def __init__(self, cut: MagnitudeCut) -> None:
        self.cut = cut
        self.ties_left = cut.ties_kept
        threshold = torch.tensor(cut.threshold, dtype=torch.float32)
        # hardshrink keeps |x| > lambd: lambd just below t keeps |x| >= t.
        self._below = float(torch.nextafter(threshold, torch.tensor(0.0)))

    def trim(self, chunk: torch.Tensor) -> torch.Tensor:
        """The chunk with the entries the cut drops set to zero (a new tensor unless all are kept)."""
        cut = self.cut
        if cut is KEEP_ALL:
            return chunk
        if cut is KEEP_NONE:
            return torch.zeros_like(chunk)
        if cut.keeps_all_ties:
            return F.hardshrink(chunk, self._below)
        if self.ties_left == 0:  # the quota of tied entries is used up: ties go too
            return F.hardshrink(chunk, cut.threshold)
        magnitude = chunk.abs()
        ties = magnitude == cut.threshold
        ties_here = int(ties.sum())
        if ties_here <= self.ties_left:  # every tie in this chunk fits the quota
            self.ties_left -= ties_here
            return F.hardshrink(chunk, self._below)
        tie_rank = torch.cumsum(ties.flatten(), 0).view_as(ties)
        drop = (magnitude < cut.threshold) | (ties & (tie_rank > self.ties_left))
        self.ties_left = 0
        return chunk.masked_fill(drop, 0.0)


def kth_largest_magnitude(chunks: Chunks, k: int) -> float:
    """The k-th largest |x| over all elements (1-based k), exactly, in linear time."""
    numel = sum(part.numel() for part in _passes(chunks))
    if not 1 <= k <= numel:
        raise ValueError(f"k={k} outside 1..{numel}")
    return _cut_top_k(chunks, k).threshold


def magnitude_keep_threshold(chunks: Chunks, numel: int, density: float) -> float | None:
    """The magnitude of the k-th largest entry, k = floor(density * numel).

    The trim itself keeps exactly k entries (see :class:`MagnitudeCut` for ties at t).
    None when everything is kept (density >= 1), +inf when nothing is (k = 0).
    """
    if density >= 1.0:
        return None
    return magnitude_cut(chunks, numel, density).threshold


def dare_keep_mask(numel: int, density: float, seed: int) -> torch.Tensor:
    """Bernoulli(density) keep-mask of ``numel`` entries, a pure function of (numel, density, seed)."""
    if density >= 1.0:
        return torch.ones(numel, dtype=torch.bool)
    if density <= 0.0:
        return torch.zeros(numel, dtype=torch.bool)
    keep_below = round(density * _U16_LEVELS)
    if keep_below >= _U16_LEVELS:
        return torch.ones(numel, dtype=torch.bool)
    generator = np.random.Generator(np.random.PCG64(seed))
    raw = generator.bit_generator.random_raw((numel + 3) // 4)  # 4 uint16 draws per 64-bit word
    draws = raw.view(np.uint16)[:numel]
    return torch.from_numpy(draws < np.uint16(keep_below))


def tensor_seed(recipe_seed: int, tensor_name: str, source_index: int) -> int:
    """A 64-bit seed for one (tensor, source) pair, stable across runs and platforms."""
    sequence = np.random.SeedSequence([recipe_seed, zlib.crc32(tensor_name.encode()), source_index])
    return int(sequence.generate_state(1, dtype=np.uint64)[0])
