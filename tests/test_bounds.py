"""Issue 13, class 2: every size-like option is bounded, checked before any model loads, and the
error says the limit; docs/usage.md lists the same bounds as sid.limits."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.errors import BadInput
from sid.limits import LIMITS, check
from sid.store import IdentityStore
from tests.test_store import make_identity

runner = CliRunner()
NO_MODEL = "/nonexistent/model"  # every case must fail on its bound, before this is looked at
HUGE = "99999999999999999999"

CASES = [
    (["render", "a castle", "-n", "100000000000"], "-n must be between 1 and 10000"),
    (["render", "a castle", "--steps", "5000"], "--steps must be between 1 and 1000"),
    (["render", "a castle", "--size", "100000x64"], "each side must be a multiple of 8 between 64 and 2048"),
    (["render", "a castle", "--seed", HUGE], f"--seed must be between 0 and 4294967295, not {HUGE}"),
    (["render", "a castle", "--seed", "-1"], "--seed must be between 0 and 4294967295, not -1"),
    (["video", "a dance", "--frames", "100000000"], "--frames must be between 1 and 256"),
    (["video", "a dance", "--fps", "1000"], "--fps must be between 1 and 120, not 1000"),
    (["video", "a dance", "--fps", "nan"], "--fps must be between 1 and 120, not nan"),
    (["video", "a dance", "--frames", "200", "--size", "2048x2048"], "--frames × --size must be between"),
    (["video", "a dance", "--video-model", "animatediff", "--frames", "48"], "this video model handles (32)"),
    (["3d", "a bust", "--iters", "1000000000"], "--iters must be between 1 and 100000"),
    (["3d", "a bust", "--resolution", "100000"], "--resolution must be a multiple of 8 between 16 and 1024"),
    (["3d", "a bust", "--mesh-resolution", "4096"], "--mesh-resolution must be between 16 and 512"),
    (["3d", "a bust", "--frames", "100000"], "--frames must be between 2 and 720"),
    (["3d", "a bust", "--samples", "100000"], "--samples must be between 8 and 1024"),
    (["3d", "a bust", "--seed", HUGE], "--seed must be between 0 and 4294967295"),
    (["eval", "alice", "-n", "1000"], "-n must be between 1 and 32"),
    (["eval", "alice", "--seed", HUGE], "--seed must be between 0 and 4294967295"),
    (["learn", "PHOTO", "--name", "bob", "--resolution", "100000"], "--resolution must be a multiple of 8"),
    (["learn", "PHOTO", "--name", "bob", "--resolution", "500"], "between 64 and 1024, not 500"),
    (["learn", "PHOTO", "--name", "bob", "--steps", "1000000000"], "--steps must be between 1 and 100000"),
    (["learn", "PHOTO", "--name", "bob", "--batch-size", "1000"], "--batch-size must be between 1 and 64"),
    (["learn", "PHOTO", "--name", "bob", "--bank-size", "1000000"], "--bank-size must be between 1 and 2048"),
    (["learn", "PHOTO", "--name", "bob", "--seed", HUGE], "--seed must be between 0 and 4294967295"),
    (["learn", "PHOTO", "--name", "bob", "--checkpoint-every", "-1"], "--checkpoint-every must be between 0"),
    (["learn", "PHOTO", "--name", "bob", "--checkpoint-every", HUGE], "between 0 and 100000, not 9999"),
    (["learn", "PHOTO", "--name", "bob", "--face", "0"], "--face must be between 1 and 1000, not 0"),
    (["learn", "PHOTO", "--name", "bob", "--face", HUGE], "--face must be between 1 and 1000, not 9999"),
]


@pytest.mark.parametrize(
    ("args", "message"), CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_every_size_knob_is_bounded_before_loading(
    args: list[str], message: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    IdentityStore().save(make_identity("alice", width=32))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not looked at before the bounds")
    args = [str(photo) if a == "PHOTO" else a for a in args]
    model = ["--video-model", NO_MODEL] if args[0] == "video" and "--video-model" not in args else []
    model += ["--model", NO_MODEL] if args[0] != "video" else []
    result = runner.invoke(app, [*args, *model])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error:") and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and " — " in result.output  # with a hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]  # nothing written


def test_eval_bounds_the_prompts_file(tmp_path: Path) -> None:
    IdentityStore().save(make_identity("alice", width=32))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"{{}} number {i}\n" for i in range(101)))
    result = runner.invoke(app, ["eval", "alice", "--prompts", str(prompts), "--model", NO_MODEL])
    assert (
        result.exit_code == 1 and "prompts in --prompts must be between 1 and 100, not 101" in result.output
    )
    prompts.write_bytes(b"{}" + b" " * (1 << 20))
    result = runner.invoke(app, ["eval", "alice", "--prompts", str(prompts), "--model", NO_MODEL])
    assert result.exit_code == 1 and "file's size in bytes must be between" in result.output


@pytest.mark.parametrize(("command", "knob"), [(c, k) for c, knobs in LIMITS.items() for k in knobs])
def test_bounds_are_inclusive_and_reject_what_lies_outside(command: str, knob: str) -> None:
    limit = LIMITS[command][knob]
    step = limit.multiple
    check(command, knob, limit.low)  # ints as written in the table; --lr's fractions as they are
    check(command, knob, limit.high)
    check(command, knob, None)  # not given: the default applies
    for outside in (limit.low - step, limit.high + step, math.nan, math.inf):
        with pytest.raises(BadInput, match=re.escape(f"{limit.flag} must be")):
            check(command, knob, outside)
    if step > 1:
        with pytest.raises(BadInput, match=f"a multiple of {step}"):
            check(command, knob, limit.low + step // 2)


def test_docs_list_every_bound() -> None:
    """docs/usage.md's table has one row per bound, with the values of sid.limits."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "usage.md").read_text(encoding="utf-8")
    for command, knobs in LIMITS.items():
        for limit in knobs.values():
            row = f"| `sid {command}` | {limit.flag} | {limit.describe()} |"
            assert row in text, f"missing from docs/usage.md: {row}"
