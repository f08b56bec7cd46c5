"""FLUX.1's rectified-flow training math as plain functions: latents, noise, ids and the losses.

FLUX trains on z_t = (1 - σ)·z0 + σ·ε and predicts the velocity v ≈ ε - z0, on latents packed
into 2×2 patches. The DDPM methods' losses carry over through the two estimates a velocity gives:
ε̂ = z_t + (1 - σ)·v̂ and ẑ0 = z_t - σ·v̂ (exact when v̂ = ε - z0). The phase boundary of
StableIdentity's two-phase loss is the σ whose signal-to-noise ratio ((1 - σ)/σ)² equals that of
the DDPM recipe's t = 600 on Stable Diffusion's scaled-linear schedule (docs/learning.md "FLUX").
Device-agnostic and free of I/O, like ``sid.methods``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from sid.methods import PHASE_THRESHOLD, masked_mse

# Stable Diffusion's training schedule, where StableIdentity's t = 600 boundary was set
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
FLUX_GUIDANCE = 3.5  # the guidance input FLUX.1-dev's pipeline and diffusers' FLUX training scripts use


@lru_cache(maxsize=1)
def phase_sigma(threshold: int = PHASE_THRESHOLD) -> float:
    """The σ whose SNR ((1 - σ)/σ)² equals SD's scaled-linear schedule's at t = ``threshold``.

    SNR_DDPM(t) = ab_t / (1 - ab_t); (1 - σ)/σ = sqrt(SNR) gives σ = 1 / (1 + sqrt(SNR)) (0.6956 at
    t = 600). Both latent spaces are scaled to about unit variance (SD's 0.18215, FLUX's scale and
    shift), so equal SNR means the same share of the image survives the noise.
    """
    n = SD_BETAS["num_train_timesteps"]
    betas = torch.linspace(SD_BETAS["beta_start"] ** 0.5, SD_BETAS["beta_end"] ** 0.5, n, dtype=torch.float64)
    ab = torch.cumprod(1 - betas**2, dim=0)[threshold].item()
    return 1 / (1 + math.sqrt(ab / (1 - ab)))


def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): FLUX's 2×2 patches, row-major, channel then patch row/col."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of ``pack_latents`` for a (h, w) latent."""
    b, _, d = x.shape
    return x.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h/2 * w/2, 3) position ids of the packed patches: (0, row, col), as FluxPipeline builds them."""
    rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
    return ids.to(device=device, dtype=dtype)


def text_ids(length: int, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(L, 3) zeros: FLUX gives the T5 tokens no position in the rotary embedding."""
    return torch.zeros(length, 3, device=device, dtype=dtype)


def sigma_table(scheduler_config: Any, image_seq_len: int) -> torch.Tensor:
    """(N,) the σ of each of the N training timesteps, shifted as the scheduler's config shifts them at
    this image size (FLUX.1-dev: dynamic shift mu from the packed sequence length; schnell: none).

    diffusers' FLUX scripts index their scheduler's N-step table uniformly; FluxPipeline samples with
    the shift ``mu`` of the image's sequence length. Training on that shifted table puts the steps
    where the model spends its sampling steps at this resolution. The shift itself is diffusers'
    (``set_timesteps``), read from the model's own scheduler config.
    """
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
    cfg = scheduler.config
    n = int(cfg.num_train_timesteps)
    mu = calculate_shift(
        image_seq_len,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )
    sigmas = np.linspace(1.0, 1 / n, n)
    scheduler.set_timesteps(sigmas=sigmas, mu=mu if cfg.use_dynamic_shifting else None)
    return scheduler.sigmas[:-1].float()  # drop the appended terminal 0


def draw_sigmas(table: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B,) σ drawn uniformly from the training table (diffusers' FLUX scripts' weighting 'none')."""
    idx = torch.randint(0, len(table), (batch,), generator=generator, device=generator.device)
    return table.to(generator.device)[idx]


def add_flow_noise(z0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """z_t = (1 - σ)·z0 + σ·ε, σ (B,)."""
    s = _per_sample(sigma, z0)
    return (1 - s) * z0 + s * noise


def flow_estimates(
    velocity: torch.Tensor, z_t: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε̂, ẑ0) of a velocity prediction: ε̂ = z_t + (1 - σ)·v̂, ẑ0 = z_t - σ·v̂."""
    s = _per_sample(sigma, velocity)
    return z_t + (1 - s) * velocity, z_t - s * velocity


def flow_two_phase_loss(
    velocity: torch.Tensor,
    noise: torch.Tensor,
    z_t: torch.Tensor,
    z0: torch.Tensor,
    sigma: torch.Tensor,
    mask: torch.Tensor,
    vae_scaling_factor: float,
    hair_mask: torch.Tensor | None = None,
    hair_weight: float = 0.1,
) -> torch.Tensor:
    """StableIdentity's masked two-phase loss on a rectified-flow model (scalar), latents unpacked.

    Per sample, with M the face mask (B, 1, h, w): σ > ``phase_sigma()`` (the high-noise phase, DDPM
    t > 600): MSE(M·ε̂, M·ε); otherwise MSE(M·ẑ0, M·z0) / scaling², compared in the VAE's own latent
    space as the DDPM loss does (the shift cancels in the difference). The hair term, the mean over
    the whole tensor and the batch mean are ``sid.methods.two_phase_loss``'s.
    """
    v, noise, z_t, z0 = velocity.float(), noise.float(), z_t.float(), z0.float()
    sigma = sigma.to(v.device, torch.float32)
    eps_hat, x0_hat = flow_estimates(v, z_t, sigma)
    masks = [(mask.float(), 1.0)] + ([(hair_mask.float(), hair_weight)] if hair_mask is not None else [])
    noise_part = sum(w * masked_mse(m, eps_hat, noise) for m, w in masks)
    x0_part = sum(w * masked_mse(m, x0_hat / vae_scaling_factor, z0 / vae_scaling_factor) for m, w in masks)
    return torch.where(sigma > phase_sigma(), noise_part, x0_part).mean()


def flow_noise_loss(velocity: torch.Tensor, noise: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """Celeb Basis's plain loss on FLUX: MSE(v̂, ε - z0), the target FLUX was trained on (scalar)."""
    return F.mse_loss(velocity.float(), noise.float() - z0.float())


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))
