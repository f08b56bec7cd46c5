"""``sid 3d``: an identity as a 3D asset (mesh + turntable video) by score distillation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sid.cli import app, err, loss_bar, out, print_json, server_for, warn


@app.command("3d")
def threed(
    prompt: str = typer.Argument(..., help='Prompt naming identities, e.g. "a bust of alice, marble".'),
    iters: int = typer.Option(2500, "--iters", help="Optimisation steps."),
    resolution: int = typer.Option(64, "--resolution", help="Rendered view size (multiple of 8, >= 16)."),
    guidance: float = typer.Option(
        None, "--guidance", "-g", help="Guidance scale (default: 100 sds, 7.5 ism)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    lr: float = typer.Option(1e-2, "--lr", help="Feature-grid learning rate (MLP: lr / 10)."),
    method: str = typer.Option("sds", "--method", help="sds | ism (interval score matching, experimental)."),
    negative: str = typer.Option("", "--negative", help="Extra negative prompt."),
    model: str = typer.Option(
        None, "--model", "-m", help="Preset (sd21, sd15), hub id or local diffusers folder."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cuda | mps | cpu."),
    dtype: str = typer.Option("auto", "--dtype", help="Frozen model dtype: auto | fp16 | bf16 | fp32."),
    output: str = typer.Option(
        None,
        "-o",
        "--output",
        help="Mesh file or folder (default: ./<prompt>.glb); a trailing / means a folder.",
    ),
    fmt: str = typer.Option(None, "--format", help="glb | ply | obj (default: from -o, else glb)."),
    turntable: str = typer.Option(None, "--turntable", help="Turntable mp4 (default: beside the mesh)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing mesh or turntable."),
    no_turntable: bool = typer.Option(False, "--no-turntable", help="Skip the turntable video."),
    samples: int = typer.Option(96, "--samples", help="Samples per ray."),
    mesh_resolution: int = typer.Option(128, "--mesh-resolution", help="Marching-cubes lattice size."),
    frames: int = typer.Option(72, "--frames", help="Turntable frames (24 fps)."),
    checkpoint_every: int = typer.Option(
        200, "--checkpoint-every", help="Steps between resumable checkpoints."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run with the same arguments."
    ),
    local: bool = typer.Option(False, "--local", help="Run in this process even if `sid serve` runs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_: bool = typer.Option(False, "--json", help="Print the written files and run facts as JSON."),
) -> None:
    """Make a 3D asset of a prompt (every word naming a stored identity becomes that person).

    Writes a vertex-coloured mesh and a turntable video. Ctrl-C keeps the last checkpoint
    (FILE.partial.safetensors beside the mesh); run the same command with --resume to continue.

    [bold]Examples[/bold]

      sid 3d "a bust of alice, marble"

      sid 3d "alice wearing a knight helmet" --iters 3000 -o knight.glb

      sid 3d "a bust of bob" --format obj --turntable bob-spin.mp4
    """
    from sid.threed import ThreeDConfig, check_inputs, generate_3d

    cfg = ThreeDConfig(
        prompt=prompt,
        iters=iters,
        resolution=resolution,
        guidance=guidance,
        seed=seed,
        lr=lr,
        method=method,
        negative=negative,
        model=model,
        device=device,
        dtype=dtype,
        output=output,
        format=fmt,
        turntable=turntable,
        make_turntable=not no_turntable,
        force=force,
        samples=samples,
        mesh_resolution=mesh_resolution,
        frames=frames,
        checkpoint_every=checkpoint_every,
    )
    outputs = check_inputs(cfg)  # before any progress bar shows
    stage = None if quiet or json_ else (lambda text: err.print(f"[dim]{text}…[/dim]", highlight=False))
    # --resume continues from the checkpoint beside the mesh, a file the server never reads
    remote = None if resume else server_for(local, model=model)
    with loss_bar("distilling", quiet or json_) as progress:
        if remote is not None:
            info = _on_server(remote, cfg, outputs, progress, stage)
        else:
            info = generate_3d(cfg, resume=resume, progress=progress, warn=warn, stage=stage).summary()
    if json_:
        print_json(info)
        return
    if info["start_iteration"]:
        out.print(f"resumed at step {info['start_iteration']}", highlight=False)
    out.print(f"mesh: {info['mesh']} ({info['vertices']} vertices, {info['faces']} faces)", highlight=False)
    if info["turntable"] is not None:
        out.print(f"turntable: {info['turntable']}", highlight=False)
    out.print(f"{info['iterations']} steps in {info['seconds']:.0f} s", highlight=False)


def _on_server(remote: Any, cfg: Any, outputs: Any, progress: Any, stage: Any) -> dict[str, Any]:
    """The same run on the running server; the mesh and turntable fetched to the paths checked here."""

    from sid.files import atomic_write
    from sid.serve.kinds import settings_of

    settings = settings_of("3d", cfg)

    params = {**settings, "format": outputs.format}
    job, info = remote.run("3d", params, cfg.device, [], warn, progress=progress, phase=stage)
    local = {"mesh": outputs.mesh, "turntable": outputs.turntable}
    for key, path in local.items():
        if info[key] is not None and path is not None:
            atomic_write(path, remote.download(job, Path(info[key]).name))
            info[key] = str(path)
    return info
