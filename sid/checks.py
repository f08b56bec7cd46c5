"""Checks of the numeric options that several runners share (render, video, eval), done before anything loads.

One place, so ``--guidance nan`` or ``--control-scale inf`` is refused with the same words everywhere.
"""

from __future__ import annotations

import math

from sid.errors import BadInput


def check_guidance(guidance: float | None, control_scale: float | None = None) -> None:
    """``--guidance`` and ``--control-scale`` must be finite and not negative (None: the default)."""
    for flag, value, hint in (
        ("--guidance", guidance, "try 7.5"),
        ("--control-scale", control_scale, "try 1.0"),
    ):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise BadInput(f"{flag} must be a finite number of at least 0, not {value}", hint)
