"""Volume rendering of a field along camera rays, with optional DreamFusion-style shading.

Each ray is clipped to the cube [-bound, bound]^3 and split into ``samples`` equal bins, one sample
per bin (the bin's centre, or a random point in it while training). Densities become opacities
``alpha = 1 - exp(-sigma * delta)`` with ``delta`` the bin length, composited front to back; the
rest of the ray shows the background colour.

Shading (DreamFusion): "albedo" shows the field's colour; "lambertian" multiplies it by
``ambient + (1 - ambient) * max(0, n . l)``; "textureless" uses white in place of the colour, which
makes geometry, not paint, carry the shape. Normals are minus the density gradient, by
forward differences (differentiable, so shading gradients reach the geometry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sid.threed.cameras import Cameras, camera_rays

SHADINGS = ("albedo", "lambertian", "textureless")
AMBIENT = 0.1
Field = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # points (N, 3) -> sigma (N,), rgb (N, 3)


@dataclass
class Rendered:
    image: torch.Tensor  # (B, 3, S, S) in [0, 1]
    opacity: torch.Tensor  # (B, 1, S, S)
    depth: torch.Tensor  # (B, 1, S, S), expected distance along the ray (0 where empty)
    orientation: torch.Tensor  # () DreamFusion's orientation penalty (0 without normals)


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances (...,) of rays through the cube; near == far for rays that miss it."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (-bound - origins) / safe, (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, torch.maximum(far, near)


def normals_of(field: Field, points: torch.Tensor, sigma: torch.Tensor, eps: float) -> torch.Tensor:
    """Unit normals (N, 3) = -grad(sigma) / |grad(sigma)| by forward differences (3 extra density
    evaluations per point; ``sigma`` (N,) is the density at ``points`` itself)."""
    density = getattr(field, "density", None) or (lambda p: field(p)[0])
    offsets = torch.eye(3, device=points.device, dtype=points.dtype) * eps  # (3, 3)
    probes = points[:, None, :] + offsets  # (N, 3, 3)
    grad = (density(probes.reshape(-1, 3)).view(-1, 3) - sigma[:, None]) / eps
    return -F.normalize(grad, dim=-1, eps=1e-12)


def render_rays(
    field: Field,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    samples: int,
    background: torch.Tensor,
    bound: float = 1.0,
    generator: torch.Generator | None = None,
    shading: str = "albedo",
    light: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays (R, 3) -> rgb (R, 3), opacity (R,), depth (R,), orientation penalty ().

    ``background`` is (3,) or (R, 3); ``light`` a unit direction (3,) or (R, 3) towards the light.
    With a ``generator`` the sample in each bin is random (training), else it is the bin's centre.
    """
    if shading not in SHADINGS:  # a typo would otherwise shade as lambertian
        raise ValueError(f"unknown shading {shading!r}; one of {', '.join(SHADINGS)}")
    n_rays = origins.shape[0]
    near, far = ray_box(origins, dirs, bound)  # (R,)
    if generator is not None:
        offset = torch.rand(n_rays, samples, generator=generator).to(origins.device, origins.dtype)
    else:
        offset = torch.full((n_rays, samples), 0.5, device=origins.device, dtype=origins.dtype)
    bins = torch.arange(samples, device=origins.device, dtype=origins.dtype)
    delta = ((far - near) / samples)[:, None]  # (R, 1)
    t = near[:, None] + (bins + offset) * delta  # (R, N)
    points = origins[:, None, :] + t[..., None] * dirs[:, None, :]  # (R, N, 3)
    flat = points.reshape(-1, 3).clamp(-bound, bound)
    sigma, rgb = field(flat)
    sigma, rgb = sigma.view(n_rays, samples), rgb.view(n_rays, samples, 3)

    # front-to-back compositing
    alpha = 1.0 - torch.exp(-sigma * delta)  # (R, N)
    transmit = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], 1), 1)[:, :-1]
    weights = alpha * transmit  # (R, N)
    opacity = weights.sum(-1)

    orientation = sigma.new_zeros(())
    if shading != "albedo":
        eps = float(getattr(field, "normal_eps", 1e-2))
        normals = normals_of(field, flat, sigma.reshape(-1), eps).view(n_rays, samples, 3)
        if light is None:
            light = -dirs  # headlight
        light = light.expand(n_rays, 3) if light.dim() == 1 else light
        lambert = (normals * light[:, None, :]).sum(-1).clamp(min=0.0)[..., None]  # (R, N, 1)
        albedo = torch.ones_like(rgb) if shading == "textureless" else rgb
        rgb = albedo * (AMBIENT + (1.0 - AMBIENT) * lambert)
        # normals that face away from the camera yet are visible (DreamFusion's orientation loss)
        facing_away = (normals * dirs[:, None, :]).sum(-1).clamp(min=0.0) ** 2
        orientation = (weights.detach() * facing_away).sum(-1).mean()

    color = (weights[..., None] * rgb).sum(1)
    bg = background.expand(n_rays, 3) if background.dim() == 1 else background
    color = color + (1.0 - opacity)[:, None] * bg
    depth = (weights * t).sum(-1)
    return color, opacity, depth, orientation


def render(
    field: Field,
    cams: Cameras,
    size: int,
    samples: int,
    background: torch.Tensor,
    bound: float = 1.0,
    generator: torch.Generator | None = None,
    shading: str = "albedo",
    light: torch.Tensor | None = None,
    chunk: int | None = None,
) -> Rendered:
    """Square images of ``size`` pixels from each camera. ``background``: (3,) or per-view (B, 3);
    ``light``: per-view unit directions (B, 3) or None (headlight). ``chunk`` rays at a time (no grad)."""
    origins, dirs = camera_rays(cams, size)  # (B, P, 3)
    views, pixels = origins.shape[:2]
    bg = background.expand(views, 3) if background.dim() == 1 else background
    bg = bg[:, None, :].expand(views, pixels, 3).reshape(-1, 3)
    lt = None if light is None else light[:, None, :].expand(views, pixels, 3).reshape(-1, 3)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    step = chunk or o.shape[0]
    parts = [
        render_rays(
            field,
            o[i : i + step],
            d[i : i + step],
            samples,
            bg[i : i + step],
            bound,
            generator,
            shading,
            None if lt is None else lt[i : i + step],
        )
        for i in range(0, o.shape[0], step)
    ]
    color, opacity, depth = (torch.cat([p[k] for p in parts]) for k in range(3))
    orientation = torch.stack([p[3] for p in parts]).mean()

    def image(x: torch.Tensor, channels: int) -> torch.Tensor:
        return x.view(views, size, size, channels).permute(0, 3, 1, 2)

    return Rendered(image(color, 3), image(opacity, 1), image(depth, 1), orientation)
