"""Resumable optimisation state as safetensors: a module, its optimizer, the RNG and the loss history.

Shared by ``sid learn`` (the mapper) and ``sid 3d`` (the scene). No pickles: the optimizer's tensors
are flattened to ``opt.<param>.<name>`` and its param groups kept as JSON in the header.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sid.errors import BadInput, StoreError
from sid.files import atomic_write
from sid.store import read_header


def save_state(
    path: Path,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    step: int,
    losses: list[float],
    meta: dict[str, str] | None = None,
) -> None:
    """Write the state atomically; ``meta`` adds header strings (e.g. what run it belongs to)."""
    from safetensors.torch import save

    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for k, v in state.items():
            tensors[f"opt.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tensors["rng"] = generator.get_state()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    header = {**(meta or {}), "step": str(step), "param_groups": json.dumps(opt["param_groups"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save(tensors, metadata=header), follow_links=False)


def step_reached(path: Path) -> int:
    """The step a checkpoint written by ``save_state`` reached; 0 when there is none or it is unreadable
    (its run starts over)."""
    try:
        return int(read_header(path)[0].get("step", 0)) if path.is_file() else 0
    except (StoreError, ValueError):
        return 0


def load_state(
    path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, list[float]]:
    """Restore what ``save_state`` wrote; returns (step reached, losses so far)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    device = next(module.parameters()).device
    try:
        module.load_state_dict({k[7:]: v.to(device) for k, v in tensors.items() if k.startswith("module.")})
    except RuntimeError as e:  # other parameter names or shapes: written by another sid version
        raise BadInput(
            f"checkpoint {path.name} does not fit this run (written by another sid version?)",
            "run the same command without --resume to start over",
        ) from e
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v if name == "step" else v.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    generator.set_state(tensors["rng"])
    return int(meta["step"]), tensors["losses"].tolist()


def find_checkpoints(folder: Path, pattern: str) -> list[tuple[Path, dict[str, str]]]:
    """Readable checkpoints in ``folder`` matching ``pattern``, with their header metadata, oldest first."""
    found = []
    for path in sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        try:
            found.append((path, read_header(path)[0]))
        except StoreError:
            continue  # a damaged checkpoint is no one's to resume; a new run overwrites its own
    return found
