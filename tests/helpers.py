"""Assertions shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

NOTES = ("warning:", "sid: ")


def one_error(result, needle: str, code: int = 1) -> str:
    """The single `error:` line of a failed command, checked to hold ``needle`` and a hint.

    Warnings and the store's notes (``sid: waiting for the lock``) may come before it; any other line
    (a traceback, a progress bar, a blank line, a second error) fails.
    """
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.rstrip("\n").splitlines() if not line.startswith(NOTES)]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output
    assert " — " in lines[0]  # the hint
    return lines[0]


@contextmanager
def interrupted_at_first_checkpoint(monkeypatch) -> Iterator[None]:
    """Inside the block a learn run writes its first checkpoint and then gets Ctrl-C (a run stopped right
    after saving); after it, checkpoints are written as usual."""
    import sid.stacking

    real_save = sid.stacking.save_state  # what the loop's checkpoints call

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(sid.stacking, "save_state", save_then_interrupt)
    try:
        yield
    finally:
        monkeypatch.setattr(sid.stacking, "save_state", real_save)
