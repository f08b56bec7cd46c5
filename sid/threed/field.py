"""The radiance field: multi-resolution dense feature grids, a small MLP head, and a head-shaped prior.

Each point of the cube [-bound, bound]^3 reads C features from every level of the grid (trilinear,
``grid_sample``), the MLP turns the concatenated features into a density logit and an albedo. The
density is ``exp(logit + prior(x))`` where the prior is an ellipsoidal cone over a head and a neck,
so the very first renders already show a head-sized blob instead of empty space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MAX_LOGIT = 15.0  # exp is clamped here in the backward pass (and at MAX_LOGIT + 5 in the forward)


class _TruncExp(torch.autograd.Function):
    """exp with a bounded gradient: large densities cannot blow the optimiser up."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x.clamp(max=MAX_LOGIT + 5.0))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=MAX_LOGIT))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


@dataclass(frozen=True)
class Blob:
    """An ellipsoid: centre and radii in world units."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]


HEAD_AND_NECK = (Blob((0.0, 0.15, 0.0), (0.45, 0.55, 0.5)), Blob((0.0, -0.5, -0.05), (0.22, 0.4, 0.22)))


class HeadPrior(nn.Module):
    """``strength * (1 - q)`` with q the smallest normalised distance to a blob's centre (q = 1 on it)."""

    def __init__(self, blobs: tuple[Blob, ...] = HEAD_AND_NECK, strength: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("centers", torch.tensor([b.center for b in blobs]), persistent=False)  # (K, 3)
        self.register_buffer("radii", torch.tensor([b.radii for b in blobs]), persistent=False)  # (K, 3)
        self.strength = strength

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # (N, 3) -> (N,)
        if self.strength == 0:
            return points.new_zeros(points.shape[0])
        q = ((points[:, None, :] - self.centers) / self.radii).norm(dim=-1)  # (N, K)
        return self.strength * (1.0 - q.min(dim=-1).values)


@dataclass(frozen=True)
class FieldConfig:
    levels: tuple[int, ...] = (16, 32, 64, 128)  # grid resolution per level
    channels: int = 4  # features per level
    hidden: int = 64  # MLP width
    bound: float = 1.0  # the field lives in [-bound, bound]^3
    prior_strength: float = 10.0  # peak of the head prior's density logit (0: no prior)


class GridField(nn.Module):
    """Density + albedo at points of the cube; ``forward(points (N,3)) -> (sigma (N,), rgb (N,3))``."""

    def __init__(self, config: FieldConfig = FieldConfig(), generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        self.bound = config.bound
        self.grids = nn.ParameterList(
            nn.Parameter(torch.empty(1, config.channels, r, r, r).uniform_(-1e-4, 1e-4, generator=generator))
            for r in config.levels
        )
        width = config.channels * len(config.levels)
        self.mlp = nn.Sequential(
            nn.Linear(width, config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden, config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden, 4),
        )
        self.prior = HeadPrior(strength=config.prior_strength)
        # finite-difference step for normals: one cell of the finest level
        self.normal_eps = 2.0 * config.bound / max(config.levels)

    def features(self, points: torch.Tensor) -> torch.Tensor:  # (N, 3) -> (N, C * L)
        grid = (points / self.bound).view(1, 1, 1, -1, 3).to(self.grids[0].dtype)  # x -> W, y -> H, z -> D
        feats = [
            nn.functional.grid_sample(g, grid, mode="bilinear", padding_mode="border", align_corners=True)
            for g in self.grids
        ]  # each (1, C, 1, 1, N)
        return torch.cat(feats, dim=1).view(-1, points.shape[0]).t()

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(self.features(points))  # (N, 4)
        sigma = trunc_exp(out[:, 0] + self.prior(points))
        return sigma, torch.sigmoid(out[:, 1:])

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.forward(points)[0]

    def param_groups(self, lr: float) -> list[dict]:
        """Grids learn at ``lr``, the MLP ten times slower (as instant-NGP style fields usually do)."""
        return [
            {"params": list(self.grids.parameters()), "lr": lr},
            {"params": list(self.mlp.parameters()), "lr": lr * 0.1},
        ]


class Background(nn.Module):
    """A learnable solid colour."""

    def __init__(self) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(3))

    def forward(self) -> torch.Tensor:  # (3,)
        return torch.sigmoid(self.logit)


class Scene(nn.Module):
    """Everything that trains: the field and the background (one state_dict for checkpoints)."""

    def __init__(self, config: FieldConfig = FieldConfig(), generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.field = GridField(config, generator)
        self.background = Background()

    def param_groups(self, lr: float) -> list[dict]:
        return self.field.param_groups(lr) + [{"params": list(self.background.parameters()), "lr": lr * 0.1}]
