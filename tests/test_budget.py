"""What fits in free memory (sid.budget): K identities per step and the bank's chunk, from their inputs."""

from __future__ import annotations

import pytest

from sid import budget
from sid.budget import GIB, ParallelCost, fit_parallel
from sid.many import default_parallel

COST = ParallelCost(2 * GIB, 3 * GIB, 512, False, "test")


def test_parallel_is_the_largest_k_that_fits_the_headroom() -> None:
    for free_gib in (1, 5, 8, 20, 41.5, 80, 141):
        free = free_gib * GIB
        k = COST.parallel(free, batch=1, resolution=512, cap=64)
        assert k >= 1
        if k > 1:  # K fits, K + 1 does not (unless capped)
            assert COST.total(k, 1, 512) <= free * budget.HEADROOM < COST.total(k + 1, 1, 512)
    assert COST.parallel(80 * GIB, 1, 512, cap=64) == int((80 * 0.9 - 2) // 3)
    assert COST.parallel(1 * GIB, 1, 512) == 1  # never less than one, even when nothing fits
    assert COST.parallel(1000 * GIB, 1, 512) == budget.MAX_DEFAULT_PARALLEL


def test_per_identity_scales_with_batch_and_pixels() -> None:
    assert COST.per_identity(2, 512) == pytest.approx(6 * GIB)
    assert COST.per_identity(1, 1024) == pytest.approx(12 * GIB)
    assert COST.parallel(80 * GIB, 1, 1024, cap=64) < COST.parallel(80 * GIB, 1, 512, cap=64)


def test_fit_recovers_fixed_and_per_sample_in_the_same_terms() -> None:
    truth = ParallelCost(1.25 * GIB, 2.5 * GIB, 512, True, "x")
    points = [(k, truth.total(k, 2, 512)) for k in (1, 2, 4, 8, 16)]
    fitted = fit_parallel(points, batch=2, resolution=512, source="fit", measured=True)
    assert fitted.fixed == pytest.approx(truth.fixed)
    assert fitted.sample == pytest.approx(truth.sample)
    assert fitted.parallel(80 * GIB, 2, 512) == truth.parallel(80 * GIB, 2, 512)
    one = fit_parallel([(1, 4 * GIB)], batch=1, resolution=512, source="one K", measured=False)
    assert (one.fixed, one.sample) == (0.0, 4 * GIB)  # one K: no split, all of it per sample


def test_every_family_has_a_labelled_cost_and_sd_is_the_fallback() -> None:
    for key, cost in budget.PARALLEL_COSTS.items():
        assert cost.fixed > 0 and cost.sample > 0 and cost.source, key
        assert cost.measured or "estimate" in cost.source  # an unmeasured number says so
    assert budget.parallel_cost("no-such-family") is budget.PARALLEL_COSTS["sd"]


def test_cpu_learns_one_identity_per_step() -> None:
    assert budget.free_bytes("cpu") is None
    assert default_parallel("cpu", "sd", 1, 512) == 1


def test_bank_chunk_from_free_memory() -> None:
    assert budget.bank_chunk(None, 512) == budget.DRAW  # CPU: the draw unit
    assert budget.bank_chunk(0.0, 512) == budget.DRAW
    big = budget.bank_chunk(1000 * GIB, 512)
    assert big == budget.MAX_BANK_CHUNK
    mid = budget.bank_chunk(10 * GIB, 512)
    assert mid % budget.DRAW == 0 and budget.DRAW <= mid <= budget.MAX_BANK_CHUNK
    assert mid * budget.BANK_BYTES_PER_PIXEL * 512**2 <= 10 * GIB * 0.5
    assert budget.bank_chunk(10 * GIB, 1024) <= mid  # bigger images, smaller chunks
