"""Training augmentations of the one aligned photo: each paper's chain, every sample, batched on the device.

StableIdentity's dataset applies, always and in this order: colour jitter (brightness, contrast,
saturation each x U(0.8, 1.2), hue + U(-0.01, 0.01) of the colour circle, the four in a random order
as torchvision's ColorJitter does) -> horizontal flip p=0.5 -> a random crop of side s - s//4 (384 of
512) resized back to s -> the result shrunk to a height of U(0.5, 1.0) x s and a width of that times
U(0.9, 1.1), pasted at a uniformly random spot on black. Bicubic resampling.
Celeb Basis's one-shot dataset: flip p=0.5 -> the same colour jitter -> the same paste with the height
in U(0.1, 1.0) x s and no crop. Bilinear resampling. (Jitter is spatially uniform, so it commutes
with the flip.)

Every mask channel takes the same geometry as the image (the flip, crop and paste); colour is
image-only. The crop and the paste are one affine map, so each sample is resampled once with
``grid_sample`` (the papers' code resamples twice), on whatever device the photo is on.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

GREY = (0.2989, 0.587, 0.114)  # torchvision's luma weights


@dataclass(frozen=True)
class Chain:
    """One paper's geometric augmentation."""

    crop: bool  # random (s - s//4)-side crop resized back, before the paste
    shrink: tuple[float, float]  # pasted height / s
    aspect: tuple[float, float]  # pasted width / pasted height
    mode: str  # resampling: bicubic (StableIdentity) or bilinear (Celeb Basis)


CHAINS: dict[str, Chain] = {
    "stableidentity": Chain(crop=True, shrink=(0.5, 1.0), aspect=(0.9, 1.1), mode="bicubic"),
    "celebbasis": Chain(crop=False, shrink=(0.1, 1.0), aspect=(0.9, 1.1), mode="bilinear"),
}
JITTER = (0.8, 1.2)  # brightness, contrast and saturation factor range
HUE = 0.01  # hue shift range, as a fraction of the colour circle


def _uniform(lo: float, hi: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    return (GREY[0] * x[:, 0] + GREY[1] * x[:, 1] + GREY[2] * x[:, 2]).unsqueeze(1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of (B, 3, H, W) in [0, 1] by ``shift`` (B,) of the circle."""
    v, top = x.max(dim=1)  # (B, H, W)
    delta = v - x.min(dim=1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    r, g, b = x.unbind(1)
    h6 = torch.where(
        top == 0, ((g - b) / safe) % 6, torch.where(top == 1, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    h6 = torch.where(delta > 0, h6, torch.zeros_like(h6))
    h6 = (h6 + 6 * shift.view(-1, 1, 1)) % 6
    chroma = delta  # = v * s
    # back to RGB: channel n (R=5, G=3, B=1) is v - chroma * clamp(min(k, 4 - k), 0, 1), k = (n + h6) mod 6
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + h6) % 6
        channels.append(v - chroma * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(channels, dim=1)


def _apply_jitter(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """One of torchvision's four ColorJitter operations on (B, 3, H, W) in [0, 1], factors (B,)."""
    f = factor.view(-1, 1, 1, 1)
    if op == 0:  # brightness
        return (x * f).clamp(0, 1)
    if op == 1:  # contrast: blend with the image's mean luma
        return (f * x + (1 - f) * _grey(x).mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)
    if op == 2:  # saturation: blend with each pixel's luma
        return (f * x + (1 - f) * _grey(x)).clamp(0, 1)
    return _shift_hue(x, factor)


def colour_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1]; ``order`` (B, 4) a permutation of the ops per sample, ``factors`` (B, 4)."""
    x = x.clone()
    for position in range(4):
        for op in range(4):
            rows = (order[:, position] == op).nonzero().flatten()
            if len(rows):
                x[rows] = _apply_jitter(x[rows], op, factors[rows, op])
    return x


@dataclass
class Draws:
    """The random parameters of n samples (float64 on the CPU, drawn in a fixed order from one generator)."""

    order: torch.Tensor  # (n, 4) jitter op order
    factors: torch.Tensor  # (n, 4) brightness, contrast, saturation, hue
    flips: torch.Tensor  # (n,) bool
    top: torch.Tensor  # (n,) crop offset (0 without a crop)
    left: torch.Tensor
    crop: int  # crop side
    height: torch.Tensor  # (n,) pasted size, ints
    width: torch.Tensor
    pos_y: torch.Tensor  # (n,) paste offset, ints
    pos_x: torch.Tensor


def draw(n: int, size: int, generator: torch.Generator, method: str) -> Draws:
    """Parameters of n samples, with the papers' integer semantics (int() truncation, exclusive randint)."""
    chain = CHAINS[method]
    order = torch.rand(n, 4, generator=generator).argsort(dim=1)
    factors = torch.stack(
        [_uniform(*JITTER, n, generator) for _ in range(3)] + [_uniform(-HUE, HUE, n, generator)], 1
    )
    flips = torch.rand(n, generator=generator) < 0.5
    crop = size - size // 4 if chain.crop else size
    top = torch.randint(0, size - crop + 1, (n,), generator=generator)
    left = torch.randint(0, size - crop + 1, (n,), generator=generator)
    height = (size * _uniform(*chain.shrink, n, generator)).long().clamp(1, size)
    width = (height * _uniform(*chain.aspect, n, generator)).long().clamp(1, size)
    pos_y = ((size - height) * torch.rand(n, generator=generator, dtype=torch.float64)).long()
    pos_x = ((size - width) * torch.rand(n, generator=generator, dtype=torch.float64)).long()
    return Draws(order, factors, flips, top, left, crop, height, width, pos_y, pos_x)


def concat_draws(draws: list[Draws]) -> Draws:
    """Several draws (of one size and method) as one, samples in order."""
    if len(draws) == 1:
        return draws[0]
    joined = {
        f.name: draws[0].crop if f.name == "crop" else torch.cat([getattr(d, f.name) for d in draws])
        for f in fields(Draws)
    }
    return Draws(**joined)


def _source_coords(
    out: torch.Tensor, pos: torch.Tensor, length: torch.Tensor, offset: torch.Tensor, crop: int
) -> torch.Tensor:
    """(n, S) source pixel index of each output index ``out`` (S,) under crop-then-paste (align_corners)."""
    step = (crop - 1) / (length - 1).clamp(min=1).double()
    return offset.double()[:, None] + (out[None] - pos[:, None]).double() * step[:, None]


def geometry(stack: torch.Tensor, d: Draws, mode: str) -> torch.Tensor:
    """Flip, crop and paste (n, C, S, S) in one resampling; outside the pasted rectangle is 0."""
    n, _, size, _ = stack.shape
    device = stack.device
    idx = torch.arange(size, dtype=torch.float64)
    src_y = _source_coords(idx, d.pos_y, d.height, d.top, d.crop)  # (n, S)
    src_x = _source_coords(idx, d.pos_x, d.width, d.left, d.crop)
    src_x = torch.where(d.flips[:, None], size - 1 - src_x, src_x)  # the flip came first
    to_grid = 2 / (size - 1)
    gy = (src_y * to_grid - 1).to(device, stack.dtype)[:, :, None].expand(n, size, size)
    gx = (src_x * to_grid - 1).to(device, stack.dtype)[:, None, :].expand(n, size, size)
    out = F.grid_sample(
        stack, torch.stack([gx, gy], dim=-1), mode=mode, padding_mode="border", align_corners=True
    )
    inside_y = (idx[None] >= d.pos_y[:, None]) & (idx[None] < (d.pos_y + d.height)[:, None])
    inside_x = (idx[None] >= d.pos_x[:, None]) & (idx[None] < (d.pos_x + d.width)[:, None])
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).to(device, stack.dtype)  # (n, S, S)
    return out * inside[:, None]


def augment_batch(
    image: torch.Tensor, mask: torch.Tensor, n: int, generator: torch.Generator, method: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n augmented samples of an aligned photo, on the photo's device.

    ``image`` (3, R, R) in [-1, 1], ``mask`` (C, R, R) in [0, 1] with any number of channels (face,
    hair, ...). Returns images (n, 3, R, R) in [-1, 1], masks (n, C, R, R) clamped to [0, 1] and flip
    flags (n,) bool on the CPU. ``generator`` is a CPU generator; the draws do not depend on the device.
    """
    return augment(image, mask, draw(n, image.shape[-1], generator, method), method)


def augment(
    image: torch.Tensor, mask: torch.Tensor, d: Draws, method: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``augment_batch`` with its random parameters already drawn (``draw``, or several draws joined
    by ``concat_draws``): the bank draws a few samples at a time and augments many at once."""
    n = len(d.flips)
    colour = colour_jitter(
        ((image + 1) / 2).expand(n, -1, -1, -1), d.order, d.factors.to(image.device, image.dtype)
    )
    stack = torch.cat([colour, mask.to(image.dtype).expand(n, -1, -1, -1)], dim=1)
    out = geometry(stack, d, CHAINS[method].mode)
    return out[:, :3] * 2 - 1, out[:, 3:].clamp(0, 1), d.flips
