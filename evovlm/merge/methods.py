"""Merge methods: pure functions on tensors, kept in a registry.

Every method has one signature::

    fn(base, sources, weights, densities, *, seeds=None, out=None, **options) -> tensor

The result is fp32, or written into ``out`` (a float tensor of the result's shape, e.g. the
bf16 parameter of a live model or an output buffer), rounded once from the fp32 values.

``base`` is the shared ancestor (``None`` only for ``linear``), ``sources`` the
fine-tuned tensors, ``weights``/``densities`` one float per source (the engine resolves
per-layer-group values before calling), ``seeds`` one int per source for DARE, or that
seed's :class:`~evovlm.merge.sparsify.DareDraws` already drawn (held across candidates).

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
The work streams over chunks that fit in a CPU's cache (on a GPU, larger chunks: fewer kernel
launches), so memory stays at a few copies of one chunk.

Device: the maths runs where the inputs are (``base``, else the first source); every input
must be on that device, and the result (a new tensor, or ``out``) is there too. So sources
resident on a GPU are merged on it, straight into a live GPU model. DARE's draws are made on
the CPU (one PCG64 stream per tensor, so a mask never depends on the device); the mask is moved
once, or the caller holds the draws on the device across candidates (``seeds`` as draws).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterator, Sequence

import torch

from evovlm.merge.sparsify import DareDraws, MagnitudeTrimmer, dare_keep_mask, delta_cut

CHUNK_ELEMENTS = 1 << 18  # 1 MiB of fp32: the per-chunk working set stays in a CPU's L2 cache
# On a GPU, small chunks cost a kernel launch each (a 7B merge would be ~30,000 chunks x ~20 kernels),
# while its memory easily holds a few fp32 copies of 64 MiB. Chunking never changes a result.
ACCELERATOR_CHUNK_ELEMENTS = 1 << 24


def _chunk_bounds(numel: int, device: torch.device = torch.device("cpu")) -> Iterator[tuple[int, int]]:
    step = CHUNK_ELEMENTS if device.type == "cpu" else ACCELERATOR_CHUNK_ELEMENTS
    for start in range(0, numel, step):
        yield start, min(start + step, numel)


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1)


def _check_inputs(base: torch.Tensor | None, sources: Sequence[torch.Tensor], weights: Sequence[float],
                  densities: Sequence[float] | None) -> torch.device:
    """The device the merge runs on, once the inputs are known to fit together."""
    if not sources:
        raise ValueError("merge needs at least one source tensor")
    if len(weights) != len(sources) or (densities is not None and len(densities) != len(sources)):
        raise ValueError(f"{len(sources)} sources but {len(weights)} weights / "
                         f"{len(densities) if densities is not None else '-'} densities")
    first = sources[0] if base is None else base
    for tensor in sources:
        if tensor.shape != first.shape:
            raise ValueError(f"shape mismatch: {tuple(tensor.shape)} vs {tuple(first.shape)}")
        if tensor.device != first.device:
            raise ValueError(f"inputs on different devices: {tensor.device} and {first.device}")
    return first.device


def linear(base: torch.Tensor | None, sources: Sequence[torch.Tensor], weights: Sequence[float],
           densities: Sequence[float] | None = None, *, seeds: Sequence[int] | None = None,
           normalize: bool = True, out: torch.Tensor | None = None, **_: object) -> torch.Tensor:
    """Weighted average (or weighted sum when ``normalize`` is false) of the sources."""
    device = _check_inputs(None, sources, weights, None)
    merged = torch.zeros(sources[0].shape, dtype=torch.float32, device=device)
    for tensor, weight in zip(sources, weights):
        merged.add_(tensor.float(), alpha=float(weight))
    total = float(sum(weights))
    if normalize and abs(total) > 1e-8:
        merged.div_(total)
    return merged if out is None else _output(out, merged.shape, device).copy_(merged)


@dataclass(frozen=True)
class _Plan:
    """How one generalized-task-arithmetic merge sparsifies and combines deltas."""

    sparsify: str | None  # None, "magnitude" or "random"
    consensus: bool
    normalize: bool
    lam: float
    rescale: str | None  # "inverse" (1/density), "l1" (mergekit) or None


class _Workspace:
    """Chunk-sized buffers, reused for every chunk of a tensor.

    Allocating a fresh buffer per operation and chunk made the allocator hand memory back
    to the kernel and fault it in again, which cost more than the arithmetic.
    """

    def __init__(self, sources: int, size: int, consensus: bool, device: torch.device) -> None:
        self.deltas = torch.empty(sources, size, device=device)
        self.base, self.total = torch.empty(size, device=device), torch.empty(size, device=device)
        if consensus:  # 0/1 masks are kept as floats: ops that mix in bool tensors run ~3x slower
            self.sign, self.agree, self.product, self.agrees = (torch.empty(size, device=device) for _ in range(4))


def _generalized(base: torch.Tensor, sources: Sequence[torch.Tensor], weights: Sequence[float],
                 densities: Sequence[float], seeds: Sequence[int | DareDraws] | None, plan: _Plan,
                 out: torch.Tensor | None) -> torch.Tensor:
    device = _check_inputs(base, sources, weights, densities)
    numel = base.numel()
    base_flat = _flat(base)
    source_flats = [_flat(tensor) for tensor in sources]

    trimmers: list[MagnitudeTrimmer | None] = [None] * len(sources)
    masks: list[torch.Tensor | None] = [None] * len(sources)
    scales = [1.0] * len(sources)
    for index, density in enumerate(densities):
        if plan.sparsify == "magnitude":
            trimmers[index] = MagnitudeTrimmer(delta_cut(base_flat, source_flats[index], density))
        elif plan.sparsify == "random":
            if seeds is None:
                raise ValueError("DARE needs one seed per source")
            seed = seeds[index]  # held draws (on the device already), or a seed to draw on the CPU (no draws at an
            # edge density); the 1-byte mask travels, not the draws
            mask = seed.keep_mask(density) if isinstance(seed, DareDraws) else dare_keep_mask(numel, density, seed)
            masks[index] = mask.to(device)
            scales[index] = _dare_scale(base_flat, source_flats[index], masks[index], density, plan.rescale)

    merged = _output(out, base.shape, device)
    merged_flat = merged.view(-1)
    bounds = list(_chunk_bounds(numel, device))
    work = _Workspace(len(sources), bounds[0][1] if bounds else 0, plan.consensus, device)
    for start, stop in bounds:
        size = stop - start
        base_chunk = work.base[:size].copy_(base_flat[start:stop])
        deltas = work.deltas[:, :size]
        for index, source_flat in enumerate(source_flats):
            delta = deltas[index].copy_(source_flat[start:stop]).sub_(base_chunk)  # faster than a mixed-dtype sub
            if trimmers[index] is not None:
                trimmers[index].trim_(delta)
            if masks[index] is not None:
                delta.mul_(masks[index][start:stop].view(torch.uint8))  # uint8 multiplies ~3x faster than bool
            delta.mul_(scales[index] * float(weights[index]))
        if plan.consensus:
            agree_sum, divisor = _elect_and_sum(work, size, deltas, weights, plan.normalize)
        else:
            agree_sum, divisor = _plain_sum(work, size, deltas, weights)
        if plan.normalize:
            agree_sum.div_(divisor)
        torch.add(base_chunk, agree_sum, alpha=plan.lam, out=merged_flat[start:stop])
    return merged


def _output(out: torch.Tensor | None, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Where a method writes its result: ``out`` (any float dtype: values are rounded once) or new fp32."""
    if out is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    if out.shape != shape or not out.is_floating_point() or not out.is_contiguous() or out.device != device:
        raise ValueError(f"out must be a contiguous float tensor of shape {tuple(shape)} on {device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    return out


def _dare_scale(base_flat: torch.Tensor, source_flat: torch.Tensor, mask: torch.Tensor, density: float,
                rescale: str | None) -> float:
    if rescale is None or density >= 1.0:
        return 1.0
    if rescale == "inverse":
        return 1.0 / density if density > 0 else 0.0
    if rescale == "l1":  # mergekit: restore the L1 norm of the undropped delta
        before = after = 0.0
        for start, stop in _chunk_bounds(base_flat.numel(), base_flat.device):
            magnitude = (source_flat[start:stop].float() - base_flat[start:stop].float()).abs_()
            before += float(magnitude.sum(dtype=torch.float64))
            after += float(magnitude.mul_(mask[start:stop]).sum(dtype=torch.float64))
        return before / after if before >= 1e-7 and after >= 1e-7 else 1.0
    raise ValueError(f"unknown rescale {rescale!r}: use 'inverse', 'l1' or None")


def _sum_into(total: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """sum_i e_i, added in source order (the same rounding wherever it is used)."""
    total.copy_(deltas[0])
    for delta in deltas[1:]:
        total.add_(delta)
    return total


def _plain_sum(work: _Workspace, size: int, deltas: torch.Tensor,
               weights: Sequence[float]) -> tuple[torch.Tensor, float]:
    """Sum of the weighted deltas over one chunk, and the divisor for ``normalize``."""
    total = _sum_into(work.total[:size], deltas)
    divisor = float(sum(weights))
    return total, divisor if abs(divisor) >= 1e-8 else 1.0


def _elect_and_sum(work: _Workspace, size: int, deltas: torch.Tensor, weights: Sequence[float],
                   normalize: bool) -> tuple[torch.Tensor, torch.Tensor | float]:
    """TIES over one chunk: sum of the weighted deltas that agree with the elected sign, and the divisor.

    The elected sign is that of sum_i e_i (+ on an exact tie), as in mergekit. Every step
    writes into the workspace.
    """
    total, sign, product, agree_sum = work.total[:size], work.sign[:size], work.product[:size], work.agree[:size]
    agrees = work.agrees[:size]
    _sum_into(total, deltas)
    torch.ge(total, 0.0, out=sign).mul_(2.0).sub_(1.0)  # +1 / -1
    agree_sum.zero_()
    divisor = total.zero_() if normalize else None  # summed weights of the sources that agree
    for delta, weight in zip(deltas, weights):
        torch.gt(torch.mul(delta, sign, out=product), 0.0, out=agrees)  # 1.0: nonzero, with the elected sign
        agree_sum.addcmul_(delta, agrees)
        if divisor is not None:
            divisor.add_(agrees, alpha=float(weight))
    if divisor is None:
        return agree_sum, 1.0
    return agree_sum, divisor.add_(torch.eq(divisor, 0.0, out=agrees))  # no agreeing source: divide by 1, as mergekit


class Default(Enum):
    """The method's own choice for an option the caller leaves unset (``None`` already means "no
    rescaling", so it cannot also mean "unset")."""

    CHOICE = "the method's default"


def _gta(*, sparsify: str | None, consensus: bool, default_normalize: bool, default_rescale: str | None):
    def method(base: torch.Tensor | None, sources: Sequence[torch.Tensor], weights: Sequence[float],
               densities: Sequence[float] | None = None, *, seeds: Sequence[int | DareDraws] | None = None,
               normalize: bool | None = None, rescale: str | None | bool | Default = Default.CHOICE,
               lam: float = 1.0, out: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        if base is None:
            raise ValueError("this method needs a base model (task vectors are taken against it)")
        if rescale is Default.CHOICE:
            rescale = default_rescale
        plan = _Plan(sparsify=sparsify, consensus=consensus,
                     normalize=default_normalize if normalize is None else bool(normalize), lam=float(lam),
                     rescale=None if rescale is False else rescale)
        return _generalized(base, sources, weights, densities if densities is not None else [1.0] * len(sources),
                            seeds, plan, out)
    return method


task_arithmetic = _gta(sparsify=None, consensus=False, default_normalize=False, default_rescale=None)
ties = _gta(sparsify="magnitude", consensus=True, default_normalize=True, default_rescale=None)
dare_linear = _gta(sparsify="random", consensus=False, default_normalize=False, default_rescale="inverse")
dare_ties = _gta(sparsify="random", consensus=True, default_normalize=False, default_rescale="inverse")


@dataclass(frozen=True, kw_only=True)
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
        MergeMethod(name="linear", fn=linear, needs_base=False, uses_density=False, random=False,
                    summary="weighted average of the sources"),
        MergeMethod(name="task_arithmetic", fn=task_arithmetic, needs_base=True, uses_density=False, random=False,
                    summary="base + lambda * sum of weighted task vectors"),
        MergeMethod(name="ties", fn=ties, needs_base=True, uses_density=True, random=False,
                    summary="trim by magnitude, elect sign, disjoint mean"),
        MergeMethod(name="dare_linear", fn=dare_linear, needs_base=True, uses_density=True, random=True,
                    summary="DARE drop-and-rescale, then task arithmetic"),
        MergeMethod(name="dare_ties", fn=dare_ties, needs_base=True, uses_density=True, random=True,
                    summary="DARE drop-and-rescale, then TIES sign election"),
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
