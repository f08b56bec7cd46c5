"""Regression pin: the single-encoder mappers' outputs on a fixed seed, as computed before SDXL learning.

The values below were produced by the mappers as they were before multi-encoder support was added
(not derived by hand): they pin that the SD 1.x/2.x case (one text encoder) stays exactly what it
was, weights drawn in the same order and the same math, whatever the multi-encoder refactor changes.
"""

from __future__ import annotations

import torch

from sid.methods import CelebBasisMapper, StableIdentityMapper
from tests.test_methods import _prior

# every 16th dimension of the (3, 2, 64) outputs, row-major
STABLEIDENTITY = [-1.3921634e-02, -8.4772818e-03, 2.5515780e-02, -1.4605692e-02, -4.1587085e-02, -1.2241961e-02, 4.8472494e-02, -7.9853823e-03, -1.0846608e-02, -3.6537729e-02, -1.0165009e-03, -1.3281683e-02, -2.0694803e-02, 1.7949690e-03, -4.5994180e-03, -2.8464518e-02, 1.1995946e-02, -2.3500498e-02, -1.1553451e-02, 1.4578792e-02, -7.9405904e-03, 4.0501659e-04, -6.4583132e-03, 3.5813995e-02]  # fmt: skip # noqa: E501
CELEBBASIS = [5.1056154e-02, -9.6557960e-02, -6.4274348e-02, -1.5142436e-01, -2.6623780e-01, 3.7886284e-02, 4.6172790e-02, 1.2534763e-01, -1.3492924e-01, -5.7098262e-02, -7.3199026e-02, -9.0974778e-02, 1.4555816e-01, 2.9126760e-02, 1.2744483e-01, -1.4284338e-01, -1.0633003e-02, 1.0189469e-01, -1.1721354e-01, -1.7284513e-02, 2.5223622e-01, 2.6281042e-02, -4.0575646e-02, 3.1591088e-02]  # fmt: skip # noqa: E501
CELEBBASIS_AVERAGE = [4.8598006e-02, -9.4182789e-02, -6.4892121e-02, -1.4948454e-01, -2.5697628e-01, 3.7683498e-02, 4.6109904e-02, 1.2175499e-01]  # fmt: skip # noqa: E501


def _pinned_basis(slots: list[torch.Tensor]) -> torch.Tensor:
    """The basis the Celeb Basis pins were computed with: mean and the 49 principal directions of a
    float64 SVD (sid's basis before it followed the official fp32 full SVD; a pin of the mapper's math,
    so the basis stays fixed here)."""
    rows = []
    for emb in slots:
        x = emb.double()
        _, _, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
        rows.append(torch.cat([x.mean(0, keepdim=True), vh[:49]]))
    return torch.stack(rows).float()


def _pinned(values: list[float], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(values).view(shape)


def test_single_encoder_mappers_match_their_pinned_outputs() -> None:
    prior = _prior(n=50, d=64)
    torch.manual_seed(7)
    si = StableIdentityMapper(16, 64, prior.mean, prior.std)
    cb = CelebBasisMapper(16, _pinned_basis(prior.slots), hidden=64, identities=2)
    faces = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        si_out, cb_out = si(faces), cb(faces)
    cb.update_average(1, faces)
    assert si_out.shape == cb_out.shape == (3, 2, 64)
    torch.testing.assert_close(si_out[:, :, ::16], _pinned(STABLEIDENTITY, (3, 2, 4)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(cb_out[:, :, ::16], _pinned(CELEBBASIS, (3, 2, 4)), rtol=1e-4, atol=1e-6)
    average = cb.averaged_vectors(1)[:, ::16]
    torch.testing.assert_close(average, _pinned(CELEBBASIS_AVERAGE, (2, 4)), rtol=1e-4, atol=1e-6)
