"""What may name an identity: a file name on every platform, and not a word prompts use for
something else (every prompt word that names an identity becomes that person). Standard library only.
"""

from __future__ import annotations

import re
from functools import lru_cache

from sid.errors import InvalidName

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")  # always fullmatch: `$` also matches before a final "\n"
RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])$", re.IGNORECASE)  # Windows device names


def check_name_syntax(name: str) -> str:
    """Return ``name`` if it can name a stored identity's file, else raise InvalidName (lookups use this)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 60 else f"{str(name)[:57]}..."
        control = isinstance(name, str) and any(not c.isprintable() for c in name)
        raise InvalidName(
            f"invalid identity name {shown!r}" + (": it holds control characters" if control else ""),
            "use 1-40 letters, digits, '_' or '-', starting with a letter",
        )
    return name


def validate_name(name: str) -> str:
    """Return ``name`` if a new identity may take it, else raise InvalidName.

    Beyond the syntax: every prompt word that names an identity becomes that person, so common prompt
    words (``a``, ``photo``, ``man``; sid/data/stopwords.txt) are refused, and so are Windows device
    names (``con``, ``nul``, ``com1``), which cannot be files there.
    """
    check_name_syntax(name)
    if RESERVED.match(name):
        raise InvalidName(f"{name!r} is a reserved device name on Windows", "pick another name")
    if name.lower() in stop_words():
        raise InvalidName(
            f"{name!r} is a common prompt word: it would turn every prompt using it into this person",
            "pick a distinctive name, like alice or bob_smith",
        )
    return name


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """The packaged list of prompt words that cannot be identity names."""
    from importlib import resources

    text = resources.files("sid").joinpath("data/stopwords.txt").read_text(encoding="utf-8")
    words = (line.strip().lower() for line in text.splitlines())
    return frozenset(w for w in words if w and not w.startswith("#"))
