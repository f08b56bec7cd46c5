"""The prompts ``sid eval`` renders: the built-in set (sid/data/eval_prompts.txt) or a user's file.

One prompt per line with ``{}`` where the identity goes; ``# category`` lines name the category of
the lines below. No heavy imports: the CLI reads ``BUILTIN`` for its option default.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sid import limits
from sid.errors import BadInput, first_line

BUILTIN = "builtin"
PLACEHOLDER = "{}"
NEUTRAL = "a person"  # what stands in for the identity in the CLIP text
DEFAULT_PER_PROMPT = 4  # images per prompt (here, not in the runner: the CLI reads them without sid.render)
DEFAULT_SEED = 0


@dataclass(frozen=True)
class EvalPrompt:
    template: str  # with "{}" where the identity goes
    category: str = ""

    def for_identity(self, name: str) -> str:
        """The prompt sid renders: ``@name`` in place of ``{}`` (forced, so it always resolves)."""
        return self.template.replace(PLACEHOLDER, f"@{name}")

    @property
    def clip_text(self) -> str:
        """The prompt without the identity, as CLIP scores it."""
        return " ".join(self.template.replace(PLACEHOLDER, NEUTRAL).split())


def parse_prompts(text: str, source: str = "prompts") -> list[EvalPrompt]:
    """One prompt per line with ``{}``; ``# category`` lines name the category of the lines below."""
    prompts: list[EvalPrompt] = []
    category = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            category = line.lstrip("#").strip() if len(line.lstrip("#").split()) <= 3 else category
            continue
        if PLACEHOLDER not in line:
            raise BadInput(
                f"line {number} of {source} has no {{}} where the identity goes: {line[:60]!r}",
                'write it like "{} on the beach"',
            )
        prompts.append(EvalPrompt(line, category))
    if not prompts:
        raise BadInput(f"{source} holds no prompts", 'put one prompt per line, like "{} on the beach"')
    return prompts


def load_prompts(source: str | Path | None = None) -> list[EvalPrompt]:
    """The built-in set (None or "builtin") or a prompts file."""
    if source is None or str(source) == BUILTIN:
        text = resources.files("sid").joinpath("data/eval_prompts.txt").read_text(encoding="utf-8")
        return parse_prompts(text, "the built-in prompts")
    path = Path(source).expanduser()
    if not path.is_file():
        raise BadInput(
            f"prompts file {path} not found", "pass a text file with one prompt per line, or builtin"
        )
    limits.check("eval", "prompts_bytes", path.stat().st_size)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"could not read prompts file {path}: {first_line(e)}", "save it as UTF-8 text") from e
    prompts = parse_prompts(text, str(path))
    limits.check("eval", "prompts", len(prompts))
    return prompts
