"""Cameras on orbits around the head, their view labels, and the rays they shoot.

World frame: y up, the face looks along +z, the head sits in the cube [-bound, bound]^3 at the
origin. Azimuth 0 is straight in front (camera on +z), 90 on the person's left (+x), ±180 behind.
Camera frame as in OpenGL: x right, y up, looking down -z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FRONT_HALF_ANGLE = 45.0  # |azimuth| below this is a front view
BACK_HALF_ANGLE = 45.0  # |azimuth| above 180 minus this is a back view; between them, side views
VIEWS = ("front", "side", "back")


@dataclass(frozen=True)
class OrbitRanges:
    """Where training cameras may be: degrees and world units."""

    azimuth: tuple[float, float] = (-180.0, 180.0)
    elevation: tuple[float, float] = (-10.0, 45.0)
    radius: tuple[float, float] = (2.2, 2.8)
    fov: tuple[float, float] = (30.0, 45.0)  # vertical field of view

    @property
    def middle(self) -> tuple[float, float]:
        """(radius, fov) in the middle of the ranges, for previews and turntables."""
        return sum(self.radius) / 2, sum(self.fov) / 2


ORBIT = OrbitRanges()  # the default training orbit


@dataclass
class Cameras:
    """A batch of B pinhole cameras."""

    c2w: torch.Tensor  # (B, 4, 4) camera-to-world
    fov: torch.Tensor  # (B,) vertical field of view, degrees
    azimuth: torch.Tensor  # (B,) degrees in [-180, 180)
    elevation: torch.Tensor  # (B,) degrees
    radius: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def eye(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]  # (B, 3)

    @property
    def labels(self) -> list[str]:
        return [view_label(float(a)) for a in self.azimuth]

    def to(self, device: str | torch.device) -> Cameras:
        return Cameras(
            *(t.to(device) for t in (self.c2w, self.fov, self.azimuth, self.elevation, self.radius))
        )


def view_label(azimuth: float) -> str:
    """front / side / back for an azimuth in degrees (any range)."""
    a = abs((azimuth + 180.0) % 360.0 - 180.0)  # folded to [0, 180]
    if a < FRONT_HALF_ANGLE:
        return "front"
    if a > 180.0 - BACK_HALF_ANGLE:
        return "back"
    return "side"


def orbit_position(azimuth: torch.Tensor, elevation: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Points on spheres around the origin, (B, 3), from degrees and radii."""
    az, el = torch.deg2rad(azimuth), torch.deg2rad(elevation)
    return torch.stack(
        [
            radius * torch.cos(el) * torch.sin(az),
            radius * torch.sin(el),
            radius * torch.cos(el) * torch.cos(az),
        ],
        -1,
    )


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-world matrices (B, 4, 4) of cameras at ``eye`` (B, 3) looking at ``target`` (origin)."""
    target = torch.zeros_like(eye) if target is None else target
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(forward)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, -forward, eye
    return c2w


def make_cameras(
    azimuth: torch.Tensor, elevation: torch.Tensor, radius: torch.Tensor, fov: torch.Tensor
) -> Cameras:
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    return Cameras(look_at(orbit_position(azimuth, elevation, radius)), fov, azimuth, elevation, radius)


def sample_cameras(batch: int, generator: torch.Generator, ranges: OrbitRanges = ORBIT) -> Cameras:
    """``batch`` random cameras, uniform in each range (on the CPU; move them with ``.to``)."""

    def uniform(bounds: tuple[float, float]) -> torch.Tensor:
        return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(batch, generator=generator)

    return make_cameras(
        uniform(ranges.azimuth), uniform(ranges.elevation), uniform(ranges.radius), uniform(ranges.fov)
    )


def turntable_cameras(frames: int, ranges: OrbitRanges = ORBIT, elevation: float = 15.0) -> Cameras:
    """``frames`` cameras evenly around a full circle, starting in front."""
    radius, fov = ranges.middle
    azimuth = torch.arange(frames, dtype=torch.float32) * (360.0 / frames)
    full = torch.full((frames,), 1.0)
    return make_cameras(azimuth, full * elevation, full * radius, full * fov)


def camera_rays(cams: Cameras, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions (B, size*size, 3) through the pixel centres of square images."""
    device, dtype = cams.c2w.device, cams.c2w.dtype
    pixels = torch.arange(size, device=device, dtype=dtype) + 0.5 - size / 2  # (S,)
    y, x = torch.meshgrid(-pixels, pixels, indexing="ij")  # image rows go down, camera y goes up
    focal = 0.5 * size / torch.tan(torch.deg2rad(cams.fov) / 2)  # (B,)
    local = torch.stack(
        [
            x.expand(len(cams), -1, -1) / focal[:, None, None],
            y.expand(len(cams), -1, -1) / focal[:, None, None],
            -torch.ones(len(cams), size, size, device=device, dtype=dtype),
        ],
        -1,
    )  # (B, S, S, 3)
    dirs = torch.einsum("bij,bhwj->bhwi", cams.c2w[:, :3, :3], local).reshape(len(cams), -1, 3)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = cams.eye[:, None, :].expand_as(dirs)
    return origins, dirs
