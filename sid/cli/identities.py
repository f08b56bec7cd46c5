"""Store commands: ls, show, rm, mv, export, import. None of them imports torch for sid's own files."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from sid.cli import app, err, out, print_columns, print_json, printable, warn
from sid.errors import BadInput, IdentityExists
from sid.interop import TOOLS
from sid.store import IdentityStore


@app.command("ls")
def ls(json_: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List stored identities; files that cannot be read are named with a warning, never hiding the rest.

    [bold]Examples[/bold]: sid ls · sid ls --json (prints {"identities": [...], "errors": [...]})
    """
    store = IdentityStore()
    listing = store.list()
    if json_:
        print_json({"identities": listing.identities, "errors": [asdict(e) for e in listing.errors]})
        return
    for message in dict.fromkeys(bad.error for bad in listing.errors):  # a case clash: both files, one line
        warn(f"skipped: {message}")
    if not listing.identities:
        out.print(f"No identities yet in {store.root}. Learn one with: sid learn PHOTO --name NAME")
        return
    rows = [
        [
            r["name"],
            r["method"],
            r["family"],
            r["base_model"],
            f"{r['num_vectors']} × " + " + ".join(str(d) for d in r["slots"].values()),
            r["created"],
        ]
        for r in listing.identities
    ]
    print_columns(["name", "method", "family", "base model", "vectors", "created"], rows)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Identity name."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show all metadata of one identity.

    [bold]Example[/bold]: sid show alice --json
    """
    info = IdentityStore().info(name)
    if json_:
        print_json(info)
        return
    table = Table("field", "value", show_header=False)
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        table.add_row(key, Text("-" if value is None else printable(value)))  # Text: never read as markup
    out.print(table)


@app.command("rm")
def rm(
    name: str = typer.Argument(..., help="Identity name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete an identity.

    [bold]Example[/bold]: sid rm alice --yes
    """
    store = IdentityStore()
    path = store.path(name)
    if not yes and not typer.confirm(f"Delete identity {path.stem!r}?", default=False):
        err.print(f"Kept {path.stem}: nothing removed.", highlight=False)
        raise typer.Exit(1)
    store.remove(name)
    out.print(f"Removed {path.stem}.")


@app.command("mv")
def mv(
    old: str = typer.Argument(..., help="Current name."), new: str = typer.Argument(..., help="New name.")
) -> None:
    """Rename an identity.

    [bold]Example[/bold]: sid mv alice alice_2023
    """
    path = IdentityStore().rename(old, new)
    out.print(f"Renamed {old} -> {path.stem}.")


def _tools_help() -> str:
    """Which --format each tool takes, from formats.TOOLS (the one table)."""
    return "Which format for which tool: " + "; ".join(
        f"{tool}: --format {fmt} ({how})" for tool, (fmt, how) in TOOLS.items()
    )


@app.command("export", epilog=_tools_help())
def export(
    name: str = typer.Argument(..., help="Identity name."),
    output: str = typer.Option(
        None,
        "-o",
        "--output",
        help="File or folder to write (default ./NAME.safetensors); a trailing / means a folder.",
    ),
    fmt: str = typer.Option(
        "sid", "--format", "-f", help="sid | diffusers | a1111 | comfyui | invokeai (see the tools below)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write an identity to a file that sid, diffusers, AUTOMATIC1111, Forge, ComfyUI or InvokeAI loads.

    [bold]Examples[/bold]

      sid export alice -o alice.safetensors

      sid export alice --format a1111 -o ~/stable-diffusion-webui/embeddings/

      sid export alice --format invokeai -o alice.safetensors

    SDXL in diffusers: load_textual_inversion(sd["clip_l"], token="<alice>", text_encoder=pipe.text_encoder,
    tokenizer=pipe.tokenizer), the same with sd["clip_g"] and text_encoder_2/tokenizer_2, and
    pipe.text_encoder_2.text_model.eos_token_id = pipe.tokenizer_2.eos_token_id (docs/formats.md).
    """
    from sid.formats import export_path, write_export

    identity = IdentityStore().get(name)
    target = export_path(output, identity.name, fmt, force)
    write_export(identity, fmt, target)
    out.print(f"Wrote {target} ({fmt}).")


@app.command("import")
def import_(
    files: list[Path] = typer.Argument(
        ...,
        help="A .safetensors file (sid, diffusers, A1111, ComfyUI), a legacy .pt/.bin, an A1111 .png "
        "embedding; or one single-encoder file per SDXL encoder (diffusers' two files) for one identity.",
    ),
    name: str = typer.Option(None, "--name", help="Name to store it under (default: from the file)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing identity of that name."),
    json_: bool = typer.Option(False, "--json", help="Print the stored identity's metadata as JSON."),
) -> None:
    """Import an identity or textual-inversion embedding into the store.

    [bold]Examples[/bold]: sid import alice.safetensors · sid import charturner.pt --name charturner ·
    sid import learned_embeds.safetensors learned_embeds_2.safetensors --name alice_xl
    """
    from sid.formats import as_identity, infer_name, read_imports

    imported = read_imports(files)
    file = files[0]
    chosen = name or infer_name(imported, file)
    if chosen is None:
        if not _interactive():
            raise BadInput(f"cannot infer an identity name from {file.name}", "pass --name NAME")
        chosen = typer.prompt("Name for this identity")
    identity = as_identity(imported, chosen, ", ".join(f.name for f in files))
    store = IdentityStore()
    try:
        store.save(identity, overwrite=force)
    except IdentityExists as e:
        raise IdentityExists(e.message, "pass --name NEW or --force") from None
    if json_:
        print_json(store.info(chosen))
    else:
        out.print(f"Imported {chosen} ({imported.source_format}, {identity.num_vectors} vectors).")
    if imported.source_format != "sid":
        warn("imported embeddings carry no base-model record; sid checks only their width when rendering")


def _interactive() -> bool:
    import sys

    return sys.stdin is not None and sys.stdin.isatty()
