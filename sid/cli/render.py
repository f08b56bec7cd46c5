"""``sid render``: images of stored identities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from rich.text import Text

from sid.cli import app, out, print_json, printable, server_for, step_bar, warn
from sid.config import RENDER_RECIPES

if TYPE_CHECKING:
    from sid.render import RenderConfig, Rendered


def _recipes_help() -> str:
    """The recipe table in words, for the help's epilog (the numbers live in config.RENDER_RECIPES)."""
    each = "; ".join(
        f"{method}: {r.scheduler}, {r.steps} steps, guidance {r.guidance:g}"
        for method, r in RENDER_RECIPES.items()
    )
    return (
        "Sampling recipe (each flag, or the config file's render.steps, render.guidance, "
        "render.scheduler overrides it): the paper's own when every identity in the prompt was "
        f"learned with one method, else the default. {each}."
    )


@app.command("render", epilog=_recipes_help())
def render(
    prompt: str = typer.Argument(
        ..., help='Prompt naming identities, e.g. "alice as a knight" or "@alice ...".'
    ),
    count: int = typer.Option(1, "-n", "--count", help="Number of images."),
    seed: int = typer.Option(None, "--seed", help="First seed (image i uses seed + i); random if omitted."),
    steps: int = typer.Option(
        None, "--steps", help="Denoising steps (default: the recipe's, see below; FLUX.1-dev 28, schnell 4)."
    ),
    guidance: float = typer.Option(
        None,
        "--guidance",
        "-g",
        help="Classifier-free guidance scale (default: the recipe's; FLUX.1-dev 3.5).",
    ),
    negative: str = typer.Option("", "--negative", help="Negative prompt."),
    size: str = typer.Option(None, "--size", help="WIDTHxHEIGHT (default: the model's native size)."),
    scheduler: str = typer.Option(
        None,
        "--scheduler",
        help="dpm++ | dpm++-karras | ddim | euler | euler-a | unipc | pndm | heun | lms "
        "(default: the recipe's; FLUX keeps its own).",
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Preset, hub id or local diffusers folder (default: the model the identities were learned on).",
    ),
    device: str = typer.Option("auto", "--device", help="auto | cuda | mps | cpu."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | fp16 | bf16 | fp32."),
    out_dir: Path = typer.Option(Path("sid-renders"), "-o", "--out", help="Output folder (made if missing)."),
    force: bool = typer.Option(False, "--force", help="Overwrite images of the same name in the folder."),
    control: Path = typer.Option(None, "--control", help="Control image for a ControlNet."),
    control_type: str = typer.Option("canny", "--control-type", help="canny | pose | depth."),
    controlnet: str = typer.Option(
        None, "--controlnet", help="ControlNet hub id or folder (default: the preset's)."
    ),
    control_scale: float = typer.Option(1.0, "--control-scale", help="ControlNet conditioning scale."),
    control_is_map: bool = typer.Option(
        False, "--control-is-map", help="The control image already is a pose/depth map."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_: bool = typer.Option(False, "--json", help="Print the written files and seeds as JSON."),
    local: bool = typer.Option(False, "--local", help="Run in this process even if `sid serve` runs."),
) -> None:
    """Render images; every word naming a stored identity becomes that person.

    [bold]Examples[/bold]

      sid render "alice as a knight" -n 4 --seed 7

      sid render "alice and bob having dinner"

      sid render "alice dancing" --control pose.png --control-type pose --control-is-map

    Each image is written as soon as it is done; Ctrl-C keeps the finished ones.
    """
    from sid.render import RenderConfig, settings_for
    from sid.render import render as run
    from sid.store import IdentityStore

    cfg = RenderConfig(
        prompt=prompt,
        count=count,
        seed=seed,
        steps=steps,
        guidance=guidance,
        negative=negative,
        size=size,
        scheduler=scheduler,
        model=model,
        device=device,
        dtype=dtype,
        out_dir=out_dir,
        control=control,
        control_type=control_type,
        controlnet=controlnet,
        control_scale=control_scale,
        control_is_map=control_is_map,
        force=force,
    )
    planned = settings_for(cfg, IdentityStore()).steps  # the bar's length until the model's family is known
    remote = server_for(local, model=model, controlnet=controlnet)
    with step_bar("rendering", count * planned, quiet or json_) as on_step:
        if remote is not None:
            results = _on_server(remote, cfg, on_step)
        else:
            results = run(cfg, warn=warn, on_step=on_step)
    rows = [{"path": str(r.path), "seed": r.seed, "index": r.index} for r in results]
    if json_:
        print_json(rows)
        return
    table = Table("image", "seed")
    for r in rows:
        table.add_row(Text(printable(r["path"])), str(r["seed"]))
    out.print(table)


def _on_server(remote: Any, cfg: RenderConfig, on_step: Callable[..., None] | None) -> list[Rendered]:
    """The same render on the running server: the same checks first, then each image fetched into
    ``-o`` as soon as the server has written it (the same names, the same pixels)."""
    import secrets

    from sid.files import atomic_write, check_output_target, output_folder
    from sid.render import Rendered, check_inputs, image_name
    from sid.serve.kinds import settings_of

    check_inputs(cfg)
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    folder = output_folder(cfg.out_dir)
    targets = [
        check_output_target(folder / image_name(cfg.prompt, i, seed + i), cfg.force) for i in range(cfg.count)
    ]
    settings = settings_of("render", cfg)
    done: list[Rendered] = []

    def on_image(job: str, event: dict[str, Any]) -> None:
        path = targets[event["index"]]
        atomic_write(path, remote.download(job, event["file"]))
        done.append(Rendered(path, event["seed"], event["index"]))

    files = [cfg.control] if cfg.control else []
    remote.run("render", {**settings, "seed": seed}, cfg.device, files, warn, on_step, on_image=on_image)
    return done
