"""The latent bank: a photo augmented many times and VAE-encoded once, before the learn loop.

Each entry is an independent augmentation (with its face and hair masks at latent size), so taking
entries in order is drawing without replacement, as the papers' data loaders do; the encodes are
batched before the loop instead of one per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sid import budget, limits
from sid.augment import augment, concat_draws, draw
from sid.faces import FaceCrop


def default_bank_size(steps: int, batch: int, identities: int) -> int:
    """One bank entry per training sample an identity gets: every step sees fresh augmentations.

    That is the papers' own data pipeline (a new augmentation and VAE encode per sample), with the
    encodes batched before the loop; a smaller ``--bank-size`` reuses entries to save encodes. Never
    more than ``--bank-size`` may ask for: a long run reuses entries rather than fill the memory.
    """
    return min(math.ceil(steps / identities) * batch, int(limits.LIMITS["learn"]["bank_size"].high))


@dataclass
class Bank:
    """Augmented latents (N, 4, h, w), 0/1 latent face and hair masks (N, 1, h, w) and flip flags (N,),
    on the device; no hair masks with the landmark mask."""

    latents: torch.Tensor
    masks: torch.Tensor
    hair_masks: torch.Tensor | None
    flips: torch.Tensor

    def sample(
        self, batch: int, draw: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The ``draw``-th batch: entries in bank order, wrapping around.

        Entries are independent augmentations, so taking them in order is drawing without
        replacement: a bank of steps x batch entries gives every step fresh samples, as the papers'
        data loaders do, and a smaller bank uses each entry equally often.
        """
        n = len(self.latents)
        idx = (torch.arange(batch, device=self.latents.device) + draw * batch) % n
        hair = self.hair_masks[idx] if self.hair_masks is not None else None
        return self.latents[idx], self.masks[idx], hair, self.flips[idx]


@torch.no_grad()
def build_bank(
    crop: FaceCrop,
    vae: Any,
    resolution: int,
    size: int,
    generator: torch.Generator,
    method: str,
    device: str,
    amp_dtype: torch.dtype | None = None,
    chunk: int | None = None,
) -> Bank:
    """Augment the aligned photo ``size`` times and VAE-encode it once; the VAE is frozen.

        The face and hair masks go through the same augmentation as two channels of one mask. The VAE
        encodes under bf16 autocast when the loop runs in bf16 (a speed choice: both papers' official runs
    encode in fp32, StableIdentity's with no mixed precision set); never in fp16, which overflows
    SDXL's VAE. ``chunk`` entries are augmented and encoded at once (None: as many as half the free
    accelerator memory holds, ``sid.budget``; rounded down to a multiple of ``budget.DRAW``); the random
    numbers are drawn ``budget.DRAW`` entries at a time whatever the chunk (augmentation, then latent
    noise), so the bank is the same at any chunk.
    """
    image = torch.from_numpy(np.asarray(crop.image.resize((resolution, resolution)), np.float32) / 127.5 - 1)
    image = image.permute(2, 0, 1)  # (3, R, R) in [-1, 1]
    planes = [crop.mask] + ([crop.hair_mask] if crop.hair_mask is not None else [])
    mask = torch.from_numpy(np.stack(planes).astype(np.float32))[None]  # (1, 1 or 2, 512, 512)
    mask = F.interpolate(mask, size=(resolution, resolution), mode="bilinear", align_corners=False)[0]
    image, mask = image.to(device), mask.to(device)  # augmentation runs batched on the training device
    vae.to(device)
    chunk = max(
        budget.DRAW,
        (chunk or budget.bank_chunk(budget.free_bytes(device), resolution)) // budget.DRAW * budget.DRAW,
    )
    bf16 = amp_dtype == torch.bfloat16
    latent_dtype = torch.bfloat16 if bf16 else vae.dtype  # what the encoder's output is under autocast
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_shape = (vae.config.latent_channels, resolution // factor, resolution // factor)
    latents, latent_masks, flips = [], [], []
    for start in range(0, size, chunk):  # a chunk at a time: memory stays flat
        n = min(chunk, size - start)
        draws, noises = [], []
        for first in range(0, n, budget.DRAW):  # a draw unit's augmentation, then its latent noise
            m = min(budget.DRAW, n - first)
            draws.append(draw(m, resolution, generator, method))
            noises.append(torch.randn((m, *latent_shape), generator=generator, dtype=latent_dtype))
        images, masks, chunk_flips = augment(image, mask, concat_draws(draws), method)
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=bf16):
            dist = vae.encode(images.to(vae.dtype)).latent_dist
        latent = dist.mean + dist.std * torch.cat(noises).to(device)  # = dist.sample(generator) per unit
        if shift := vae.config.get("shift_factor"):  # a VAE that centres its latents (FLUX's); SD's do not
            latent = latent - shift
        latents.append(latent * vae.config.scaling_factor)
        latent_masks.append(binary_latent_masks(masks, latents[-1].shape[-2:]))  # (n, 1 or 2, h, w)
        flips.append(chunk_flips)
    masks = torch.cat(latent_masks)
    hair = masks[:, 1:] if crop.hair_mask is not None else None
    return Bank(torch.cat(latents).float(), masks[:, :1], hair, torch.cat(flips).to(device))


def binary_latent_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, R, R) masks -> (N, C, h, w) of 0/1 at latent size, as StableIdentity's code makes them:
    bicubic resize (align_corners=True), then >= 0.5."""
    small = F.interpolate(masks.float(), size=tuple(size), mode="bicubic", align_corners=True)
    return (small >= 0.5).float()
