"""Where sid keeps things, and the user's config file.

One function owns each location so that tests (and power users) can move all of it with
environment variables: SID_HOME for data, SID_CONFIG for the config file.
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sid.errors import BadInput

DEFAULT_LOCK_TIMEOUT = 60.0  # seconds a writer waits for another process's store lock


@dataclass(frozen=True)
class RenderRecipe:
    """How images are sampled: a scheduler of ``sid.render.SCHEDULERS``, its steps and guidance."""

    scheduler: str
    steps: int
    guidance: float


# The render recipes, here in the light config module so that option defaults cost no heavy import.
# `sid render` uses a paper's own test recipe when every identity in the prompt was learned with that
# method (flags and the config's [render] table override it); "default" otherwise (no identity,
# imported ones, or a mix), and for `sid eval`. Celeb Basis's DDIM runs with eta 0 (diffusers' default).
RENDER_RECIPES: dict[str, RenderRecipe] = {
    "default": RenderRecipe("dpm++", 30, 8.5),  # StableIdentity's sampler at fewer steps
    "stableidentity": RenderRecipe("dpm++", 50, 8.5),  # test.ipynb: DPM-Solver multistep, diffusers' 50
    "celebbasis": RenderRecipe("ddim", 50, 10.0),  # its 02_start_test.sh: DDIM, eta 0, scale 10
}
RENDER_STEPS = RENDER_RECIPES["default"].steps
RENDER_GUIDANCE = RENDER_RECIPES["default"].guidance
RENDER_SCHEDULER = RENDER_RECIPES["default"].scheduler
# -q/--json: the command prints its result alone. The CLI sets it; the model loaders read it
# (pipelines.quiet_libraries), so a command that loads no library imports nothing to be quiet.
QUIET: ContextVar[bool] = ContextVar("sid_quiet", default=False)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


def home() -> Path:
    """sid's data folder: $SID_HOME, else the platform's user data dir."""
    env = os.environ.get("SID_HOME")
    if env:
        return _expanded("SID_HOME", env)
    import platformdirs

    return Path(platformdirs.user_data_dir("sid", appauthor=False))


def store_dir() -> Path:
    return home() / "identities"


def config_path() -> Path:
    """The TOML config file: $SID_CONFIG, else config.toml in the platform's user config dir."""
    env = os.environ.get("SID_CONFIG")
    if env:
        return _expanded("SID_CONFIG", env)
    import platformdirs

    return Path(platformdirs.user_config_dir("sid", appauthor=False)) / "config.toml"


def _expanded(variable: str, value: str) -> Path:
    """``value`` with ``~`` expanded; ``~nouser/x`` stays unexpanded, and would become a folder named
    ``~nouser`` wherever sid runs, so it is refused."""
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # Python 3.12+: "Could not determine home directory"
        path = Path(value)
    if path.parts and path.parts[0].startswith("~"):
        user = path.parts[0][1:]
        raise BadInput(f"{variable}={value!r}: there is no user {user!r}", "use an absolute path")
    return path


def load_config() -> dict[str, Any]:
    """The parsed config file, or {} when there is none."""
    path = config_path()
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"config file {path} is not valid TOML: {e}", "fix or delete the file") from e


def setting(flag: str | None, env: str, key: str, default: str) -> str:
    """A user choice, first match wins: the command-line flag, $``env``, config key ``key``, ``default``.

    One precedence rule for every "where does this model come from" setting, so they all behave alike.
    """
    return flag or os.environ.get(env) or config_value(key, str) or default


def config_value(key: str, kind: type | tuple[type, ...]) -> Any:
    """The config file's value at dotted ``key`` (``presets.sd21.candidates``), None when absent.

    A value of another type is a BadInput naming the key, never a crash further on.
    """
    value: Any = load_config()
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
        want = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise BadInput(
            f"config file {config_path()}: {key} = {value!r} is not a {want}", "fix or delete that line"
        )
    return value


def lock_timeout() -> float:
    """Seconds to wait for another sid's store lock: $SID_LOCK_TIMEOUT, else 60."""
    env = os.environ.get("SID_LOCK_TIMEOUT")
    if not env:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(env)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise BadInput(f"SID_LOCK_TIMEOUT={env!r} is not a number of seconds", "unset it or set e.g. 60")
    return value
