"""Several processes learning one manifest: which one this is, and objects passed to and from rank 0.

``torchrun`` and ``accelerate launch`` both start one process per device and set RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; sid reads those, joins the group with torch.distributed and
only ever exchanges small Python objects (rows, outcomes, learned vectors), so it uses gloo, which
works on CPU-only machines and across nodes alike. Rank 0 alone writes the store: file locks are
unreliable on network file systems.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sid.errors import LostPeers, first_line

# a rank that finishes its share early waits in the final gather for the slowest rank: hours, not minutes
GATHER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: reads the store, writes it and prints the summary."""
        return self.rank == 0


def world() -> World:
    """This process's place among the launched ones (one process, rank 0, without a launcher)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


@contextmanager
def joined() -> Iterator[World]:
    """This process's world, inside the process group of a multi-process launch (left on the way out)."""
    import torch.distributed as dist

    w = world()
    started = w.size > 1 and not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)
    try:
        yield w
    finally:
        if started:
            dist.destroy_process_group()


def device_of(device: str, w: World) -> str:
    """Each process its own GPU: ``cuda`` means ``cuda:LOCAL_RANK`` under a launcher."""
    if w.size > 1 and device in ("cuda", f"cuda:{w.local_rank}"):
        import torch

        torch.cuda.set_device(w.local_rank)
        return f"cuda:{w.local_rank}"
    return device


def from_main(obj: Any, w: World) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if w.size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    with _peers(w):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def to_main(obj: Any, w: World) -> list[Any]:
    """Every rank's ``obj``, in rank order, on rank 0 (an empty list elsewhere)."""
    if w.size == 1:
        return [obj]
    import torch.distributed as dist

    boxes: list[Any] | None = [None] * w.size if w.main else None
    with _peers(w):
        dist.gather_object(obj, boxes, dst=0)
    return boxes or []


@contextmanager
def _peers(w: World) -> Iterator[None]:
    """A collective whose peer died (rank 0 refused the manifest, a rank ran out of memory) says so,
    rather than as an unexpected gloo error: the dead rank's own error is the one to read."""
    try:
        yield
    except RuntimeError as e:
        raise LostPeers(
            f"rank {w.rank} lost the other processes of this launch ({first_line(e)})",
            "another rank stopped first: its error says why; fix that and launch again (--resume keeps work)",
        ) from e
