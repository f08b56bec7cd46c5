"""FLUX's rectified-flow training math (sid.flow) against independent restatements and diffusers."""

from __future__ import annotations

import math

import pytest
import torch

from sid import flow


def restated_loss(v, eps, z0, sigma, mask, scale, hair=None, hair_weight=0.1):
    """The two-phase loss written out per sample with explicit loops, from the issue's definitions."""
    total = 0.0
    for i in range(len(v)):
        s = float(sigma[i])
        z_t = (1 - s) * z0[i] + s * eps[i]
        masks = [(mask[i], 1.0)] + ([(hair[i], hair_weight)] if hair is not None else [])
        part = 0.0
        for m, w in masks:
            if s > flow.phase_sigma():
                estimate, truth = z_t + (1 - s) * v[i], eps[i]
            else:
                estimate, truth = (z_t - s * v[i]) / scale, z0[i] / scale
            part += w * float(((m * estimate - m * truth) ** 2).mean())
        total += part
    return total / len(v)


def test_phase_sigma_matches_sd_t600_snr() -> None:
    from diffusers import DDPMScheduler

    sd = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    ab = sd.alphas_cumprod[600].double().item()
    s = flow.phase_sigma()
    assert ((1 - s) / s) ** 2 == pytest.approx(ab / (1 - ab), rel=1e-5)
    assert 0.69 < s < 0.70  # higher noise than σ = 0.5: SD's t = 600 keeps ~16% of the signal power


@pytest.mark.parametrize("hair", [False, True])
def test_flow_two_phase_loss_matches_its_restatement(hair: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    z0, eps, v = (torch.randn(4, 16, 8, 8, generator=gen) for _ in range(3))
    sigma = torch.tensor([0.05, 0.5, 0.75, 0.99])  # both phases
    mask = (torch.rand(4, 1, 8, 8, generator=gen) > 0.5).float()
    hair_mask = (torch.rand(4, 1, 8, 8, generator=gen) > 0.7).float() if hair else None
    z_t = flow.add_flow_noise(z0, eps, sigma)
    got = flow.flow_two_phase_loss(v, eps, z_t, z0, sigma, mask, 0.3611, hair_mask)
    assert got.item() == pytest.approx(restated_loss(v, eps, z0, sigma, mask, 0.3611, hair_mask), rel=1e-5)


def test_the_true_velocity_gives_zero_loss_in_both_phases() -> None:
    gen = torch.Generator().manual_seed(1)
    z0, eps = torch.randn(2, 16, 8, 8, generator=gen), torch.randn(2, 16, 8, 8, generator=gen)
    sigma = torch.tensor([0.2, 0.9])
    z_t = flow.add_flow_noise(z0, eps, sigma)
    eps_hat, x0_hat = flow.flow_estimates(eps - z0, z_t, sigma)
    torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=0)
    torch.testing.assert_close(x0_hat, z0, atol=1e-5, rtol=0)
    loss = flow.flow_two_phase_loss(eps - z0, eps, z_t, z0, sigma, torch.ones(2, 1, 8, 8), 0.3611)
    assert loss.item() < 1e-9 and flow.flow_noise_loss(eps - z0, eps, z0).item() < 1e-12


def test_packing_and_ids_are_the_pipelines() -> None:
    from diffusers import FluxPipeline

    z = torch.randn(2, 16, 6, 8)
    packed = flow.pack_latents(z)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(z, 2, 16, 6, 8))
    torch.testing.assert_close(flow.unpack_latents(packed, 6, 8), z)
    torch.testing.assert_close(
        flow.image_ids(6, 8), FluxPipeline._prepare_latent_image_ids(1, 3, 4, "cpu", torch.float32)
    )


def test_sigma_table_shifts_as_the_scheduler_config_says() -> None:
    """FLUX.1-dev's config (dynamic shift): the table is the pipeline's exponential time shift at the
    image's sequence length; schnell's (no shift): plain uniform steps."""
    dev = {
        "shift": 3.0,
        "use_dynamic_shifting": True,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "num_train_timesteps": 1000,
    }
    table = flow.sigma_table(dev, 1024)  # 512² image: 64² latent, 32² packed tokens
    mu = 0.5 + (1.15 - 0.5) * (1024 - 256) / (4096 - 256)
    u = torch.linspace(1.0, 1 / 1000, 1000, dtype=torch.float64)
    expected = math.exp(mu) / (math.exp(mu) + (1 / u - 1))
    torch.testing.assert_close(table.double(), expected, atol=1e-6, rtol=0)
    schnell = flow.sigma_table({"shift": 1.0, "use_dynamic_shifting": False}, 1024)
    torch.testing.assert_close(schnell.double(), u, atol=1e-6, rtol=0)
    draws = flow.draw_sigmas(table, 4000, torch.Generator().manual_seed(0))
    assert draws.min() >= table.min() and draws.max() <= table.max()
    assert abs(draws.mean().item() - table.mean().item()) < 0.02  # uniform over the table
