"""Training augmentations of the one aligned photo, in plain torch (no torchvision).

StableIdentity: colour jitter (brightness/contrast/saturation 0.8-1.2, hue 0.01), horizontal flip
p=0.5, and one geometric change picked uniformly: none, a random 3/4 crop resized back (384 of 512),
or a 0.5-1.0x downscale pasted at a random spot on black.
Celeb Basis: flip p=0.5, the same colour jitter, and the face shrunk to 10-100 % pasted on black.
The mask goes through the same geometry as the image; only colour is image-only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _uniform(lo: float, hi: float, generator: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (1, H, W) luma."""
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def colour_jitter(
    x: torch.Tensor, generator: torch.Generator, strength: float = 0.2, hue: float = 0.01
) -> torch.Tensor:
    """Brightness, contrast, saturation in [1-strength, 1+strength], a small hue rotation; x in [0, 1]."""
    x = x * _uniform(1 - strength, 1 + strength, generator)
    x = (x - _grey(x).mean()) * _uniform(1 - strength, 1 + strength, generator) + _grey(x).mean()
    x = (x - _grey(x)) * _uniform(1 - strength, 1 + strength, generator) + _grey(x)
    angle = 2 * torch.pi * _uniform(-hue, hue, generator)  # rotate chroma in YIQ space
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = torch.cos(torch.tensor(angle)), torch.sin(torch.tensor(angle))
    rot = torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    matrix = torch.linalg.inv(yiq) @ rot @ yiq
    return torch.einsum("ij,jhw->ihw", matrix, x).clamp(0, 1)


def _crop_resize(x: torch.Tensor, top: int, left: int, size: int, out: int) -> torch.Tensor:
    patch = x[:, top : top + size, left : left + size].unsqueeze(0)
    return F.interpolate(patch, size=(out, out), mode="bilinear", align_corners=False)[0]


def _paste_scaled(x: torch.Tensor, scale: float, top: float, left: float) -> torch.Tensor:
    """Shrink x by ``scale`` and paste it on black at the relative offset (top, left) in [0, 1]."""
    size = x.shape[-1]
    small = max(1, round(size * scale))
    shrunk = F.interpolate(x.unsqueeze(0), size=(small, small), mode="area")[0]
    canvas = torch.zeros_like(x)
    y0, x0 = round((size - small) * top), round((size - small) * left)
    canvas[:, y0 : y0 + small, x0 : x0 + small] = shrunk
    return canvas


def augment_one(
    image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, method: str
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One augmented (image [-1, 1], mask [0, 1], flipped) sample of an aligned (3, R, R) photo."""
    x = colour_jitter((image + 1) / 2, generator)
    flip = bool(torch.rand((), generator=generator) < 0.5)
    if flip:
        x, mask = x.flip(-1), mask.flip(-1)
    size = x.shape[-1]
    if method == "celebbasis":
        scale, top, left = _uniform(0.1, 1.0, generator), _uniform(0, 1, generator), _uniform(0, 1, generator)
        x, mask = _paste_scaled(x, scale, top, left), _paste_scaled(mask, scale, top, left)
    else:
        choice = int(torch.randint(0, 3, (), generator=generator))
        if choice == 1:
            crop = round(size * 0.75)
            top, left = (int(torch.randint(0, size - crop + 1, (), generator=generator)) for _ in range(2))
            x, mask = _crop_resize(x, top, left, crop, size), _crop_resize(mask, top, left, crop, size)
        elif choice == 2:
            scale, top, left = (
                _uniform(0.5, 1.0, generator),
                _uniform(0, 1, generator),
                _uniform(0, 1, generator),
            )
            x, mask = _paste_scaled(x, scale, top, left), _paste_scaled(mask, scale, top, left)
    return x * 2 - 1, mask.clamp(0, 1), flip


def augment_batch(
    image: torch.Tensor, mask: torch.Tensor, n: int, generator: torch.Generator, method: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n augmented samples: images (n, 3, R, R), masks (n, 1, R, R), flip flags (n,) bool."""
    samples = [augment_one(image, mask, generator, method) for _ in range(n)]
    images = torch.stack([s[0] for s in samples])
    masks = torch.stack([s[1] for s in samples])
    flips = torch.tensor([s[2] for s in samples])
    return images, masks, flips
