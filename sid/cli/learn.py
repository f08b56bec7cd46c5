"""``sid learn``: one photo in, one stored identity out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sid.cli import app, err, out, print_json, warn
from sid.errors import SidError

if TYPE_CHECKING:
    from sid.train import LearnConfig, LearnResult


@app.command("learn")
def learn(
    photos: list[Path] = typer.Argument(
        ..., help="Photo(s) of the person; several only with --method celebbasis."
    ),
    name: list[str] = typer.Option(..., "--name", "-n", help="Identity name (one per photo)."),
    method: str = typer.Option("stableidentity", "--method", help="stableidentity | celebbasis."),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Preset, hub id or local diffusers folder (default: the method's, sd21 or sd15 for celebbasis).",
    ),
    steps: int = typer.Option(
        None,
        "--steps",
        help="Training steps (default: the method's recipe, times the photos for joint learning).",
    ),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default: the method's recipe)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per step (default: recipe)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same device -> same identity."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | mps | cpu."),
    dtype: str = typer.Option("auto", "--dtype", help="GPU autocast: auto | bf16 | fp16 | fp32."),
    resolution: int = typer.Option(
        None, "--resolution", help="Training size (default: the model's native size)."
    ),
    bank_size: int = typer.Option(
        None,
        "--bank-size",
        help="Augmented latents encoded before training (default: one per training sample, as the papers; "
        "fewer reuse them and save VAE encodes).",
    ),
    face: int = typer.Option(
        None, "--face", help="Which face in a group photo, 1 = leftmost (default: largest)."
    ),
    face_encoder: str = typer.Option("arcface", "--face-encoder", help="arcface | vit."),
    face_models: str = typer.Option(
        None, "--face-models", help="Folder of the insightface pack's .onnx files."
    ),
    checkpoint_every: int = typer.Option(
        50, "--checkpoint-every", help="Steps between resumable checkpoints."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run with the same arguments."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing identity of the same name."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_: bool = typer.Option(False, "--json", help="Print the stored identity's metadata as JSON."),
) -> None:
    """Learn an identity from one photo and store it.

    [bold]Examples[/bold]

      sid learn alice.jpg --name alice

      sid learn group.jpg --name bob --face 2

      sid learn a.jpg b.jpg --name alice --name bob --method celebbasis

    Ctrl-C leaves the store untouched; run the same command with --resume to continue.
    """
    from sid.train import LearnConfig

    cfg = LearnConfig(
        method=method,
        model=model,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        dtype=dtype,
        resolution=resolution,
        bank_size=bank_size,
        face_index=face,
        face_encoder=face_encoder,
        face_models=face_models,
        checkpoint_every=checkpoint_every,
    )
    try:
        result = _run_with_progress(photos, name, cfg, force, resume, quiet or json_)
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted; the store is unchanged", "run the same command with --resume to continue"
        ) from None
    if result.resumed_from:
        err.print(f"Resumed from step {result.resumed_from}.")
    if json_:
        from sid.store import IdentityStore

        store = IdentityStore()
        print_json([store.info(i.name) for i in result.identities])
        return
    for identity in result.identities:
        out.print(
            f"Learned [bold]{identity.name}[/bold] ({identity.method}, {identity.num_vectors} vectors, "
            f"mean loss of the last third {identity.final_loss:.4f}) in {result.seconds:.1f} s. "
            f'Try: sid render "{identity.name} as a knight"'
        )


class Interrupted(SidError):
    exit_code = 130


def _run_with_progress(
    photos: list[Path], names: list[str], cfg: LearnConfig, force: bool, resume: bool, quiet: bool
) -> LearnResult:
    """Run training, with a rich progress bar (step, smoothed loss, it/s, ETA) unless quiet."""
    from sid.train import learn as run

    if quiet:
        return run(photos, names, cfg, force=force, resume=resume, warn=warn)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("learning"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.2f} it/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("learn", total=None, loss=float("nan"), rate=0.0)
        first: tuple[float, int] | None = None  # (time, step) of the first report, after all set-up

        def progress(step: int, total: int, loss: float) -> None:
            nonlocal first
            now = time.perf_counter()
            first = first or (now, step)
            rate = (step - first[1]) / (now - first[0]) if step > first[1] else 0.0
            bar.update(task, completed=step, total=total, loss=loss, rate=rate)

        return run(photos, names, cfg, force=force, resume=resume, progress=progress, warn=warn)
