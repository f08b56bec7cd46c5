"""The ``sid`` command line: a thin Typer layer over the library.

Each command lives in a small module of this package and imports torch, diffusers and friends inside
its body, so ``sid --help``, ``sid ls`` and ``sid show`` start fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from sid import __version__
from sid.errors import Interrupted, SidError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class SidGroup(TyperGroup):
    """Turns SidError into one red line with a hint and a non-zero exit (SID_DEBUG=1 shows the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SidError as e:
            if os.environ.get("SID_DEBUG"):
                raise
            report(e)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:  # commands that finish work in parts say what they kept themselves
            if os.environ.get("SID_DEBUG"):
                raise
            report(Interrupted("interrupted"))
            raise typer.Exit(Interrupted.exit_code) from None


def report(e: SidError) -> None:
    hint = f" [dim]— {e.hint}[/dim]" if e.hint else ""
    err.print(f"[bold red]error:[/bold red] {e.message}{hint}", markup=True, highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


@contextmanager
def step_bar(description: str, total: int, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """An ``on_step`` callback feeding a progress bar that appears with the first step, so that an error
    found before any work stands alone; None when quiet."""
    if quiet:
        yield None
        return
    from rich.progress import Progress

    bar = Progress(console=err)
    task: list[Any] = []

    def advance(n: int) -> None:
        if not task:
            bar.start()
            task.append(bar.add_task(description, total=total))
        bar.advance(task[0], n)

    try:
        yield advance
    finally:
        if task:
            bar.stop()


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, never wrapped or coloured."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


app = typer.Typer(
    cls=SidGroup,
    name="sid",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"sid {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Put a person into a text-to-image diffusion model from one photo, then render them anywhere.

    sid learns a person as two token embeddings of the model's text encoder; prompts that name the
    person (by the identity's name) then render them in images, videos and 3D.

    [bold]Examples[/bold]

      sid learn alice.jpg --name alice

      sid render "alice as a knight" -n 4

      sid ls
    """


def main() -> None:
    app()


# Command modules register themselves on `app` when imported.
from sid.cli import doctor, eval, identities, learn, render, threed, video  # noqa: E402,F401  (registration)
