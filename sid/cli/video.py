"""``sid video``: short clips of stored identities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from sid.cli import app, out, print_json, printable, server_for, step_bar, warn


@app.command("video")
def video(
    prompt: str = typer.Argument(..., help='Prompt naming identities, e.g. "alice dancing in the rain".'),
    frames: int = typer.Option(16, "--frames", help="Number of frames."),
    fps: float = typer.Option(8.0, "--fps", help="Frames per second of the written file."),
    size: str = typer.Option(
        None, "--size", help="WIDTHxHEIGHT, multiples of 8 (default: the model's native size)."
    ),
    steps: int = typer.Option(25, "--steps", help="Denoising steps."),
    guidance: float = typer.Option(
        None, "--guidance", "-g", help="Guidance scale (default 9 text-to-video, 7.5 AnimateDiff)."
    ),
    seed: int = typer.Option(None, "--seed", help="Seed; random if omitted."),
    negative: str = typer.Option("", "--negative", help="Negative prompt."),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="AnimateDiff's SD 1.5 or SDXL base: preset, hub id or folder (default: the identities' own).",
    ),
    video_model: str = typer.Option(
        None,
        "--video-model",
        help="text-to-video-ms | zeroscope | animatediff | animatediff-v3 | animatediff-sdxl, a hub id, "
        "or a folder (a TextToVideoSDPipeline, or a MotionAdapter for AnimateDiff).",
    ),
    device: str = typer.Option("auto", "--device", help="auto | cuda | mps | cpu."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | fp16 | bf16 | fp32."),
    output: str = typer.Option(
        None,
        "-o",
        "--output",
        help="Output file or folder (default: <prompt>-<seed>.<format> here); a trailing / means a folder.",
    ),
    format_: str = typer.Option(None, "--format", help="mp4 | gif | webm (default: from -o, else mp4)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    low_vram: bool = typer.Option(
        False, "--low-vram", help="Decode frames one by one; offload models to the CPU (CUDA)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    local: bool = typer.Option(False, "--local", help="Run in this process even if `sid serve` runs."),
    json_: bool = typer.Option(False, "--json", help="Print the written file, frames, fps and seed as JSON."),
) -> None:
    """Make a short video; every word naming a stored identity becomes that person.

    SD 2.x identities use text-to-video (ModelScope), SD 1.x identities AnimateDiff on SD 1.5.

    [bold]Examples[/bold]

      sid video "alice dancing in the rain" --seed 7

      sid video "bob surfing" --frames 24 --fps 12 --format gif

      sid video "carol waving" --video-model zeroscope --low-vram

    Ctrl-C writes nothing; the file appears only when it is complete.
    """
    from sid.video import VideoConfig, plan_job, run_job

    cfg = VideoConfig(
        prompt=prompt,
        frames=frames,
        fps=fps,
        size=size,
        steps=steps,
        guidance=guidance,
        seed=seed,
        negative=negative,
        model=model,
        video_model=video_model,
        device=device,
        dtype=dtype,
        output=output,
        format=format_,
        force=force,
        low_vram=low_vram,
    )
    job = plan_job(cfg, warn=warn)  # every check that needs no model, before the progress bar
    remote = server_for(local, model=model, video_model=video_model)
    with step_bar("video", steps, quiet or json_, transient=True) as on_step:
        if remote is not None:
            info = _on_server(remote, job, on_step)
        else:
            info = run_job(job, warn=warn, on_step=on_step).summary()
    if json_:
        print_json(info)
        return
    table = Table("video", "frames", "fps", "seed", "size", "backend")
    table.add_row(
        Text(printable(info["path"])),
        str(info["frames"]),
        f"{info['fps']:g}",
        str(info["seed"]),
        info["size"],
        info["backend"],
    )
    out.print(table)


def _on_server(remote: Any, job: Any, on_step: Callable[..., None] | None) -> dict[str, Any]:
    """The planned clip made on the running server (same seed and format), fetched to the planned path."""

    from sid.files import atomic_write
    from sid.serve.kinds import settings_of

    settings = settings_of("video", job.cfg)
    params = {**settings, "seed": job.seed, "format": job.fmt}

    job_id, result = remote.run("video", params, job.cfg.device, [], warn, on_step)
    atomic_write(job.path, remote.download(job_id, Path(result["path"]).name))
    return {**result, "path": str(job.path)}
