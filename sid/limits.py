"""Checks of the numbers a user gives, done before any model loads: the bounds of every size-like
option, in one table that the checks and docs/usage.md use, and the scales (guidance, control).

Each bound keeps one option from exhausting memory or time by a typo (``-n 100000000000`` held every
image; ``--resolution 100000`` asked for a 41 GB latent bank) and keeps ints within what torch accepts
(a seed must fit in 64 bits). Checked before any model loads. tests/test_bounds.py checks the docs'
table against this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sid.errors import BadInput


@dataclass(frozen=True)
class Limit:
    flag: str  # as the user types it
    low: float
    high: float
    example: str  # a sensible value, for the hint
    multiple: int = 1  # the value must be a multiple of this (image sides: 8, the VAE's factor)

    def describe(self) -> str:
        """'between 1 and 1000', or 'a multiple of 8 between 64 and 2048'."""
        span = f"between {_number(self.low)} and {_number(self.high)}"
        return f"a multiple of {self.multiple} {span}" if self.multiple > 1 else span


def _number(value: float) -> str:
    """4294967295, not 4.29497e+09; 0.5 as 0.5; 1e+308, not its 309 digits."""
    whole = math.isfinite(value) and value == int(value) and abs(value) < 1e16
    return str(int(value)) if whole else f"{value:g}"


SEED_MAX = 2**32 - 1  # seeds are 32-bit, as in A1111; image i of a render uses seed + i
MAX_SIDE = 2048  # rendered images and video frames: width and height

# command -> knob -> limit (a knob is the config field it checks)
LIMITS: dict[str, dict[str, Limit]] = {
    "render": {
        "count": Limit("-n", 1, 10_000, "4"),
        "steps": Limit("--steps", 1, 1000, "30"),
        "side": Limit("--size", 64, MAX_SIDE, "512x512", 8),
        "seed": Limit("--seed", 0, SEED_MAX, "7"),
    },
    "video": {
        "frames": Limit("--frames", 1, 256, "16"),
        "fps": Limit("--fps", 1, 120, "8"),
        "steps": Limit("--steps", 1, 1000, "25"),
        "side": Limit("--size", 64, MAX_SIDE, "512x512", 8),
        "pixels": Limit("--frames × --size", 1, 256 * 512 * 512, "16 frames at 512x512"),
        "seed": Limit("--seed", 0, SEED_MAX, "7"),
    },
    "3d": {
        "iters": Limit("--iters", 1, 100_000, "2500"),
        "resolution": Limit("--resolution", 16, 1024, "64", 8),
        "samples": Limit("--samples", 8, 1024, "96"),
        "mesh_resolution": Limit("--mesh-resolution", 16, 512, "128"),
        "frames": Limit("--frames", 2, 720, "72"),
        "batch": Limit("batch (ThreeDConfig, no flag)", 1, 16, "1"),
        "checkpoint_every": Limit("--checkpoint-every", 0, 100_000, "200"),
        "seed": Limit("--seed", 0, SEED_MAX, "0"),
        "lr": Limit("--lr", 1e-8, 1.0, "0.01"),
    },
    "eval": {
        "per_prompt": Limit("-n", 1, 32, "4"),
        "prompts": Limit("prompts in --prompts", 1, 100, "the builtin set"),
        "prompts_bytes": Limit("the --prompts file's size in bytes", 1, 1 << 20, "a shorter file"),
        "steps": Limit("--steps", 1, 1000, "30"),
        "side": Limit("--size", 64, MAX_SIDE, "512x512", 8),
        "seed": Limit("--seed", 0, SEED_MAX, "0"),
    },
    "learn": {
        "steps": Limit("--steps", 1, 100_000, "the recipe's"),
        "batch_size": Limit("--batch-size", 1, 64, "the recipe's"),
        "bank_size": Limit("--bank-size", 1, 2048, "128"),
        "resolution": Limit("--resolution", 64, 1024, "the model's native size", 8),
        "seed": Limit("--seed", 0, SEED_MAX, "0"),
        "checkpoint_every": Limit("--checkpoint-every", 0, 100_000, "50"),
        "face_index": Limit("--face", 1, 1000, "1 (the leftmost face)"),
        "lr": Limit("--lr", 1e-8, 1.0, "the recipe's"),  # beyond 1, AdamW only diverges: refused, not run
    },
    "learn --from": {  # knobs of a batch, not of each identity's run (not in LearnConfig)
        "parallel": Limit("--parallel", 1, 64, "8"),
    },
}


def check(command: str, knob: str, value: float | None) -> None:
    """BadInput naming the bound when ``value`` lies outside ``LIMITS[command][knob]`` (None: the default)."""
    if value is None:
        return
    limit = LIMITS[command][knob]
    finite = isinstance(value, int) or math.isfinite(value)  # ints of any size; floats but NaN and inf
    multiple = limit.multiple == 1 or value % limit.multiple == 0  # a float of any fraction when 1
    if not (finite and limit.low <= value <= limit.high and multiple):
        shown = value if isinstance(value, int) else _number(value)
        raise BadInput(f"{limit.flag} must be {limit.describe()}, not {shown}", f"try {limit.example}")


def check_all(command: str, values: dict[str, float | None]) -> None:
    """``check`` every knob of ``values`` (knob -> value)."""
    for knob, value in values.items():
        check(command, knob, value)


def check_guidance(guidance: float | None, control_scale: float | None = None) -> None:
    """``--guidance`` and ``--control-scale`` must be finite and not negative (None: the default), so
    ``--guidance nan`` is refused with the same words by every runner."""
    for flag, value, hint in (
        ("--guidance", guidance, "try 7.5"),
        ("--control-scale", control_scale, "try 1.0"),
    ):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise BadInput(f"{flag} must be a finite number of at least 0, not {value}", hint)
