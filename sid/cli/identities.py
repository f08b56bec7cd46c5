"""Store commands: ls, show, rm, mv, export, import. None of them imports torch for sid's own files."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from sid.cli import app, out, print_columns, print_json, warn
from sid.errors import BadInput, IdentityExists
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
        table.add_row(key, "-" if value is None else str(value))
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


@app.command("export")
def export(
    name: str = typer.Argument(..., help="Identity name."),
    output: str = typer.Option(
        None,
        "-o",
        "--output",
        help="File or folder to write (default ./NAME.safetensors); a trailing / means a folder.",
    ),
    fmt: str = typer.Option("sid", "--format", "-f", help="sid | diffusers | a1111 | comfyui."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write an identity to a file that sid, diffusers, AUTOMATIC1111 or ComfyUI loads.

    [bold]Examples[/bold]

      sid export alice -o alice.safetensors

      sid export alice --format a1111 -o ~/stable-diffusion-webui/embeddings/

    diffusers: pipe.load_textual_inversion("alice.safetensors") then prompt with "<alice>".
    A1111 / ComfyUI: the file name is the trigger word ("embedding:alice" in ComfyUI).
    """
    from sid.files import output_file
    from sid.formats import write_export

    identity = IdentityStore().get(name)
    target = output_file(output, f"{identity.name}.safetensors", force)
    write_export(identity, fmt, target)
    out.print(f"Wrote {target} ({fmt}).")


@app.command("import")
def import_(
    file: Path = typer.Argument(
        ..., help="A .safetensors file (sid, diffusers, A1111, ComfyUI) or legacy .pt/.bin."
    ),
    name: str = typer.Option(None, "--name", help="Name to store it under (default: from the file)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing identity of that name."),
    json_: bool = typer.Option(False, "--json", help="Print the stored identity's metadata as JSON."),
) -> None:
    """Import an identity or textual-inversion embedding into the store.

    [bold]Examples[/bold]: sid import alice.safetensors · sid import charturner.pt --name charturner
    """
    from sid.formats import as_identity, infer_name, read_import

    imported = read_import(file)
    chosen = name or infer_name(imported, file)
    if chosen is None:
        if not _interactive():
            raise BadInput(f"cannot infer an identity name from {file.name}", "pass --name NAME")
        chosen = typer.prompt("Name for this identity")
    identity = as_identity(imported, chosen, file.name)
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
