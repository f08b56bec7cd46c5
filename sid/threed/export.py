"""From a trained field to files: a vertex-coloured mesh (marching cubes) and turntable frames
(written by ``sid.clipfile.write_video``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sid.threed.cameras import ORBIT, OrbitRanges, turntable_cameras
from sid.threed.render import render

MESH_FORMATS = ("glb", "ply", "obj")
DEFAULT_THRESHOLD = 10.0  # density of the extracted surface (the prior's logit reaches ln 10 at q ~ 0.77)
MIN_COMPONENT = 0.05  # drop floaters: pieces with fewer faces than this share of the largest piece


@torch.no_grad()
def density_grid(field: Any, resolution: int, bound: float, chunk: int = 1 << 18) -> np.ndarray:
    """sigma on a resolution^3 lattice over [-bound, bound]^3, indexed [x, y, z]."""
    device = next(field.parameters()).device
    axis = torch.linspace(-bound, bound, resolution, device=device)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    sigma = torch.cat([field.density(points[i : i + chunk]) for i in range(0, points.shape[0], chunk)])
    return sigma.view(resolution, resolution, resolution).float().cpu().numpy()


@torch.no_grad()
def extract_mesh(
    field: Any,
    resolution: int = 128,
    threshold: float = DEFAULT_THRESHOLD,
    warn: Callable[[str], None] | None = None,
) -> Any:
    """A trimesh.Trimesh of the ``threshold`` level set, coloured by the field's albedo at the vertices."""
    import trimesh
    from skimage.measure import marching_cubes

    bound = float(field.bound)
    volume = density_grid(field, resolution, bound)
    low, high = float(volume.min()), float(volume.max())
    level = threshold
    if not low < threshold < high:  # no surface at that density: take one halfway (in log space)
        level = float(np.exp((np.log(max(low, 1e-12)) + np.log(max(high, 1e-12))) / 2))
        if not low < level < high:
            level = (low + high) / 2
        if warn is not None:
            warn(
                f"the field's density never crosses {threshold:g} (range {low:.3g}..{high:.3g}); "
                f"meshing at {level:.3g} instead"
            )
    spacing = 2 * bound / (resolution - 1)
    verts, faces, _, _ = marching_cubes(volume, level=level, spacing=(spacing,) * 3)
    verts = verts - bound
    device = next(field.parameters()).device
    points = torch.from_numpy(verts.astype(np.float32)).to(device)
    rgb = torch.cat([field(points[i : i + (1 << 18)])[1] for i in range(0, max(len(points), 1), 1 << 18)])
    colors = np.concatenate([(rgb.clamp(0, 1).cpu().numpy() * 255).round(), np.full((len(verts), 1), 255)], 1)
    mesh = trimesh.Trimesh(verts, faces, vertex_colors=colors.astype(np.uint8), process=False)
    return largest_pieces(mesh)


def largest_pieces(mesh: Any, share: float = MIN_COMPONENT) -> Any:
    """Drop small disconnected pieces (SDS floaters): keep pieces of at least ``share`` of the largest."""
    import trimesh

    pieces = mesh.split(only_watertight=False)
    if len(pieces) <= 1:
        return mesh
    biggest = max(len(p.faces) for p in pieces)
    kept = [p for p in pieces if len(p.faces) >= share * biggest]
    return trimesh.util.concatenate(kept)


def write_mesh(mesh: Any, path: Path, fmt: str) -> None:
    """The mesh as ``fmt`` bytes, written whole or not at all."""
    from sid.files import atomic_write

    data = mesh.export(file_type=fmt)
    atomic_write(path, data if isinstance(data, bytes) else data.encode("utf-8"))


@torch.no_grad()
def render_turntable(
    field: Any,
    frames: int,
    size: int,
    samples: int,
    ranges: OrbitRanges = ORBIT,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    chunk: int = 1 << 15,
    on_frame: Callable[[], None] | None = None,
) -> list[np.ndarray]:
    """``frames`` RGB uint8 images (size, size, 3) around a full circle, albedo on ``background``."""
    device = next(field.parameters()).device
    cams = turntable_cameras(frames, ranges).to(device)
    bg = torch.tensor(background, device=device)
    images = []
    for i in range(frames):
        one = type(cams)(
            *(x[i : i + 1] for x in (cams.c2w, cams.fov, cams.azimuth, cams.elevation, cams.radius))
        )
        out = render(field, one, size, samples, bg, float(field.bound), chunk=chunk)
        images.append(
            (out.image[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        )
        if on_frame is not None:
            on_frame()
    return images
