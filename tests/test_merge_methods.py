"""Merge methods against hand-computed tensors, the exact radix-select threshold, DARE statistics.

Every expected tensor below is a literal, derived by hand in the comment above it.
Notation: d_i = source_i - base (the task vector), e_i = w_i * d_i (after sparsification).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evovlm.merge import methods
from evovlm.merge.methods import ALIASES, CHUNK_ELEMENTS, METHODS, get_method
from evovlm.merge.sparsify import (
    KEEP_ALL,
    KEEP_NONE,
    bf16_delta_cut,
    dare_keep_mask,
    magnitude_cut,
    tensor_seed,
)


def _isolated(fn):
    """Call a merge method on private copies of its inputs, so that one hand-computed case cannot
    leak into the next even if a method wrote into its inputs (test_methods_do_not_modify_their_inputs
    checks that none does)."""
    def call(base, sources, *args, **kwargs):
        return fn(None if base is None else base.clone(), [s.clone() for s in sources], *args, **kwargs)
    return call


linear = _isolated(methods.linear)
task_arithmetic = _isolated(methods.task_arithmetic)
ties = _isolated(methods.ties)
dare_linear = _isolated(methods.dare_linear)
dare_ties = _isolated(methods.dare_ties)
FNS = {"linear": linear, "task_arithmetic": task_arithmetic, "ties": ties, "dare_linear": dare_linear,
       "dare_ties": dare_ties}


def T(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-6) -> None:
    assert actual.dtype == torch.float32
    assert actual.shape == expected.shape
    assert not torch.isnan(actual).any()
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

def test_registry_lists_the_five_methods_with_their_properties():
    assert set(METHODS) == {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"}
    assert [name for name, m in METHODS.items() if m.needs_base] == ["task_arithmetic", "ties", "dare_linear",
                                                                     "dare_ties"]
    assert {name for name, m in METHODS.items() if m.uses_density} == {"ties", "dare_linear", "dare_ties"}
    assert {name for name, m in METHODS.items() if m.random} == {"dare_linear", "dare_ties"}
    for alias, name in ALIASES.items():
        assert get_method(alias) is METHODS[name]
    assert get_method("dare-ties").name == "dare_ties"
    with pytest.raises(KeyError, match="unknown merge method 'slerp'"):
        get_method("slerp")


@pytest.mark.parametrize("name", ["task_arithmetic", "ties", "dare_linear", "dare_ties"])
def test_methods_with_a_base_refuse_none(name):
    with pytest.raises(ValueError, match="base"):
        FNS[name](None, [T(1, 2)], [1.0], [1.0], seeds=[0])


def test_shape_and_count_mismatches_are_rejected():
    with pytest.raises(ValueError, match="shape mismatch"):
        ties(T(0, 0, 0), [T(1, 2)], [1.0], [1.0])
    with pytest.raises(ValueError, match="weights"):
        task_arithmetic(T(0, 0), [T(1, 2), T(3, 4)], [1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="at least one source"):
        linear(None, [], [])


# --------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------

def A() -> torch.Tensor:
    return T(1, 2, 3, 4)


def B() -> torch.Tensor:
    return T(3, 2, 1, 0)


def test_linear_normalized_weighted_average():
    # (1*A + 3*B) / (1 + 3) = ([1,2,3,4] + [9,6,3,0]) / 4 = [10,8,6,4] / 4
    close(linear(None, [A(), B()], [1.0, 3.0]), T(2.5, 2.0, 1.5, 1.0))
    # the default is normalize=True; a base, if given, plays no part
    close(linear(T(100, 100, 100, 100), [A(), B()], [1.0, 3.0], normalize=True), T(2.5, 2.0, 1.5, 1.0))


def test_linear_without_normalize_is_the_weighted_sum():
    # 1*A + 3*B = [1+9, 2+6, 3+3, 4+0]
    close(linear(None, [A(), B()], [1.0, 3.0], normalize=False), T(10, 8, 6, 4))
    # weights 0.25/0.25 sum to 0.5: un-normalized = 0.25*(A+B) = 0.25*[4,4,4,4]
    close(linear(None, [A(), B()], [0.25, 0.25], normalize=False), T(1, 1, 1, 1))
    # ... normalized it is the plain mean (A+B)/2 = [2,2,2,2]
    close(linear(None, [A(), B()], [0.25, 0.25]), T(2, 2, 2, 2))


def test_linear_returns_fp32_from_bf16_inputs_and_zero_weight_sum_does_not_divide():
    out = linear(None, [A().bfloat16(), B().bfloat16()], [1.0, 3.0])
    close(out, T(2.5, 2.0, 1.5, 1.0))
    # weights 1 and -1 sum to 0: no division by zero, the weighted sum A - B = [-2, 0, 2, 4]
    close(linear(None, [A(), B()], [1.0, -1.0]), T(-2, 0, 2, 4))


# --------------------------------------------------------------------------------------
# task_arithmetic
# --------------------------------------------------------------------------------------

def BASE1() -> torch.Tensor:
    return T(1, 1, 1, 1)


def S12() -> list[torch.Tensor]:
    return [T(2, 0, 1, 3),  # d1 = [ 1, -1,  0, 2]
            T(1, 3, 0, 1)]  # d2 = [ 0,  2, -1, 0]
# with w = [1, 0.5]: e1 + e2 = [1, -1 + 1, -0.5, 2] = [1, 0, -0.5, 2]


def test_task_arithmetic_lambda_one():
    # base + [1, 0, -0.5, 2]
    close(task_arithmetic(BASE1(), S12(), [1.0, 0.5]), T(2, 1, 0.5, 3))


def test_task_arithmetic_lambda_scales_the_summed_task_vector():
    # base + 0.5 * [1, 0, -0.5, 2] = 1 + [0.5, 0, -0.25, 1]
    close(task_arithmetic(BASE1(), S12(), [1.0, 0.5], lam=0.5), T(1.5, 1, 0.75, 2))


def test_task_arithmetic_normalize_divides_by_summed_weights():
    # sum w = 1.5: [1, 0, -0.5, 2] / 1.5 = [2/3, 0, -1/3, 4/3]; base + that:
    close(task_arithmetic(BASE1(), S12(), [1.0, 0.5], normalize=True), T(5 / 3, 1, 2 / 3, 7 / 3))
    # lambda applies after the division: 1 + 2 * [2/3, 0, -1/3, 4/3]
    close(task_arithmetic(BASE1(), S12(), [1.0, 0.5], normalize=True, lam=2.0), T(7 / 3, 1, 1 / 3, 11 / 3))
    # normalize=False is the default
    close(task_arithmetic(BASE1(), S12(), [1.0, 0.5], normalize=False), T(2, 1, 0.5, 3))


def test_task_arithmetic_density_is_ignored():
    close(task_arithmetic(BASE1(), S12(), [1.0, 0.5], [0.1, 0.1]), T(2, 1, 0.5, 3))


# --------------------------------------------------------------------------------------
# ties
# --------------------------------------------------------------------------------------

def test_ties_trims_each_delta_to_its_top_density_share_by_magnitude():
    base = T(1, 2, 3, 4)
    source = base + T(0.1, -3, 2, -0.5)
    # density 0.5 of 4 entries keeps the 2 largest |d|: -3 and 2 -> d = [0, -3, 2, 0];
    # one source always agrees with itself; normalize divides by its weight 1.
    close(ties(base, [source], [1.0], [0.5]), base + T(0, -3, 2, 0))
    # weight 2, normalize=False: 2 * [0, -3, 2, 0]
    close(ties(base, [source], [2.0], [0.5], normalize=False), base + T(0, -6, 4, 0))
    # weight 2, normalize (the default): 2 * d / 2
    close(ties(base, [source], [2.0], [0.5]), base + T(0, -3, 2, 0))
    # density 0.25 keeps only the largest, -3
    close(ties(base, [source], [1.0], [0.25]), base + T(0, -3, 0, 0))
    # density 0.2: floor(0.2 * 4) = 0 entries kept -> the base itself
    close(ties(base, [source], [1.0], [0.2]), base)


def test_ties_trimming_keeps_exactly_k_breaking_magnitude_ties_in_flat_order():
    base = torch.zeros(4)
    # d = [3, -1, 1, 0.5], density 0.5 -> k = 2: 3, then of the two entries with |d| = 1 (the 2nd largest)
    # only the first in flat order -> [3, -1, 0, 0]
    close(ties(base, [T(3, -1, 1, 0.5)], [1.0], [0.5], normalize=False), T(3, -1, 0, 0))
    # density 0.75 -> k = 3: both tied entries fit -> [3, -1, 1, 0]
    close(ties(base, [T(3, -1, 1, 0.5)], [1.0], [0.75], normalize=False), T(3, -1, 1, 0))
    # d = [1, -1, 1, -1, 2, 1], density 0.5 -> k = 3: 2, then the first two of the five |d| = 1 entries
    close(ties(torch.zeros(6), [T(1, -1, 1, -1, 2, 1)], [1.0], [0.5], normalize=False), T(1, -1, 0, 0, 2, 0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ties_tie_breaking_carries_over_chunk_boundaries(dtype, small_chunks):
    # 2500 entries of magnitude 1 (bf16 fine-tunes tie like this) and one 5 near the end, in 1000-entry chunks.
    # density 0.5 -> k = 1250: the 5, then the first 1249 of the ties in flat order (indices 0..1248).
    numel = 2500
    delta = torch.ones(numel)
    delta[1::2] = -1
    delta[2400] = 5
    expected = torch.zeros(numel)
    expected[:1249] = delta[:1249]
    expected[2400] = 5
    out = ties(torch.zeros(numel, dtype=dtype), [delta.to(dtype)], [1.0], [0.5], normalize=False)
    assert int((out != 0).sum()) == 1250
    assert torch.equal(out, expected)


def test_ties_trimming_happens_before_the_sign_election():
    base = torch.zeros(4)
    d1 = T(4, -1, 0.5, -2)  # density 0.5 keeps 4 and -2     -> [4, 0, 0, -2]
    d2 = T(-1, 3, -0.25, 1)  # density 0.5 keeps 3 and 1     -> [0, 3, 0, 1]
    # sum = [4, 3, 0, -1] -> elected [+, +, +(tie), -]
    # entry 0: 4 agrees (d2 is trimmed to 0: zeros never agree) -> 4 / 1
    # entry 1: 3 -> 3 / 1; entry 2: nothing left -> 0; entry 3: -2 agrees, +1 does not -> -2 / 1
    close(ties(base, [d1, d2], [1.0, 1.0], [0.5, 0.5]), T(4, 3, 0, -2))
    # untrimmed (density 1): entry 2 has 0.5 vs -0.25, sum 0.25 -> + -> 0.5 survives
    close(ties(base, [d1, d2], [1.0, 1.0], [1.0, 1.0]), T(4, 3, 0.5, -2))


def test_ties_sign_election_by_summed_mass_and_disjoint_mean():
    base = T(1, 2, 3, 4)
    d1 = T(1, 1, -2, 4)
    d2 = T(-3, 2, 1, -1)
    sources = [base + d1, base + d2]
    # sum = [-2, 3, -1, 3] -> elected [-, +, -, +]  (mass, not count: entry 0 has one + and one -)
    # entry 0: only -3 agrees                      -> -3 / 1 = -3
    # entry 1: 1 and 2 agree                       ->  3 / 2 = 1.5
    # entry 2: only -2 agrees                      -> -2 / 1 = -2
    # entry 3: only 4 agrees                       ->  4 / 1 = 4
    close(ties(base, sources, [1.0, 1.0], [1.0, 1.0]), base + T(-3, 1.5, -2, 4))
    # normalize=False: the agreeing entries are summed, not averaged
    close(ties(base, sources, [1.0, 1.0], [1.0, 1.0], normalize=False), base + T(-3, 3, -2, 4))
    # lambda scales the merged delta: 0.5 * [-3, 1.5, -2, 4]
    close(ties(base, sources, [1.0, 1.0], [1.0, 1.0], lam=0.5), base + T(-1.5, 0.75, -1, 2))


def test_ties_sign_election_uses_the_weighted_mass():
    base = T(10, 10, 10, 10)
    d1 = T(1, -1, 0.5, 0)
    d2 = T(-1.5, 1, 0.5, 2)
    sources = [base + d1, base + d2]
    # w = [2, 1]: e1 = [2, -2, 1, 0], e2 = [-1.5, 1, 0.5, 2]
    # sum e = [0.5, -1, 1.5, 2] -> elected [+, -, +, +]   (unweighted d1 + d2 = [-0.5, 0, 1, 2] would elect
    #                                                       [-, +, +, +]: the weights decide entries 0 and 1)
    # entry 0: e1 = 2 agrees      -> 2 / w1 = 2 / 2 = 1
    # entry 1: e1 = -2 agrees     -> -2 / 2 = -1
    # entry 2: both agree         -> 1.5 / (2 + 1) = 0.5
    # entry 3: e1 = 0 never agrees, e2 = 2 -> 2 / 1 = 2
    close(ties(base, sources, [2.0, 1.0], [1.0, 1.0]), base + T(1, -1, 0.5, 2))
    # normalize=False: [2, -2, 1.5, 2]
    close(ties(base, sources, [2.0, 1.0], [1.0, 1.0], normalize=False), base + T(2, -2, 1.5, 2))


def test_ties_exact_tie_in_the_sign_election_elects_plus_like_mergekit():
    base = torch.zeros(4)
    # e sums to exactly 0 everywhere -> + is elected; the last entry is zero in both: nothing agrees
    d1 = T(1, -2, 3, 0)
    d2 = T(-1, 2, -3, 0)
    close(ties(base, [d1, d2], [1.0, 1.0], [1.0, 1.0]), T(1, 2, 3, 0))
    close(ties(base, [d1, d2], [1.0, 1.0], [1.0, 1.0], normalize=False), T(1, 2, 3, 0))
    # weighted tie: w = [1, 2], d1 = [1, 2, -3, 0.5], d2 = [-1, -1, 1.5, -0.5]
    # e1 = [1, 2, -3, 0.5], e2 = [-2, -2, 3, -1]; sum = [-1, 0, 0, -0.5] -> [-, +, +, -]
    # entry 0: e2 = -2 -> -2 / 2 = -1;  entry 1 (tie): e1 = 2 -> 2 / 1 = 2
    # entry 2 (tie): e2 = 3 -> 3 / 2 = 1.5;  entry 3: e2 = -1 -> -1 / 2 = -0.5
    d1 = T(1, 2, -3, 0.5)
    d2 = T(-1, -1, 1.5, -0.5)
    close(ties(base, [d1, d2], [1.0, 2.0], [1.0, 1.0]), T(-1, 2, 1.5, -0.5))
    close(ties(base, [d1, d2], [1.0, 2.0], [1.0, 1.0], normalize=False), T(-2, 2, 3, -1))


@pytest.mark.parametrize("name", ["ties", "dare_ties", "task_arithmetic", "dare_linear"])
@pytest.mark.parametrize("normalize", [True, False])
def test_all_zero_deltas_give_the_base_without_nan(name, normalize):
    base = T(1, -2, 3, 0.5, 0, -0.25)
    out = FNS[name](base, [base.clone(), base.clone()], [1.0, 0.5], [0.5, 0.5], seeds=[1, 2],
                           normalize=normalize)
    assert not torch.isnan(out).any()
    assert torch.equal(out, base)


# --------------------------------------------------------------------------------------
# DARE
# --------------------------------------------------------------------------------------

def reference_keep_mask(numel: int, density: float, seed: int) -> torch.Tensor:
    """The documented DARE mask, written independently of sparsify.py with Python integers.

    PCG64(seed) gives 64-bit words; each word holds four 16-bit draws, low bits first; entry i is
    kept when its draw is below round(density * 65536) (the keep probability in 1/65536 steps).
    """
    words = np.random.PCG64(seed).random_raw((numel + 3) // 4)
    draws = [(int(word) >> (16 * lane)) & 0xFFFF for word in words for lane in range(4)][:numel]
    threshold = round(density * 65536)
    return torch.tensor([draw < threshold for draw in draws], dtype=torch.bool)


# The keep-masks are a pure function of (numel, density, seed); these two are used below.
MASK_SEED3 = [False, False, True, True, False, True, False, True]  # reference_keep_mask(8, 0.5, 3)
MASK_SEED11 = [False, True, False, True, True, False, False, True]  # reference_keep_mask(8, 0.5, 11)
def BASE8() -> torch.Tensor:
    return torch.ones(8)


def D1() -> torch.Tensor:
    return T(1, 2, 3, 4, -1, -2, -3, -4)


def D2() -> torch.Tensor:
    return T(2, -2, 2, -2, 2, -2, 2, -2)


def test_dare_masks_used_below_are_stable():
    assert reference_keep_mask(8, 0.5, 3).tolist() == MASK_SEED3
    assert reference_keep_mask(8, 0.5, 11).tolist() == MASK_SEED11
    assert dare_keep_mask(8, 0.5, 3).tolist() == MASK_SEED3
    assert dare_keep_mask(8, 0.5, 11).tolist() == MASK_SEED11


@pytest.mark.parametrize("numel", [1, 3, 4, 5, 1001])
@pytest.mark.parametrize("density", [0.0, 1 / 65536, 0.3, 0.5, 0.999, 1.0])
def test_dare_keep_mask_equals_the_independent_reference(numel, density):
    assert torch.equal(dare_keep_mask(numel, density, seed=77), reference_keep_mask(numel, density, 77))


def test_dare_linear_hand_computed():
    # source 1 (seed 3, density 0.5, weight 0.5): kept d1 = [0,0,3,4,0,-2,0,-4], / 0.5 -> [0,0,6,8,0,-4,0,-8],
    #                                              * 0.5 -> e1 = [0,0,3,4,0,-2,0,-4]
    close(dare_linear(BASE8(), [BASE8() + D1()], [0.5], [0.5], seeds=[3]), BASE8() + T(0, 0, 3, 4, 0, -2, 0, -4))
    # source 2 (seed 11, density 0.5, weight 1): kept d2 = [0,-2,0,-2,2,0,0,-2], / 0.5 -> e2 = [0,-4,0,-4,4,0,0,-4]
    # e1 + e2 = [0,-4,3,0,4,-2,0,-8]
    sources = [BASE8() + D1(), BASE8() + D2()]
    close(dare_linear(BASE8(), sources, [0.5, 1.0], [0.5, 0.5], seeds=[3, 11]), BASE8() + T(0, -4, 3, 0, 4, -2, 0, -8))
    # normalize: / (0.5 + 1) -> [0, -8/3, 2, 0, 8/3, -4/3, 0, -16/3]
    close(dare_linear(BASE8(), sources, [0.5, 1.0], [0.5, 0.5], seeds=[3, 11], normalize=True),
          BASE8() + T(0, -8 / 3, 2, 0, 8 / 3, -4 / 3, 0, -16 / 3))
    # lambda 0.5 halves the sum
    close(dare_linear(BASE8(), sources, [0.5, 1.0], [0.5, 0.5], seeds=[3, 11], lam=0.5),
          BASE8() + T(0, -2, 1.5, 0, 2, -1, 0, -4))


def test_dare_ties_hand_computed():
    sources = [BASE8() + D1(), BASE8() + D2()]
    # e1 = [0,0,3,4,0,-2,0,-4], e2 = [0,-4,0,-4,4,0,0,-4] (see test_dare_linear_hand_computed)
    # sum = [0,-4,3,0,4,-2,0,-8] -> elected [+,-,+,+(tie),+,-,+,-]
    # agreeing: [none, e2=-4, e1=3, e1=4 (the tie elects +), e2=4, e1=-2, none, e1+e2=-8]
    # normalize=False (dare_ties' default): [0,-4,3,4,4,-2,0,-8]
    close(dare_ties(BASE8(), sources, [0.5, 1.0], [0.5, 0.5], seeds=[3, 11]), BASE8() + T(0, -4, 3, 4, 4, -2, 0, -8))
    # normalize=True divides by the agreeing weights: [-, 1, 0.5, 0.5, 1, 0.5, -, 1.5]
    # -> [0, -4, 6, 8, 4, -4, 0, -16/3]
    close(dare_ties(BASE8(), sources, [0.5, 1.0], [0.5, 0.5], seeds=[3, 11], normalize=True),
          BASE8() + T(0, -4, 6, 8, 4, -4, 0, -16 / 3))


def test_dare_l1_rescale_hand_computed():
    # ||d1||_1 = 1+2+3+4+1+2+3+4 = 20; kept (seed 3) = [0,0,3,4,0,-2,0,-4] with L1 13 -> scaled by 20/13
    out = dare_linear(BASE8(), [BASE8() + D1()], [1.0], [0.5], seeds=[3], rescale="l1")
    close(out, BASE8() + T(0, 0, 60 / 13, 80 / 13, 0, -40 / 13, 0, -80 / 13), atol=1e-5)
    # rescale=False / None: no rescaling at all
    close(dare_linear(BASE8(), [BASE8() + D1()], [1.0], [0.5], seeds=[3], rescale=False),
          BASE8() + T(0, 0, 3, 4, 0, -2, 0, -4))
    close(dare_linear(BASE8(), [BASE8() + D1()], [1.0], [0.5], seeds=[3], rescale=None),
          BASE8() + T(0, 0, 3, 4, 0, -2, 0, -4))
    with pytest.raises(ValueError, match="rescale"):
        dare_linear(BASE8(), [BASE8() + D1()], [1.0], [0.5], seeds=[3], rescale="l7")


def test_dare_needs_seeds():
    with pytest.raises(ValueError, match="seed"):
        dare_ties(BASE8(), [BASE8() + D1()], [1.0], [0.5])


@pytest.fixture
def small_chunks(monkeypatch):
    """Make the methods stream in chunks of 1000 elements so small tensors span several chunks."""
    monkeypatch.setattr(methods, "CHUNK_ELEMENTS", 1000)
    return 1000


def _random_case(numel: int, count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(numel, generator=generator)
    sources = [base + 0.1 * torch.randn(numel, generator=generator) for _ in range(count)]
    return base, sources


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("rescale", ["default", "inverse", "l1"])
def test_dare_with_density_one_is_exactly_the_non_dare_method(normalize, rescale, small_chunks):
    base, sources = _random_case(3 * small_chunks + 17, 3)  # spans four chunks
    weights = [0.7, -0.2, 0.4]
    ones = [1.0, 1.0, 1.0]
    seeds = [5, 6, 7]
    rescale_kw = {} if rescale == "default" else {"rescale": rescale}
    assert torch.equal(
        dare_linear(base, sources, weights, ones, seeds=seeds, normalize=normalize, lam=0.8, **rescale_kw),
        task_arithmetic(base, sources, weights, ones, normalize=normalize, lam=0.8))
    assert torch.equal(
        dare_ties(base, sources, weights, ones, seeds=seeds, normalize=normalize, lam=0.8, **rescale_kw),
        ties(base, sources, weights, ones, normalize=normalize, lam=0.8))


# --------------------------------------------------------------------------------------
# Independent dense references on tensors spanning several chunks
# --------------------------------------------------------------------------------------

def _reference_gta(base, sources, weights, kept, scales, consensus, normalize, lam):
    deltas = torch.stack([(s.double() - base.double()) * k * sc * w
                          for s, k, sc, w in zip(sources, kept, scales, weights)])
    w = torch.tensor(weights, dtype=torch.float64).unsqueeze(1)
    if consensus:
        sign = torch.where(deltas.sum(0) >= 0, 1.0, -1.0).double()
        agree = torch.sign(deltas) == sign
        mixed = (deltas * agree).sum(0)
        divisor = (w * agree).sum(0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(0)
        divisor = w.sum()
    if normalize:
        mixed = mixed / divisor
    return (base.double() + lam * mixed).float()


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_matches_a_dense_topk_reference_across_chunks(normalize, small_chunks):
    numel = 5 * small_chunks + 321
    base, sources = _random_case(numel, 3, seed=1)
    weights, densities = [1.0, 0.6, 0.3], [0.2, 0.5, 0.9]
    kept = []
    for s, density in zip(sources, densities):
        delta = s - base
        mask = torch.zeros(numel)
        mask[torch.topk(delta.abs(), int(density * numel)).indices] = 1  # random floats: no ties
        kept.append(mask)
    expected = _reference_gta(base, sources, weights, kept, [1.0] * 3, True, normalize, 0.9)
    out = ties(base, sources, weights, densities, normalize=normalize, lam=0.9)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties"])
def test_dare_matches_a_dense_reference_across_chunks(name, small_chunks):
    numel = 4 * small_chunks + 777
    base, sources = _random_case(numel, 2, seed=2)
    weights, densities, seeds = [0.8, 0.5], [0.3, 0.6], [11, 12]
    kept = [reference_keep_mask(numel, d, s).double() for d, s in zip(densities, seeds)]
    expected = _reference_gta(base, sources, weights, kept, [1 / d for d in densities], name == "dare_ties",
                              False, 1.0)
    torch.testing.assert_close(FNS[name](base, sources, weights, densities, seeds=seeds), expected,
                               rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------
# Radix-select magnitude threshold
# --------------------------------------------------------------------------------------

def _nasty_tensor(numel: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Negatives, zeros (+0 and -0), many duplicates, tiny and huge values."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(numel, generator=generator) * 3
    values[torch.rand(numel, generator=generator) < 0.2] = 0.0
    values[torch.rand(numel, generator=generator) < 0.05] = -0.0
    dup = torch.rand(numel, generator=generator) < 0.3
    values[dup] = torch.round(values[dup] * 2) / 2  # many exact duplicates (+-0.5, +-1, ...)
    if numel > 8:
        values[:4] = torch.tensor([1e-40, -1e-40, 3e30, -3e30])  # subnormals and huge magnitudes
        values = values[torch.randperm(numel, generator=generator)]
    return values.to(dtype)


def _sorted_kth(x: torch.Tensor, k: int) -> float:
    return float(torch.sort(x.float().abs().flatten(), descending=True).values[k - 1])


def _kth_largest(chunks, numel: int, k: int) -> float:
    """The k-th largest |x| (1 <= k < numel) as the trim finds it: magnitude_cut at density k / numel."""
    density = k / numel
    if int(density * numel) != k:  # k / numel rounded down: the next float up gives k back
        density = math.nextafter(density, 1.0)
    assert int(density * numel) == k
    return magnitude_cut(chunks, numel, density).threshold


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("numel", [2, 7, 100, 4097, 30_000])
def test_the_radix_select_finds_the_kth_largest_magnitude_as_a_sort_does(numel, dtype):
    x = _nasty_tensor(numel, dtype, seed=numel)
    if dtype == torch.float16:
        x = torch.nan_to_num(x, posinf=6e4, neginf=-6e4)
    ranked = torch.sort(x.float().abs().flatten(), descending=True).values
    generator = torch.Generator().manual_seed(7)
    ks = {1, (numel + 1) // 2, max(1, numel - 1)}
    ks |= set(torch.randint(1, numel, (3,), generator=generator).tolist())
    for k in sorted(ks):
        assert _kth_largest(x, numel, k) == float(ranked[k - 1]), (numel, dtype, k)


def test_the_radix_select_on_a_2d_noncontiguous_tensor():
    x = _nasty_tensor(60 * 70, torch.float32, seed=3).reshape(60, 70).t()
    for k in (1, 5, 2100, 4199):
        assert _kth_largest(x, 4200, k) == _sorted_kth(x, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_radix_select_from_streamed_chunks(dtype):
    x = _nasty_tensor(30_011, dtype, seed=11)
    sizes = [1, 4096, 7, 10_000, 15_907]
    calls = []

    def chunks():
        calls.append(1)
        return iter(torch.split(x, sizes))

    for k in (1, 17, 9_000, 30_010):
        assert _kth_largest(chunks, 30_011, k) == _sorted_kth(x, k)
    assert len(calls) >= 4  # re-iterated for each pass


@pytest.mark.parametrize("density", [0.01, 0.1, 0.33, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_magnitude_cut_keeps_the_top_share(density, dtype):
    numel = 20_000
    x = _nasty_tensor(numel, dtype, seed=int(density * 1000))
    k = math.floor(density * numel)
    threshold = magnitude_cut(x, numel, density).threshold
    assert threshold == _sorted_kth(x, k)
    magnitudes = x.float().abs()
    assert int((magnitudes >= threshold).sum()) >= k  # ties at the threshold are all kept
    assert int((magnitudes > threshold).sum()) < k
    # the streamed form gives the same answer
    assert magnitude_cut(lambda: iter(torch.split(x, 3000)), numel, density).threshold == threshold


def test_magnitude_cut_edges():
    x = T(3, -1, 2, 0.5, 0, -7, 1, 1)
    assert magnitude_cut(x, 8, 1.0).threshold == 0.0  # keep all: |x| >= 0
    assert magnitude_cut(x, 8, 1.5).threshold == 0.0
    assert magnitude_cut(x, 8, 0.1).threshold == math.inf  # floor(0.8) = 0: keep none
    assert magnitude_cut(x, 8, 0.0).threshold == math.inf
    assert magnitude_cut(x, 8, 0.125).threshold == 7.0  # k = 1: |-7|
    assert magnitude_cut(x, 8, 0.5).threshold == 1.0  # k = 4: 7, 3, 2, 1
    assert magnitude_cut(x, 8, 0.75).threshold == 1.0  # k = 6: 7, 3, 2, 1, 1, 1


# --------------------------------------------------------------------------------------
# DARE statistics and determinism
# --------------------------------------------------------------------------------------

N_STAT = 1 << 20


@pytest.mark.parametrize("density", [0.05, 0.3, 0.5, 0.8, 0.95])
def test_dare_keep_rate_is_within_a_few_standard_errors(density):
    mask = dare_keep_mask(N_STAT, density, seed=123)
    assert mask.dtype == torch.bool and mask.shape == (N_STAT,)
    rate = mask.double().mean().item()
    se = math.sqrt(density * (1 - density) / N_STAT)
    assert abs(rate - density) < 5 * se, (rate, density, se)


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_dare_rescale_keeps_the_expectation(density):
    # E[dare(1)] = P(keep) * 1/density = 1: the mean over 1M entries is 1 within 5 standard errors
    out = dare_linear(torch.zeros(N_STAT), [torch.ones(N_STAT)], [1.0], [density], seeds=[99])
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / density))
    se = math.sqrt((1 - density) / density / N_STAT)
    assert abs(out.double().mean().item() - 1.0) < 5 * se


def test_dare_expectation_over_seeds_equals_the_delta():
    delta = T(1, -2, 0.5, 4, -0.25, 3, -1, 2)
    base = torch.zeros(8)
    density, runs = 0.5, 3000
    total = torch.zeros(8, dtype=torch.float64)
    for seed in range(runs):
        total += dare_linear(base, [delta], [1.0], [density], seeds=[seed]).double()
    mean = (total / runs).float()
    # per-entry standard error of the mean: |d| * sqrt((1 - p) / p / runs) = |d| * 0.018
    se = delta.abs() * math.sqrt((1 - density) / density / runs)
    assert torch.all((mean - delta).abs() < 5 * se), (mean, delta)


def test_dare_l1_rescale_restores_the_l1_norm_on_random_tensors(small_chunks):
    base, (source,) = _random_case(20 * small_chunks + 5, 1, seed=4)
    for density in (0.1, 0.5, 0.9):
        out = dare_linear(base, [source], [1.0], [density], seeds=[17], rescale="l1")
        kept = (out.double() - base.double())
        original = (source.double() - base.double())
        assert kept.abs().sum().item() == pytest.approx(original.abs().sum().item(), rel=1e-4)
        # and only about `density` of the entries survive
        assert (kept != 0).double().mean().item() == pytest.approx(density, abs=0.03)


def test_dare_masks_are_deterministic_per_seed():
    first = dare_keep_mask(100_000, 0.3, seed=2024)
    other = dare_keep_mask(100_000, 0.3, seed=2025)
    again = dare_keep_mask(100_000, 0.3, seed=2024)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    base, sources = _random_case(5000, 2, seed=5)
    one = dare_ties(base, sources, [1.0, 0.5], [0.4, 0.4], seeds=[1, 2])
    two = dare_ties(base, sources, [1.0, 0.5], [0.4, 0.4], seeds=[1, 2])
    three = dare_ties(base, sources, [1.0, 0.5], [0.4, 0.4], seeds=[1, 3])
    assert torch.equal(one, two)
    assert not torch.equal(one, three)


def test_dare_mask_edges():
    assert dare_keep_mask(10, 1.0, 0).all()
    assert not dare_keep_mask(10, 0.0, 0).any()
    out = dare_linear(BASE8(), [BASE8() + D1()], [1.0], [0.0], seeds=[3])
    assert torch.equal(out, BASE8())  # density 0 drops everything; no division by zero


def test_tensor_seed_is_a_pure_function_of_seed_name_and_index():
    name = "model.layers.0.mlp.up_proj.weight"
    seed = tensor_seed(0, name, 1)
    assert isinstance(seed, int) and 0 <= seed < 2**64
    assert tensor_seed(0, name, 1) == seed
    assert tensor_seed(1, name, 1) != seed
    assert tensor_seed(0, name, 0) != seed
    assert tensor_seed(0, "model.layers.1.mlp.up_proj.weight", 1) != seed
    # stable across processes (no dependence on Python's randomized str hash or on call order)
    code = ("from evovlm.merge.sparsify import tensor_seed; "
            f"print(tensor_seed(5, 'lm_head.weight', 0)); print(tensor_seed(0, {name!r}, 1))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split() == [str(tensor_seed(5, "lm_head.weight", 0)), str(seed)]


def test_methods_module_has_no_hidden_global_random_state():
    # DARE must not consume torch's global RNG: the same call after reseeding the global RNG differently
    base, sources = _random_case(1000, 2, seed=6)
    torch.manual_seed(1)
    a = dare_linear(base, sources, [1.0, 1.0], [0.5, 0.5], seeds=[8, 9])
    torch.manual_seed(2)
    b = dare_linear(base, sources, [1.0, 1.0], [0.5, 0.5], seeds=[8, 9])
    assert torch.equal(a, b)


def test_the_default_chunk_size_is_used_for_large_tensors():
    # one real two-chunk tensor, so the production chunk size is exercised once
    assert CHUNK_ELEMENTS == 1 << 18
    base, sources = _random_case(CHUNK_ELEMENTS + 3, 2, seed=8)
    out = ties(base, sources, [1.0, 1.0], [0.5, 0.5])
    expected = _reference_gta(base, sources, [1.0, 1.0], [
        ((s - base).abs() >= magnitude_cut(s - base, base.numel(), 0.5).threshold).double() for s in sources],
        [1.0, 1.0], True, True, 1.0)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"])
def test_methods_do_not_modify_their_inputs(name, dtype, small_chunks):
    # density 0.5: trimming and DARE masking really run; more entries than one chunk
    base, sources = _random_case(3 * small_chunks + 5, 3, seed=8)
    base, sources = base.to(dtype), [s.to(dtype) for s in sources]
    before = [base.clone()] + [s.clone() for s in sources]
    merged = METHODS[name].fn(base, sources, [1.0, 0.5, 0.7], [0.5, 0.5, 0.5], seeds=[1, 2, 3])
    assert not torch.equal(merged.to(dtype), base)  # something was merged
    for original, now in zip(before, [base, *sources]):
        assert torch.equal(original, now)


def test_ties_selection_keeps_small_agreeing_values_exact():
    """The elected sum is selected exactly, not computed as n + s * (p - n), which rounds."""
    from evovlm.merge.methods import ties

    base = torch.zeros(2)
    small_positive = torch.tensor([1e-8, -1.0])
    large_negative = torch.tensor([-1e-9, 1e-8])
    merged = ties(base, [small_positive, large_negative], [1.0, 1.0], [1.0, 1.0], normalize=False)
    # entry 0: mass 1e-8 - 1e-9 > 0 elects +, only 1e-8 agrees; entry 1: mass < 0 elects -, only -1.0 agrees
    assert merged[0].item() == torch.tensor(1e-8).item()
    assert merged[1].item() == -1.0


# --------------------------------------------------------------------------------------
# The bf16 magnitude cut, and writing into `out`
# --------------------------------------------------------------------------------------
def _bf16_fine_tunes(numel: int, count: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A bf16 base and fine-tunes of it: their deltas take few distinct values, with ties everywhere."""
    generator = torch.Generator().manual_seed(seed)
    base = (torch.randn(numel, generator=generator) * 0.02).bfloat16()
    return base, [(base.float() + torch.randn(numel, generator=generator) * 0.002).bfloat16() for _ in range(count)]


@pytest.mark.parametrize("density", [0.0, 0.001, 0.1, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("kind", ["fine-tune", "wide", "equal"])
def test_the_bf16_cut_equals_the_fp32_cut(density, kind):
    numel = 50_021
    if kind == "fine-tune":
        base, (tuned,) = _bf16_fine_tunes(numel, 1, seed=5)
    else:  # magnitudes from subnormal to 1e30, zeros, exact cancellations (or nothing but)
        base = _nasty_tensor(numel, torch.bfloat16, seed=6)
        tuned = base.clone() if kind == "equal" else _nasty_tensor(numel, torch.bfloat16, seed=7)
        tuned[::7] = base[::7]
    delta = tuned.float() - base.float()
    exact = magnitude_cut(delta, numel, density)
    for chunk_elements in (4096, 1 << 18):
        base_2d, tuned_2d = (t[:61 * 820].reshape(61, 820).t() for t in (base, tuned))  # not contiguous
        assert bf16_delta_cut(base_2d, tuned_2d, density, chunk_elements) == magnitude_cut(
            tuned_2d.float() - base_2d.float(), 61 * 820, density)
        assert bf16_delta_cut(base, tuned, density, chunk_elements) == exact
    k = math.floor(density * numel)
    assert exact in (KEEP_ALL, KEEP_NONE) or exact.threshold == _sorted_kth(delta, k)
    with pytest.raises(ValueError, match="bf16"):
        bf16_delta_cut(base.float(), tuned, density)


def _exact_k_mask(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Top-k by magnitude with ties at the threshold kept in flat order: exactly k entries."""
    k = math.floor(density * delta.numel())
    threshold = _sorted_kth(delta, k)
    magnitude = delta.abs().flatten()
    above = magnitude > threshold
    ties = magnitude == threshold
    keep = above | (ties & (torch.cumsum(ties, 0) <= k - int(above.sum())))
    assert int(keep.sum()) == k
    return keep.double().view_as(delta)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_ties_on_large_tensors_keeps_exactly_k_per_source(dtype):
    # bf16 sources take the bf16 cut, fp32 ones the two-pass fp32 cut
    numel = 2 * CHUNK_ELEMENTS + 4099
    base, sources = _bf16_fine_tunes(numel, 3, seed=12) if dtype == "bf16" else _random_case(numel, 3, seed=12)
    # weights exact in binary: the fp32 sums then equal the float64 reference's, so an entry whose
    # deltas cancel exactly elects the same sign in both (0.3 and 0.7 would round differently)
    weights, densities = [0.5, 0.25, 0.75], [0.5, 0.4, 0.6]
    out = ties(base, sources, weights, densities)
    kept = [_exact_k_mask(s.float() - base.float(), d) for s, d in zip(sources, densities)]
    expected = _reference_gta(base.float(), [s.float() for s in sources], weights, kept, [1.0] * 3, True, True, 1.0)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_writing_into_out_equals_rounding_the_fp32_result(name, dtype):
    base, sources = _random_case(3 * CHUNK_ELEMENTS // 2, 3, seed=21)
    arguments = (base, sources, [0.5, 0.3, 0.7], [0.5, 0.4, 0.6])
    out = torch.full(base.shape, float("nan"), dtype=dtype)
    returned = METHODS[name].fn(*arguments, seeds=[1, 2, 3], out=out)
    assert returned is out
    assert torch.equal(out, METHODS[name].fn(*arguments, seeds=[1, 2, 3]).to(dtype))


def test_out_of_the_wrong_shape_or_dtype_is_refused():
    base, sources = _random_case(10, 2, seed=1)
    with pytest.raises(ValueError, match="out must be"):
        ties(base, sources, [1.0, 1.0], [0.5, 0.5], out=torch.empty(11))
    with pytest.raises(ValueError, match="out must be"):
        ties(base, sources, [1.0, 1.0], [0.5, 0.5], out=torch.empty(10, dtype=torch.int64))


# -- devices ----------------------------------------------------------------------------------
# SHA-256 prefixes of every method's output on seeded inputs, from the CPU-only code at 5c3c792
# (before the maths became device-aware): the CPU path must stay bit-identical to it. The inputs
# span two chunks, hold exact zero deltas, and come in fp32 and bf16; each result is checked as
# returned (fp32) and written into a bf16/fp32 ``out``.
CPU_DIGESTS_5C3C792 = {
    "float32/linear/": "c3a30492e18683b8", "float32/linear/n": "c3a30492e18683b8",
    "float32/task_arithmetic/": "866a32a9a0e639b6", "float32/task_arithmetic/n": "f0b98bf10e3944a9",
    "float32/ties/": "3680fe185bebe0db", "float32/ties/n": "3680fe185bebe0db",
    "float32/dare_linear/": "bb9f6a3833039470", "float32/dare_linear/l1": "7861331fedfe59db",
    "float32/dare_linear/n": "c746280fdb40b42c", "float32/dare_ties/": "07041372cc459191",
    "float32/dare_ties/l1": "431ea30ee3dd8d0c", "float32/dare_ties/n": "a72e4b496ca2fa4b",
    "bfloat16/linear/": "dc5695522b27b356", "bfloat16/linear/n": "dc5695522b27b356",
    "bfloat16/task_arithmetic/": "847c33d883f9d3d0", "bfloat16/task_arithmetic/n": "1f2dfda31b72d7bb",
    "bfloat16/ties/": "aada3bcb24b56713", "bfloat16/ties/n": "aada3bcb24b56713",
    "bfloat16/dare_linear/": "84382ebadf9ae5b8", "bfloat16/dare_linear/l1": "b65139cc33e4af6d",
    "bfloat16/dare_linear/n": "b657db0bf9a0dd22", "bfloat16/dare_ties/": "2071ea9eeb295e86",
    "bfloat16/dare_ties/l1": "86d612d9d0ae701b", "bfloat16/dare_ties/n": "006a663e3743658b",
}


def _digest_inputs(dtype):
    generator = torch.Generator().manual_seed(7)
    base = torch.randn(300, 1100, generator=generator)  # two chunks of 2^18, an odd size
    sources = [base + 0.02 * torch.randn(300, 1100, generator=generator) for _ in range(3)]
    sources[1][:5] = base[:5]  # exact zero deltas: ties at the magnitude cut
    return base.to(dtype), [source.to(dtype) for source in sources]


def _sha(tensor: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def _digest_runs():
    for dtype in (torch.float32, torch.bfloat16):
        base, sources = _digest_inputs(dtype)
        for name, method in METHODS.items():
            for option, extra in (("", {}), ("l1", {"rescale": "l1"}), ("n", {"normalize": True})):
                if option == "l1" and not method.random:
                    continue
                yield f"{str(dtype).split('.')[1]}/{name}/{option}", method, name, base, sources, extra


def test_the_cpu_path_is_bit_identical_to_the_cpu_only_code():
    weights, densities = [0.5, 0.3, 0.8], [0.3, 0.6, 0.9]
    seen = {}
    for key, method, name, base, sources, extra in _digest_runs():
        kwargs = dict(seeds=[11, 12, 13], **extra)
        result = method.fn(None if name == "linear" else base, sources, weights, densities, **kwargs)
        written = torch.empty_like(base)
        method.fn(None if name == "linear" else base, sources, weights, densities, out=written, **kwargs)
        assert written.equal(result.to(written.dtype)), key  # out= rounds the same fp32 values once
        seen[key] = _sha(result)
    assert seen == CPU_DIGESTS_5C3C792


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("density", [0.0, 0.013, 0.3, 0.5, 0.97, 1.0])
def test_the_kthvalue_and_topk_selects_give_the_radix_cut(dtype, density):
    """Devices that select with torch's kernels (SELECT_BY_DEVICE) trim exactly the same entries."""
    from evovlm.merge.sparsify import MagnitudeTrimmer, delta_cut, kthvalue_cut, topk_cut

    base, sources = _digest_inputs(dtype)
    source = sources[1]  # with exact zero deltas
    radix = delta_cut(base, source, density)
    delta = source.float().reshape(-1) - base.float().reshape(-1)
    for other in (kthvalue_cut(base, source, density), topk_cut(base, source, density)):  # topk: both sides
        assert radix == other, (radix, other)
        assert MagnitudeTrimmer(radix).trim_(delta.clone()).equal(MagnitudeTrimmer(other).trim_(delta.clone()))


def test_chunk_size_never_changes_a_merge(monkeypatch):
    """A GPU merges in larger chunks than a CPU (fewer kernel launches); the numbers are the same."""
    import evovlm.merge.methods as methods_module

    weights, densities = [0.5, 0.3, 0.8], [0.3, 0.6, 0.9]
    runs = list(_digest_runs())

    def digests() -> list[str]:
        return [_sha(method.fn(None if name == "linear" else base, sources, weights, densities, seeds=[11, 12, 13],
                               **extra)) for _, method, name, base, sources, extra in runs]

    first = digests()
    monkeypatch.setattr(methods_module, "CHUNK_ELEMENTS", 100_003)  # odd, and over 3 chunks per tensor
    assert digests() == first


def test_draws_given_instead_of_seeds_give_the_same_merge():
    from evovlm.merge.sparsify import DareDraws

    base, sources = _digest_inputs(torch.float32)
    weights, densities = [0.5, 0.3, 0.8], [0.3, 0.6, 0.9]
    for name in ("dare_linear", "dare_ties"):
        by_seed = METHODS[name].fn(base, sources, weights, densities, seeds=[11, 12, 13])
        draws = [DareDraws.generate(base.numel(), seed) for seed in (11, 12, 13)]
        assert METHODS[name].fn(base, sources, weights, densities, seeds=draws).equal(by_seed), name


def test_dare_draws_split_over_threads_are_the_one_stream(monkeypatch):
    import evovlm.merge.sparsify as sparsify

    one = sparsify.DareDraws.generate(4001, 77, threads=1)
    monkeypatch.setattr(sparsify, "_WORDS_PER_THREAD", 64)  # 1,001 words: 4 threads of ~250 words
    split = sparsify.DareDraws.generate(4001, 77, threads=4)
    assert split.shifted.equal(one.shifted)
    for density in (0.0, 0.3, 0.5, 0.99999, 0.999995, 1.0):  # 0.999995 rounds to 65536/65536: keep all
        assert split.keep_mask(density).equal(reference_keep_mask(4001, density, 77)), density


def test_inputs_on_two_devices_are_refused_before_any_work():
    base = torch.zeros(4)
    with pytest.raises(ValueError, match="different devices"):
        METHODS["ties"].fn(base, [torch.zeros(4, device="meta")], [1.0], [0.5])
    with pytest.raises(ValueError, match="on cpu"):
        METHODS["ties"].fn(base, [torch.ones(4)], [1.0], [0.5], out=torch.empty(4, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the device check runs it)")
@pytest.mark.parametrize("name", list(METHODS))
def test_a_gpu_merge_runs_on_the_gpu_and_matches_the_cpu(name):
    base, sources = _digest_inputs(torch.bfloat16)
    kwargs = {"seeds": [11, 12, 13]}
    on_cpu = METHODS[name].fn(None if name == "linear" else base, sources, [0.5, 0.3, 0.8], [0.3, 0.6, 0.9], **kwargs)
    gpu_base, gpu_sources = base.cuda(), [s.cuda() for s in sources]
    out = torch.empty_like(gpu_base)
    METHODS[name].fn(None if name == "linear" else gpu_base, gpu_sources, [0.5, 0.3, 0.8], [0.3, 0.6, 0.9],
                     out=out, **kwargs)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu().float(), on_cpu.to(torch.bfloat16).float(), rtol=0, atol=2 ** -6)


def test_an_edge_density_draws_nothing(monkeypatch):
    """Density 1 keeps every entry and 0 none: no PCG64 stream is drawn for them (an evolution pins 1.0)."""
    import evovlm.merge.sparsify as sparsify

    base, sources = _digest_inputs(torch.float32)
    expected = METHODS["dare_linear"].fn(base, sources[:2], [0.5, 0.3], [1.0, 0.0], seeds=[11, 12])

    def no_draws(*args, **kwargs):
        raise AssertionError("drew a stream for an edge density")

    monkeypatch.setattr(sparsify.DareDraws, "generate", classmethod(no_draws))
    assert METHODS["dare_linear"].fn(base, sources[:2], [0.5, 0.3], [1.0, 0.0], seeds=[11, 12]).equal(expected)
    assert sparsify.dare_keep_mask(5, 0.999995, 3).all() and not sparsify.dare_keep_mask(5, 0.0, 3).any()
