"""Resumable optimisation state as safetensors: a module, its optimizer, the RNG and the loss history.

Shared by ``sid learn`` (the mapper) and ``sid 3d`` (the scene). No pickles: the optimizer's tensors
are flattened to ``opt.<param>.<name>`` and its param groups kept as JSON in the header.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sid.errors import BadInput, StoreError, first_line
from sid.files import atomic_write
from sid.store import read_header

# Settings that change how a run is paced, shown or written, never what it computes: a --resume with
# other values of these continues its checkpoint. `sid learn` and `sid 3d` both key runs on
# ``result_settings``, so they agree on what "the same run" means.
COSMETIC = frozenset(
    {
        *("checkpoint_every", "log_every", "device", "speed", "force"),
        *("output", "format", "turntable", "make_turntable", "turntable_size", "frames"),
        *("mesh_resolution", "mesh_threshold"),
    }
)


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's settings (a config as a dict) less the cosmetic ones: what a checkpoint must share."""
    return {k: v for k, v in settings.items() if k not in COSMETIC}


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
    path: Path,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    steps: int | None = None,
) -> tuple[int, list[float]]:
    """Restore what ``save_state`` wrote; returns (step reached, losses so far). A checkpoint that is
    truncated, foreign or tampered with (see ``check_state``) is one BadInput; nothing is restored."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError) as e:
        raise _unusable(path, f"unreadable: {first_line(e)}") from e
    step, state, groups = check_state(path, meta, tensors, optimizer, steps)
    device = next(module.parameters()).device
    try:
        module.load_state_dict({k[7:]: v.to(device) for k, v in tensors.items() if k.startswith("module.")})
        optimizer.load_state_dict(
            {
                "state": {
                    pid: {k: v if k == "step" else v.to(device) for k, v in entry.items()}
                    for pid, entry in state.items()
                },
                "param_groups": groups,
            }
        )
        generator.set_state(tensors["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:  # other names, groups or RNG state
        raise _unusable(path, f"it does not fit this run: {first_line(e)}") from e
    return step, tensors["losses"].tolist()


def check_state(
    path: Path,
    meta: dict[str, str],
    tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    steps: int | None,
) -> tuple[int, dict[int, dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """(step, optimizer state by parameter, param groups) of a checkpoint's contents, each checked
    against the run resuming it: a step that is a number within the run (``steps``, when known), the
    tensors a checkpoint holds, and optimizer state shaped like the parameters it is for."""
    try:
        step = int(meta.get("step", ""))
        groups = json.loads(meta.get("param_groups", ""))
    except (ValueError, RecursionError):
        groups = None
    if not isinstance(groups, list):
        raise _unusable(path, "its step or optimizer settings are not a number and a list")
    if not 0 <= step <= (steps if steps is not None else step):
        raise _unusable(path, f"step {step} lies outside this run" + (f" of {steps} steps" if steps else ""))
    if "rng" not in tensors or "losses" not in tensors or tensors["losses"].ndim != 1:
        raise _unusable(path, "it lacks the random state or the loss history")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith("opt."):
            continue
        _, pid, name = (*key.split(".", 2), "", "")[:3]
        if not pid.isdigit() or int(pid) >= len(params):
            raise _unusable(path, f"it holds optimizer state {key!r} for no parameter of this run")
        if name != "step" and value.shape != params[int(pid)].shape:
            raise _unusable(
                path, f"its optimizer state {key!r} is shaped {tuple(value.shape)}, not like its parameter"
            )
        state.setdefault(int(pid), {})[name] = value
    return step, state, groups


def _unusable(path: Path, why: str) -> BadInput:
    return BadInput(
        f"checkpoint {path.name} cannot be resumed: {why}",
        "run the same command without --resume to start over",
    )


def find_checkpoints(folder: Path, pattern: str) -> list[tuple[Path, dict[str, str]]]:
    """Readable checkpoints in ``folder`` matching ``pattern``, with their header metadata, oldest first."""
    found = []
    for path in sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        try:
            found.append((path, read_header(path)[0]))
        except StoreError:
            continue  # a damaged checkpoint is no one's to resume; a new run overwrites its own
    return found
