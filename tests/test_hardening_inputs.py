"""Issue 24, inputs (points 6 and 7): every input a user can get wrong reads as their error — usage
errors as click's usage message (exit 2), the rest as one line naming the problem and the fix."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from sid.cli import app

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands


def _params(command: str, kind: str) -> list:
    return [p for p in COMMANDS[command].params if type(p).__name__ == kind]


def _number_option(command: str) -> str | None:
    numbers = (int, float)
    for p in _params(command, "TyperOption"):
        if p.type_descriptor.annotation in numbers:
            return p.opts[0]
    return None


def _required_args(command: str) -> list[str]:
    """Values for a command's required arguments (a bad value must be judged, not a missing one)."""
    return ["x" for p in _params(command, "TyperArgument") if p.required]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_reads_usage_errors_as_usage_errors(command: str) -> None:
    unknown = runner.invoke(app, [command, *_required_args(command), "--no-such-option"])
    assert unknown.exit_code == 2 and "No such option: --no-such-option" in unknown.output, unknown.output
    assert "Usage: " in unknown.output and "bug in sid" not in unknown.output
    if _required_args(command):
        missing = runner.invoke(app, [command])
        assert missing.exit_code == 2 and "Missing argument" in missing.output, missing.output
    number = _number_option(command)
    if number is not None:
        bad = runner.invoke(app, [command, *_required_args(command), number, "abc"])
        assert bad.exit_code == 2 and "Invalid value" in bad.output, bad.output
        assert "bug in sid" not in bad.output


def test_usage_errors_name_the_closest_command_and_option() -> None:
    typo = runner.invoke(app, ["rendr", "x"])
    assert typo.exit_code == 2 and "Did you mean 'render'?" in typo.output, typo.output
    option = runner.invoke(app, ["ls", "--jsn"])
    assert option.exit_code == 2 and "--json" in option.output, option.output
