"""The ``sid`` command line: a thin Typer layer over the library.

Each command lives in a small module of this package and imports torch, diffusers and friends inside
its body, so ``sid --help``, ``sid ls`` and ``sid show`` start fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from sid import __version__
from sid.config import QUIET
from sid.errors import Interrupted, LostPeers, OutOfMemory, SidError, as_sid_error

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


QUIET_FLAGS = ("-q", "--quiet", "--json")


class SidGroup(TyperGroup):
    """Every failure ends as one red line with a hint and a non-zero exit (SID_DEBUG=1 shows the traceback).

    SidError carries its own message; anything else (an out-of-range number, a full disk, a bug) is
    worded by ``as_sid_error``. Ctrl-C exits 130. With -q/--json, libraries stay silent too.
    """

    def invoke(self, ctx: click.Context) -> Any:
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        quiet = any(a in QUIET_FLAGS for a in args)
        try:
            with quiet_output(quiet):
                return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, click.exceptions.Exit, click.ClickException):
            raise  # exits a command chose, and usage errors: typer's bundled click raises TyperExceptions,
            # which typer prints as usage + the closest command or option, exit 2
        except KeyboardInterrupt:
            if os.environ.get("SID_DEBUG"):
                raise
            interrupted = Interrupted("interrupted")  # commands that finish work in parts say what they kept
            if _reports_here(interrupted, own=False):
                report(interrupted)
            raise typer.Exit(Interrupted.exit_code) from None
        except Exception as e:
            if os.environ.get("SID_DEBUG"):
                raise
            error = e if isinstance(e, SidError) else as_sid_error(e)
            own = isinstance(error, (OutOfMemory, LostPeers)) or not isinstance(e, SidError)
            if _reports_here(error, own):
                report(error)
            raise typer.Exit(error.exit_code) from None


def _reports_here(error: SidError, own: bool) -> bool:
    """Under torchrun every rank runs the same checks and fails alike: rank 0 alone prints the error, so
    it reads once; another rank prints only what is its ``own`` (out of memory, lost peers, an error sid
    did not expect), its message then naming the rank."""
    from sid.ranks import world

    here = world()
    if here.main:
        return True
    if own and not isinstance(error, LostPeers):  # that message names its rank already
        error.message = f"rank {here.rank} of {here.size}: {error.message}"
    return own


@contextmanager
def quiet_output(quiet: bool) -> Iterator[None]:
    """While a -q/--json command runs: no library warnings around its output, and no Hub download bars
    (the loaders ask ``config.QUIET``); afterwards, the bars as they were."""
    if not quiet:
        yield
        return
    token = QUIET.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        QUIET.reset(token)
        if "huggingface_hub" in sys.modules:  # a loader ran and hid the Hub's bars for this command
            from sid.pipelines import show_download_bars

            show_download_bars()


def printable(text: object) -> str:
    """``text`` with every control character (ESC, newline, BEL, ...) written as its escape: what a file
    says (a name, metadata, a file name) can never clear the screen, set a title or forge a line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def shown(text: object) -> str:
    """``text`` from outside sid, ready for a rich string with markup: control characters escaped
    (``printable``) and brackets too, so ``[/bold]`` or ``[link=...]`` in metadata prints as itself."""
    return escape(printable(text))


def print_columns(header: list[str], rows: list[list[str]]) -> None:
    """Plain aligned columns on stdout: a list of many rows in a few ms (a rich Table takes ~60 ms for
    100 rows, most of `sid ls`'s budget), and the same text whether or not stdout is a terminal."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


def report(e: SidError) -> None:
    # escaped: a message quotes user input and library errors ('[/x]', gloo's '[/.../pair.cc:553]'),
    # which rich would otherwise read as markup and fail on with a traceback
    hint = f" [dim]— {shown(e.hint)}[/dim]" if e.hint else ""
    err.print(f"[bold red]error:[/bold red] {shown(e.message)}{hint}", markup=True, highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {shown(message)}", highlight=False)


@contextmanager
def step_bar(
    description: str, total: int, quiet: bool, transient: bool = False
) -> Iterator[Callable[..., None] | None]:
    """An ``on_step(n)`` callback feeding a progress bar; None when quiet (see ``_lazy_bar``)."""
    if quiet:
        yield None
        return
    with _lazy_bar(description, total, (), transient) as update:
        yield lambda n, total=None: update(advance=n, **({"total": total} if total else {}))


@contextmanager
def loss_bar(label: str, quiet: bool) -> Iterator[Callable[[int, int, float], None] | None]:
    """A ``progress(step, total, loss)`` callback feeding a bar with the loss, it/s and ETA; None when quiet.

    The rate counts from the first reported step, so set-up time before it does not drag it down.
    """
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.2f} it/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    first: list[tuple[float, int]] = []  # (time, step) of the first report

    with _lazy_bar(label, 0, columns, transient=False) as update:

        def progress(step: int, total: int, loss: float) -> None:
            now = time.perf_counter()
            if not first:
                first.append((now, step))
            t0, s0 = first[0]
            rate = (step - s0) / (now - t0) if step > s0 else 0.0
            update(completed=step, total=total, loss=loss, rate=rate)

        yield progress


@contextmanager
def _lazy_bar(
    description: str, total: int, columns: tuple[Any, ...], transient: bool
) -> Iterator[Callable[..., None]]:
    """Yields ``update(**changes)`` for the one task of a rich Progress (``Progress.update``'s keywords).

    The bar appears with the first update and is stopped only if it started, so an error found before
    any work stands alone: no empty bar above it, and no blank line (rich prints one on stop).
    """
    from rich.progress import Progress

    bar = Progress(*columns, console=err, transient=transient)

    def update(**changes: Any) -> None:
        if not bar.task_ids:
            fields = {k: v for k, v in changes.items() if k not in ("advance", "completed", "total")}
            bar.start()
            bar.add_task(description, total=changes.get("total", total), **fields)
        bar.update(bar.task_ids[0], **changes)

    try:
        yield update
    finally:
        if bar.task_ids:
            bar.stop()


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, never wrapped or coloured, and valid JSON: a NaN or infinite
    number (an imported file's loss, say) is null, never the ``NaN`` json.dumps would write."""
    sys.stdout.write(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n")


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


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


def server_for(local: bool, **paths: str | None) -> Any:
    """The running `sid serve` of this store to submit to (a ``sid.serve.client.Remote``), or None: with
    --local, when none runs, or when an option names a local folder, which a server never reads."""
    if local:
        return None
    from sid.config import store_dir
    from sid.serve.client import connect

    remote = connect(store_dir())
    if remote is None:
        return None
    from pathlib import Path

    named = [f"--{k.replace('_', '-')} {v}" for k, v in paths.items() if v and Path(v).expanduser().exists()]
    if named:
        warn(
            f"running in-process, not on the server at {remote.running.url}: {named[0]} names a local folder"
        )
        return None
    return remote


def main() -> None:
    app()


# Command modules register themselves on `app` when imported.
from sid.cli import doctor, eval, identities, learn, render, serve, threed, video  # noqa: E402,F401  (registration)
