"""The losses an optimisation loop logs, kept on the device until a progress update needs them.

Reading a loss with ``.item()`` every step makes the host wait for the GPU; the loops of ``sid learn``
and ``sid 3d`` append device tensors instead and move them off in one transfer when they report or
checkpoint. One class, so both loops sync and smooth the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

WINDOW = 20  # steps averaged into the loss that progress shows


@dataclass
class LossLog:
    values: list[float] = field(default_factory=list)  # every flushed step's loss, in order
    pending: list[torch.Tensor] = field(default_factory=list)  # logged, still on the device

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach())

    def flush(self) -> list[float]:
        """The only host sync: move the pending losses off the device; returns every value so far."""
        if self.pending:
            self.values.extend(torch.stack(self.pending).cpu().tolist())
            self.pending.clear()
        return self.values

    def smoothed(self, window: int = WINDOW) -> float:
        """The mean of the last ``window`` flushed losses (NaN before any)."""
        tail = self.values[-window:]
        return float(sum(tail) / len(tail)) if tail else math.nan
