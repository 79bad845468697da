"""Merge methods: pure functions on tensors, kept in a registry.

Every method has one signature::

    fn(base, sources, weights, densities, *, seeds=None, **options) -> fp32 tensor

``base`` is the shared ancestor (``None`` only for ``linear``), ``sources`` the
fine-tuned tensors, ``weights``/``densities`` one float per source (the engine resolves
per-layer-group values before calling), ``seeds`` one int per source for DARE.

Semantics (delta_i = source_i - base, e_i = weight_i * sparsified delta_i):

* ``linear``:          sum_i w_i x_i, divided by sum_i w_i when ``normalize`` (default).
* ``task_arithmetic``: base + lambda * sum_i e_i  (``normalize`` divides by sum_i w_i).
* ``ties``:            delta_i trimmed to its top ``density`` share by magnitude; the sign
                       of sum_i e_i is elected per entry (an exact tie elects +, as mergekit);
                       entries of e_i that agree are summed and, with ``normalize``
                       (default), divided by the summed weights of the agreeing sources
                       (the disjoint mean). Zero entries never agree.
* ``dare_linear``:     delta_i entries dropped with probability 1 - density and the kept
                       ones rescaled by 1/density (the DARE paper), then task arithmetic.
* ``dare_ties``:       the DARE drop-and-rescale, then TIES' sign election and disjoint sum.

``rescale="l1"`` instead rescales each dropped delta to its original L1 norm, which is
what mergekit does for DARE; recipes read from mergekit configs use it.
The work streams over chunks that fit in cache, so memory stays at a few copies of one tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from evovlm.merge.sparsify import MagnitudeTrimmer, dare_keep_mask, magnitude_cut

CHUNK_ELEMENTS = 1 << 18  # 1 MiB of fp32: the per-chunk working set stays in L2 cache


def _chunk_bounds(numel: int) -> Iterator[tuple[int, int]]:
    for start in range(0, numel, CHUNK_ELEMENTS):
        yield start, min(start + CHUNK_ELEMENTS, numel)


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1)


def _check_inputs(base: torch.Tensor | None, sources: Sequence[torch.Tensor], weights: Sequence[float],
                  densities: Sequence[float] | None) -> None:
    if not sources:
        raise ValueError("merge needs at least one source tensor")
    if len(weights) != len(sources) or (densities is not None and len(densities) != len(sources)):
        raise ValueError(f"{len(sources)} sources but {len(weights)} weights / "
                         f"{len(densities) if densities is not None else '-'} densities")
    shape = sources[0].shape if base is None else base.shape
    for tensor in sources:
        if tensor.shape != shape:
            raise ValueError(f"shape mismatch: {tuple(tensor.shape)} vs {tuple(shape)}")


def linear(base: torch.Tensor | None, sources: Sequence[torch.Tensor], weights: Sequence[float],
           densities: Sequence[float] | None = None, *, seeds: Sequence[int] | None = None,
           normalize: bool = True, **_: object) -> torch.Tensor:
    """Weighted average (or weighted sum when ``normalize`` is false) of the sources."""
    _check_inputs(None, sources, weights, None)
    merged = torch.zeros(sources[0].shape, dtype=torch.float32)
    for tensor, weight in zip(sources, weights):
        merged.add_(tensor.float(), alpha=float(weight))
    total = float(sum(weights))
    if normalize and abs(total) > 1e-8:
        merged.div_(total)
    return merged


@dataclass(frozen=True)
class _Plan:
    """How one generalized-task-arithmetic merge sparsifies and combines deltas."""

    sparsify: str | None  # None, "magnitude" or "random"
    consensus: bool
    normalize: bool
    lam: float
    rescale: str | None  # "inverse" (1/density), "l1" (mergekit) or None


def _delta_chunks(base_flat: torch.Tensor, source_flat: torch.Tensor) -> Callable[[], Iterator[torch.Tensor]]:
    def chunks() -> Iterator[torch.Tensor]:
        for start, stop in _chunk_bounds(base_flat.numel()):
            yield source_flat[start:stop].float() - base_flat[start:stop].float()
    return chunks


def _generalized(base: torch.Tensor, sources: Sequence[torch.Tensor], weights: Sequence[float],
                 densities: Sequence[float], seeds: Sequence[int] | None, plan: _Plan) -> torch.Tensor:
    _check_inputs(base, sources, weights, densities)
    numel = base.numel()
    base_flat = _flat(base)
    source_flats = [_flat(tensor) for tensor in sources]

    trimmers: list[MagnitudeTrimmer | None] = [None] * len(sources)
    masks: list[torch.Tensor | None] = [None] * len(sources)
    scales = [1.0] * len(sources)
    for index, density in enumerate(densities):
        if plan.sparsify == "magnitude":
            trimmers[index] = MagnitudeTrimmer(magnitude_cut(_delta_chunks(base_flat, source_flats[index]), numel, density))
        elif plan.sparsify == "random":
            if seeds is None:
                raise ValueError("DARE needs one seed per source")
            masks[index] = dare_keep_mask(numel, density, seeds[index])
            scales[index] = _dare_scale(base_flat, source_flats[index], masks[index], density, plan.rescale)

    merged = torch.empty(numel, dtype=torch.float32)
    for start, stop in _chunk_bounds(numel):
        base_chunk = base_flat[start:stop].float()  # may alias the caller's fp32 base: read only
        agree_sum, weight_sum = _combine_chunk(base_chunk, [s[start:stop] for s in source_flats], start, stop,
                                               trimmers, masks, scales, plan, weights)
        if plan.normalize:
            agree_sum.div_(weight_sum)
        torch.add(base_chunk, agree_sum, alpha=plan.lam, out=merged[start:stop])
    return merged.reshape(base.shape)


def _dare_scale(base_flat: torch.Tensor, source_flat: torch.Tensor, mask: torch.Tensor, density: float,
                rescale: str | None) -> float:
    if rescale is None or density >= 1.0:
        return 1.0
    if rescale == "inverse":
        return 1.0 / density if density > 0 else 0.0
    if rescale == "l1":  # mergekit: restore the L1 norm of the undropped delta
        before = after = 0.0
        for start, stop in _chunk_bounds(base_flat.numel()):
            magnitude = (source_flat[start:stop].float() - base_flat[start:stop].float()).abs_()
            before += float(magnitude.sum(dtype=torch.float64))
            after += float(magnitude.mul_(mask[start:stop]).sum(dtype=torch.float64))
        return before / after if before >= 1e-7 and after >= 1e-7 else 1.0
    raise ValueError(f"unknown rescale {rescale!r}: use 'inverse', 'l1' or None")


def _combine_chunk(base_chunk: torch.Tensor, source_chunks: list[torch.Tensor], start: int, stop: int,
                   trimmers: list[MagnitudeTrimmer | None], masks: list[torch.Tensor | None], scales: list[float],
                   plan: _Plan, weights: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor | float]:
    """Sum of the (agreeing) weighted deltas over one chunk, and the divisor for ``normalize``."""
    weighted = []
    for index, chunk in enumerate(source_chunks):
        delta = chunk.float() - base_chunk  # a new tensor: inputs are never modified
        if trimmers[index] is not None:
            delta = trimmers[index].trim(delta)
        if masks[index] is not None:
            delta.mul_(masks[index][start:stop].view(torch.uint8))  # uint8 multiplies ~3x faster than bool
        delta.mul_(scales[index] * float(weights[index]))
        weighted.append(delta)
    if not plan.consensus:
        total = weighted[0]
        for delta in weighted[1:]:
            total.add_(delta)
        divisor = float(sum(weights))
        return total, divisor if abs(divisor) >= 1e-8 else 1.0
    # Sign election by summed mass (+ on an exact tie, as mergekit). Everything stays in float
    # arithmetic: `elect_positive` is 1.0 where the summed mass is >= 0, else 0.0.
    positive, negative = torch.zeros_like(base_chunk), torch.zeros_like(base_chunk)
    for delta in weighted:
        positive.add_(delta.clamp(min=0.0))
        negative.add_(delta.clamp(max=0.0))
    elect_positive = torch.sign(positive + negative).add_(1.0).clamp_(max=1.0)
    elect_negative = 1.0 - elect_positive
    # Select by 0/1 products, not n + s * (p - n), which would round p - n.
    agree_sum = positive.mul_(elect_positive).add_(negative.mul_(elect_negative))
    if not plan.normalize:
        return agree_sum, 1.0
    positive_weight, negative_weight = torch.zeros_like(base_chunk), torch.zeros_like(base_chunk)
    for delta, weight in zip(weighted, weights):
        signs = torch.sign(delta)
        positive_weight.add_(signs.clamp(min=0.0), alpha=float(weight))
        negative_weight.add_(signs.clamp_(max=0.0), alpha=-float(weight))
    divisor = positive_weight.mul_(elect_positive).add_(negative_weight.mul_(elect_negative))
    return agree_sum, divisor.add_(divisor.eq(0))  # no agreeing source: divide by 1, as mergekit


def _gta(sparsify: str | None, consensus: bool, default_normalize: bool, default_rescale: str | None):
    def method(base: torch.Tensor | None, sources: Sequence[torch.Tensor], weights: Sequence[float],
               densities: Sequence[float] | None = None, *, seeds: Sequence[int] | None = None,
               normalize: bool | None = None, rescale: str | None | bool = "default", lam: float = 1.0,
               **_: object) -> torch.Tensor:
        if base is None:
            raise ValueError("this method needs a base model (task vectors are taken against it)")
        plan = _Plan(sparsify=sparsify, consensus=consensus,
                     normalize=default_normalize if normalize is None else bool(normalize), lam=float(lam),
                     rescale=default_rescale if rescale == "default" else (None if rescale is False else rescale))
        return _generalized(base, sources, weights, densities if densities is not None else [1.0] * len(sources),
                            seeds, plan)
    return method


task_arithmetic = _gta(sparsify=None, consensus=False, default_normalize=False, default_rescale=None)
ties = _gta(sparsify="magnitude", consensus=True, default_normalize=True, default_rescale=None)
dare_linear = _gta(sparsify="random", consensus=False, default_normalize=False, default_rescale="inverse")
dare_ties = _gta(sparsify="random", consensus=True, default_normalize=False, default_rescale="inverse")


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable[..., torch.Tensor]
    needs_base: bool
    uses_density: bool
    random: bool
    summary: str


METHODS: dict[str, MergeMethod] = {
    method.name: method
    for method in (
        MergeMethod("linear", linear, False, False, False, "weighted average of the sources"),
        MergeMethod("task_arithmetic", task_arithmetic, True, False, False, "base + lambda * sum of weighted task vectors"),
        MergeMethod("ties", ties, True, True, False, "trim by magnitude, elect sign, disjoint mean"),
        MergeMethod("dare_linear", dare_linear, True, True, True, "DARE drop-and-rescale, then task arithmetic"),
        MergeMethod("dare_ties", dare_ties, True, True, True, "DARE drop-and-rescale, then TIES sign election"),
    )
}
# Spellings people use for the same methods.
ALIASES = {"dare": "dare_linear", "dare-linear": "dare_linear", "dare-ties": "dare_ties",
           "task-arithmetic": "task_arithmetic"}


def get_method(name: str) -> MergeMethod:
    key = ALIASES.get(name, name)
    if key not in METHODS:
        raise KeyError(f"unknown merge method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[key]
