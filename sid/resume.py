"""Resumable learn runs: what names a run's checkpoint, what it records, and which checkpoints go.

A run checkpoints beside the store (``partial/learn-<key>.safetensors``) under a key of its photos and
settings, so ``--resume`` finds it only with the same inputs; a changed run says what changed and
deletes what can never resume, and a finished run's checkpoint goes once its identities are stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from sid.checkpoints import find_checkpoints
from sid.files import leftover_temp_files
from sid.store import IdentityStore

if TYPE_CHECKING:
    from sid.train import LearnConfig


def run_key(photos: list[Path], names: list[str], cfg: LearnConfig) -> str:
    """A stable id for one run's inputs and settings, naming its resumable checkpoint."""
    h = hashlib.sha256()
    for photo in photos:
        h.update(hashlib.sha256(photo.read_bytes()).digest())
    h.update(json.dumps([names, asdict(cfg)], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# -- the run -----------------------------------------------------------------------------------------
def checkpoint_path(store: IdentityStore, key: str) -> Path:
    return store.root.parent / "partial" / f"learn-{key}.safetensors"


def checkpoint_meta(names: list[str], cfg: LearnConfig, photo_sha256s: list[str]) -> dict[str, str]:
    """What a learn checkpoint records about its run, to tell a changed --resume what changed."""
    return {
        "format": "sid-learn",
        "names": json.dumps(sorted(n.lower() for n in names)),
        "config": json.dumps(asdict(cfg), sort_keys=True, default=str),
        "photos": json.dumps(photo_sha256s),
    }


def same_names(ckpt: Path, meta: dict[str, str]) -> list[tuple[Path, dict[str, str]]]:
    """Learn checkpoints beside ``ckpt`` (itself included) for the same identity names."""
    found = find_checkpoints(ckpt.parent, "learn-*.safetensors")
    return [(p, m) for p, m in found if p == ckpt or m.get("names") == meta["names"]]


def drop_checkpoints(ckpt: Path, meta: dict[str, str]) -> None:
    """Once its identities are stored: this run's checkpoint, and earlier runs' that can never resume,
    with any half-written copy a killed run left of this one."""
    for path in [p for p, _ in same_names(ckpt, meta)] + leftover_temp_files(ckpt):
        path.unlink(missing_ok=True)


def drop_stale_checkpoints(ckpt: Path, meta: dict[str, str], warn: Callable[[str], None] | None) -> None:
    """--resume found no checkpoint of these settings: say what changed, delete what can never resume."""
    stale = [(p, m) for p, m in same_names(ckpt, meta) if p != ckpt]
    if warn is not None:
        if stale:
            warn(
                f"not resuming: the interrupted run of {', '.join(json.loads(meta['names']))} used other "
                f"settings ({_changes(stale[-1][1], meta)}); starting over and deleting its checkpoint"
            )
        else:
            warn("no checkpoint of an interrupted run with these settings: starting from the beginning")
    for path, _ in stale:
        path.unlink(missing_ok=True)


def _changes(old: dict[str, str], new: dict[str, str]) -> str:
    """``--steps 400 -> 300, another photo``: what differs between two runs' checkpoint records."""
    try:
        before, after = json.loads(old.get("config", "{}")), json.loads(new["config"])
    except ValueError:
        return "unknown"
    changes = [
        f"--{k.replace('_', '-')} {before.get(k)} -> {after[k]}" for k in after if before.get(k) != after[k]
    ]
    if old.get("photos") != new["photos"]:
        changes.append("another photo")
    return ", ".join(changes) or "another sid version"
