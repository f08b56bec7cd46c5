"""``sid eval``: identity similarity, CLIP prompt consistency and face diversity of stored identities."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sid.cli import app, out, print_json, server_for, step_bar, warn
from sid.config import RENDER_GUIDANCE, RENDER_SCHEDULER, RENDER_STEPS
from sid.errors import BadInput
from sid.eval import BUILTIN, DEFAULT_CLIP_MODEL, DEFAULT_PER_PROMPT, DEFAULT_SEED


@app.command("eval")
def eval_(
    names: list[str] = typer.Argument(..., help="Identities to evaluate; several are scored side by side."),
    prompts: str = typer.Option(
        BUILTIN, "--prompts", help="builtin, or a file with one prompt per line, {} where the person goes."
    ),
    per_prompt: int = typer.Option(
        DEFAULT_PER_PROMPT, "-n", "--per-prompt", help="Images per prompt (image j: seed + j)."
    ),
    seed: int = typer.Option(
        DEFAULT_SEED, "--seed", help="First seed, the same for every prompt and identity."
    ),
    photo: list[Path] = typer.Option(
        None, "--photo", help="Reference photo: once for all, or once per name (default: stored thumbnail)."
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Preset, hub id or local diffusers folder (default: the model the identities were learned on).",
    ),
    clip_model: str = typer.Option(
        DEFAULT_CLIP_MODEL, "--clip-model", help="CLIP hub id or local folder; none: skip CLIP."
    ),
    face_models: str = typer.Option(None, "--face-models", help="Folder of insightface .onnx files."),
    out_dir: Path = typer.Option(None, "-o", "--out", help="Output folder (default: sid-eval/NAME)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the files of an earlier run in the folder."),
    steps: int = typer.Option(
        None, "--steps", help=f"Denoising steps (default {RENDER_STEPS}; FLUX: its own)."
    ),
    size: str = typer.Option(None, "--size", help="WIDTHxHEIGHT (default: the model's native size)."),
    guidance: float = typer.Option(
        None, "--guidance", "-g", help=f"Guidance scale (default {RENDER_GUIDANCE}; FLUX.1-dev 3.5)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cuda | mps | cpu."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | fp16 | bf16 | fp32."),
    scheduler: str = typer.Option(
        None, "--scheduler", help=f"As in sid render: dpm++, ddim, euler, ... (default {RENDER_SCHEDULER})"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    local: bool = typer.Option(False, "--local", help="Run in this process even if `sid serve` runs."),
) -> None:
    """Score identities: face similarity to the photo, CLIP prompt consistency, face diversity.

    Renders each prompt n times per identity (same seeds); writes eval.json, renders, contact_sheet.png.
    Each render is written as soon as it is done; Ctrl-C keeps them (the report needs the whole run).

    [bold]Examples[/bold]

      sid eval alice --photo alice.jpg

      sid eval alice alice_cb --photo alice.jpg -n 8

      sid eval alice --prompts my_prompts.txt --json
    """
    from sid.eval import EvalConfig, evaluate, load_prompts

    cfg = EvalConfig(
        names=list(names),
        prompts=prompts,
        per_prompt=per_prompt,
        seed=seed,
        steps=steps,
        guidance=guidance,
        size=size,
        scheduler=scheduler,
        model=model,
        device=device,
        dtype=dtype,
        clip_model=clip_model,
        face_models=face_models,
        photos=list(photo or []),
        out_dir=out_dir,
        force=force,
    )
    total = len(load_prompts(prompts)) * len(names) * per_prompt * (steps or RENDER_STEPS)  # evaluate sets it
    # a prompts file, a CLIP or face-model folder: paths the server never reads
    remote = server_for(local, prompts=prompts, model=model, clip_model=clip_model, face_models=face_models)
    with step_bar("rendering", total, quiet or json_) as on_step:
        if remote is not None:
            report = _on_server(remote, cfg, on_step)
        else:
            report = evaluate(cfg, warn=warn, on_step=on_step)
    if json_:
        print_json(report)
        return
    print_report(report)


def _on_server(remote: Any, cfg: Any, on_step: Any) -> dict[str, Any]:
    """The same evaluation on the running server: the same checks here first, the reference photos
    uploaded, every file fetched into the output folder, the report naming the files here."""
    import secrets

    from sid.eval.report import write_report
    from sid.eval.runner import check_eval_inputs, planned_outputs
    from sid.files import atomic_write
    from sid.serve.kinds import settings_of
    from sid.store import IdentityStore

    store = IdentityStore()
    prompts = check_eval_inputs(cfg, store)
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    planned_outputs(cfg, prompts, [store.path(n).stem for n in cfg.names], seed)
    settings = settings_of("eval", cfg)
    photos = [Path(p) for p in cfg.photos]
    job, report = remote.run("eval", {**settings, "seed": seed}, cfg.device, photos, warn, on_step)
    there, here = Path(report["json"]).parent, cfg.output_folder()
    inbox = f"{there.parent / 'in'}/photo-"  # where the server put the photos (sid.serve.uploads)

    def local_path(value: Any) -> Any:
        """The server's paths as this command names them: its output folder, and the uploaded photos."""
        if isinstance(value, dict):
            return {k: local_path(v) for k, v in value.items()}
        if isinstance(value, list):
            return [local_path(v) for v in value]
        if isinstance(value, str) and value.startswith(inbox):
            return str(photos[int(Path(value).stem.rsplit("-", 1)[1]) - 1])
        if isinstance(value, str) and value.startswith(f"{there}/"):
            return str(here / value[len(str(there)) + 1 :])
        return value

    for name in remote.call("GET", f"/api/jobs/{job}")["files"]:
        if name != "eval.json":
            if Path(name).is_absolute() or ".." in Path(name).parts:  # a server writes only under -o
                raise BadInput(f"the server named an output outside the folder: {name!r}", "run with --local")
            target = here / name
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, remote.download(job, name))
    report = local_path(report)
    write_report(here, report)
    return report


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def print_report(report: dict[str, Any]) -> None:
    """A table: one row per prompt, a column group per identity, the overall row last."""
    identities = report["identities"]
    names = list(identities)
    from rich import box

    table = Table(
        title="ID: identity similarity ↑ · miss: no face found ↓ · CLIP: CLIPScore ↑ · div: face diversity",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    table.add_column("prompt", overflow="ellipsis", no_wrap=True, min_width=16, max_width=48)
    for name in names:
        for k, metric in enumerate(("ID", "miss", "CLIP", "div")):
            # the identity's name heads its group of four columns
            header = f"{name if k == 0 else ''}\n{metric}"
            width = max(5, len(name)) if k == 0 else 5
            table.add_column(header, justify="right", no_wrap=True, min_width=width)

    def cells(row: dict[str, Any]) -> list[str]:
        return [
            _num(row["identity_similarity"]),
            _num(row["miss_rate"], "{:.0%}"),
            _num(row["clip_score"], "{:.1f}"),
            _num(row["face_diversity"]),
        ]

    for p_index, prompt in enumerate(report["prompts"]):
        row = [prompt["template"]]
        for name in names:
            row += cells(identities[name]["prompts"][p_index])
        table.add_row(*row)
    table.add_section()
    overall = ["[bold]overall[/bold]"]
    for name in names:
        overall += [f"[bold]{c}[/bold]" for c in cells(identities[name]["overall"])]
    table.add_row(*overall)
    out.print(table)
    settings = report["settings"]
    for name in names:
        ref = identities[name]["reference"]
        how = f"photo {ref['path']}"
        if ref["source"] != "photo":
            how = f"stored thumbnail {ref['path']} (no --photo)"
        out.print(f"{name}: reference face from {how}", highlight=False)
    clip = settings["clip_model"] or "skipped"
    seeds = settings["seeds"]
    out.print(
        f"{settings['per_prompt']} image(s) per prompt, seeds {seeds[0]}-{seeds[-1]}, "
        f"{settings['steps']} steps, {settings['size'][0]}x{settings['size'][1]}, model {settings['model']}, "
        f"CLIP {clip}",
        highlight=False,
    )
    out.print(f"Contact sheet: {report['contact_sheet']}\nReport: {report['json']}", highlight=False)
