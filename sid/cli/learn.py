"""``sid learn``: one photo in, one stored identity out; or a whole manifest of people (``--from``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sid.cli import app, err, loss_bar, out, print_columns, print_json, server_for, shown, warn
from sid.errors import Interrupted

if TYPE_CHECKING:
    from sid.train import LearnConfig, LearnResult


@app.command("learn")
def learn(
    photos: list[Path] = typer.Argument(
        None,
        help="Photo(s): several photos with one --name are one person; one --name per photo learns several "
        "people jointly (--method celebbasis).",
    ),
    name: list[str] = typer.Option(
        None, "--name", "-n", help="Identity name: one for all the photos, or one per photo."
    ),
    manifest: Path = typer.Option(
        None,
        "--from",
        help="Learn many people: a CSV (columns photo,name; optional face, method; a name on several rows "
        "is one person's photos) or a folder (each photo named by its file stem; a sub-folder is one "
        "person, named by the folder).",
    ),
    parallel: int = typer.Option(
        None,
        "--parallel",
        help="With --from: identities learned together per step (default: what fits the free GPU memory, "
        "up to 16; 1 on CPU).",
    ),
    method: str = typer.Option("stableidentity", "--method", help="stableidentity | celebbasis."),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="sd21 | sd15 | sdxl, a hub id or a local diffusers folder (default: the method's, sd21 or "
        "sd15 for celebbasis).",
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
        None, "--face", help="Which face in a group photo, 1 = leftmost, in every photo (default: largest)."
    ),
    face_encoder: str = typer.Option(
        "auto",
        "--face-encoder",
        help="auto (each paper's: vit for stableidentity, arcface for celebbasis) | arcface | vit.",
    ),
    vit_model: str = typer.Option(
        None,
        "--vit-model",
        help="ViT face encoder: hub id or local folder (default: $SID_VIT_MODEL, config vit_model, "
        "the paper's jayanta/vit-base-patch16-224-in21k-face-recognition).",
    ),
    mask: str = typer.Option(
        "parser", "--mask", help="Loss mask: parser (face parsing, with a hair term) | landmarks."
    ),
    face_parser: str = typer.Option(
        None,
        "--face-parser",
        help="Face parser: hub id or local folder (default: $SID_FACE_PARSER, config face_parser, "
        "jonathandinu/face-parsing).",
    ),
    face_models: str = typer.Option(
        None, "--face-models", help="Folder of the insightface pack's .onnx files."
    ),
    checkpoint_every: int = typer.Option(
        50, "--checkpoint-every", help="Steps between resumable checkpoints."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run with the same arguments."
    ),
    low_vram: bool = typer.Option(
        False,
        "--low-vram",
        help="Less GPU memory, slower steps: recompute activations (FLUX: also float8 weights).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing identity of the same name."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_: bool = typer.Option(False, "--json", help="Print the stored identity's metadata as JSON."),
    local: bool = typer.Option(False, "--local", help="Run in this process even if `sid serve` runs."),
) -> None:
    """Learn an identity from one photo and store it; or many, one per row of --from people.csv or DIR.

    [bold]Examples[/bold]

      sid learn alice.jpg --name alice

      sid learn a1.jpg a2.jpg a3.jpg --name alice

      sid learn group.jpg --name bob --face 2

      sid learn alice.jpg --name alice_xl --model sdxl

      sid learn a.jpg b.jpg --name alice --name bob --method celebbasis

      sid learn alice.jpg --name alice --vit-model ./vit-face --face-parser ./face-parsing

      sid learn --from people.csv

      torchrun --nproc-per-node 4 -m sid learn --from people.csv

    Ctrl-C leaves the store untouched (with --from, identities finished so far are stored); run the same
    command with --resume to continue.
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
        vit_model=vit_model,
        mask=mask,
        face_parser=face_parser,
        face_models=face_models,
        checkpoint_every=checkpoint_every,
        low_vram=low_vram,
    )
    if parallel is not None and manifest is None:
        from sid.errors import BadInput

        raise BadInput("--parallel applies to --from batches", "drop --parallel, or learn a list with --from")
    if manifest is not None or not photos or not name:
        return _learn_batch(manifest, photos, name, parallel, cfg, force, resume, quiet, json_)
    paths = {"model": model, "vit_model": vit_model, "face_parser": face_parser, "face_models": face_models}
    remote = server_for(local, **paths)
    try:
        if remote is not None:
            learned = _learn_on_server(remote, photos, name, cfg, force, resume, quiet or json_)
        else:
            from sid.store import IdentityStore

            result = _run_with_progress(photos, name, cfg, force, resume, quiet or json_)
            store = IdentityStore()
            infos = [store.info(i.name) for i in result.identities]
            learned = {"identities": infos, "seconds": result.seconds, "resumed_from": result.resumed_from}
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted; the store is unchanged", "run the same command with --resume to continue"
        ) from None
    if learned["resumed_from"]:
        err.print(f"Resumed from step {learned['resumed_from']}.")
    if json_:
        print_json(learned["identities"])
        return
    for info in learned["identities"]:
        out.print(
            f"Learned [bold]{info['name']}[/bold] ({info['method']}, {info['num_vectors']} vectors, "
            f"mean loss of the last third {info['final_loss']:.4f}) in {learned['seconds']:.1f} s. "
            f'Try: sid render "{info["name"]} as a knight"'
        )


def _learn_on_server(
    remote: Any,
    photos: list[Path],
    names: list[str],
    cfg: LearnConfig,
    force: bool,
    resume: bool,
    quiet: bool,
) -> dict[str, Any]:
    """The same learn on the running server: the photos uploaded as they are (same bytes, same run, so
    --resume works from either side) and the same progress. Its result: the stored identities' metadata,
    the seconds and the step it resumed from."""

    from sid.photos import read_photo_file
    from sid.serve.kinds import settings_of

    for photo in photos:
        read_photo_file(photo)  # a missing photo fails here, as it would in-process
    settings = settings_of("learn", cfg)
    params = {**settings, "names": list(names), "force": force, "resume": resume}
    with loss_bar("learning", quiet) as progress:
        phase = None if quiet else _phase
        return remote.run("learn", params, cfg.device, photos, warn, progress=progress, phase=phase)[1]


def _run_with_progress(
    photos: list[Path], names: list[str], cfg: LearnConfig, force: bool, resume: bool, quiet: bool
) -> LearnResult:
    """Run training: each set-up phase named as it starts, then a rich step bar (loss, it/s, ETA).

    The bar appears with the first step, so an early error is never shown under an empty bar.
    """
    from sid.train import learn as run

    with loss_bar("learning", quiet) as progress:
        return run(
            photos,
            names,
            cfg,
            force=force,
            resume=resume,
            progress=progress,
            warn=warn,
            phase=None if quiet else _phase,
        )


def _learn_batch(
    manifest: Path | None,
    photos: list[Path] | None,
    names: list[str] | None,
    parallel: int | None,
    cfg: LearnConfig,
    force: bool,
    resume: bool,
    quiet: bool,
    json_: bool,
) -> None:
    """``--from``: every row learned or failed with its reason, then one summary (rank 0 only)."""
    from sid.errors import BadInput
    from sid.manifest import read_rows
    from sid.ranks import world

    if manifest is None:
        missing = "no --name given" if photos else "no photo given" if names else "nothing to learn"
        raise BadInput(missing, "give a photo and --name, or --from people.csv")
    if photos or names:
        raise BadInput("--from takes the photos and names from its rows", "drop the photos and --name")
    from sid.many import learn_many

    here = world()
    main = here.main
    with loss_bar("learning", quiet or json_ or not main) as progress:
        try:
            outcomes = learn_many(
                read_rows(manifest, warn if main else None),  # one warning, not one per rank
                cfg,
                parallel,
                force=force,
                resume=resume,
                progress=progress,
                warn=warn,
                phase=None if quiet or json_ or not main else _phase,
            )
        except KeyboardInterrupt:
            kept = "checkpointed (rank 0 stores at the end)" if here.size > 1 else "stored"
            raise Interrupted(
                f"interrupted; the identities finished so far are {kept}",
                "run the same command with --resume to learn the rest",
            ) from None
    if not main:
        return
    if json_:
        print_json([o.as_dict() for o in outcomes])
    else:
        rows = [
            [str(o.line), o.name, o.status, f"{o.seconds:.1f}" if o.seconds else "", _detail(o)]
            for o in outcomes
        ]
        print_columns(["line", "name", "outcome", "s/identity", "detail"], rows)
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        raise BadInput(
            f"{failed} of {len(outcomes)} rows failed",
            "fix those rows and run the same command with --resume: stored identities are skipped",
        )


def _detail(o: Any) -> str:
    if o.reason or o.final_loss is None:
        return o.reason
    return f"loss {o.final_loss:.4f}" + (f", resumed from step {o.resumed_from}" if o.resumed_from else "")


def _phase(text: str) -> None:
    err.print(f"[dim]…[/dim] {shown(text)}", highlight=False)
