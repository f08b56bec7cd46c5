"""A batch of people to learn: rows read from a CSV manifest or a folder of photos, and their outcomes.

``sid learn --from people.csv`` (columns ``photo,name``, optional ``face`` and ``method``; a name on
several rows is one person's several photos) or ``--from DIR`` (every image, named by its file stem;
a sub-folder is one person, named by the folder). Reading never fails on one bad row: a row that
cannot be understood carries its reason and fails alone later, with the rest of the batch learned.
No heavy imports: the CLI reads and reports manifests before any model loads.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sid.errors import BadInput
from sid.limits import LIMITS

COLUMNS = ("photo", "name")  # required
OPTIONAL = ("face", "method")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Row:
    """One person of a batch; ``error`` is why the row itself is unusable (it then fails alone)."""

    line: int  # the CSV line (the header is line 1) or the photo's 1-based position in the folder
    photo: Path
    name: str
    face: int | None = None  # which face of a group photo (1-based); None: the largest
    method: str | None = None  # None: the command's --method
    error: str = ""


@dataclass
class Outcome:
    """What became of one row: learned, skipped (already learned, with --resume) or failed (and why)."""

    line: int
    name: str
    photo: str
    status: str
    reason: str = ""
    seconds: float = 0.0  # this identity's share of its batch's wall time
    final_loss: float | None = None
    resumed_from: int = 0  # the checkpoint step a --resume continued from (0: learned from the start)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_rows(source: Path, warn: Callable[[str], None] | None = None) -> list[Row]:
    """The rows of a CSV manifest or a folder; a missing, empty or column-less source is an error."""
    if source.is_dir():
        rows = folder_rows(source)
    elif source.is_file():
        rows = csv_rows(source, warn)
    else:
        raise BadInput(f"manifest {source} not found", "give a CSV file (columns photo,name) or a folder")
    if not rows:
        raise BadInput(f"{source} lists no photos", "add rows (photo,name) or images to it")
    return rows


def folder_rows(folder: Path) -> list[Row]:
    """Every image directly in ``folder``, named by its file stem, then every image of each sub-folder,
    named by the sub-folder: a sub-folder is one person, all its photos learned as one identity
    (rows of one name are one person's photos). Sorted, so a batch's rows are the same on every run."""

    def images(where: Path) -> list[Path]:
        return sorted(p for p in where.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

    found = [(p, p.stem) for p in images(folder)]
    for person in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += [(p, person.name) for p in images(person)]
    return [Row(line=i, photo=p, name=name) for i, (p, name) in enumerate(found, start=1)]


def csv_rows(path: Path, warn: Callable[[str], None] | None = None) -> list[Row]:
    """Rows of a CSV with a header naming at least ``photo`` and ``name``; photo paths are relative to it."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise BadInput(
            f"--from {path} is a photo, not a manifest", f"learn one photo with: sid learn {path} --name NAME"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not a UTF-8 text file", "save the manifest as UTF-8 CSV") from None
    if not text.strip():
        return []  # an empty file lists no photos (read_rows says so), rather than lacking columns
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # quoted fields may span lines
    try:
        return _records(reader, path, warn)
    except csv.Error as e:  # an unclosed quote, a field over the csv module's size limit
        hint = "close the quote or shorten the field (one photo,name row per line)"
        raise BadInput(f"{path}, line {reader.line_num}: {e}", hint) from None


def _records(reader: Any, path: Path, warn: Callable[[str], None] | None) -> list[Row]:
    """The rows of ``reader``, each numbered by the line it starts on (blank and multi-line rows count)."""
    header = [c.strip().lower() for c in next(reader, [])]
    twice = sorted({c for c in header if c and header.count(c) > 1})
    if twice:
        raise BadInput(f"{path}: column {', '.join(twice)} appears twice", "keep one column of each name")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise BadInput(
            f"{path} has no {' or '.join(missing)} column",
            f"start it with the header line: {','.join(COLUMNS)} (optional: {', '.join(OPTIONAL)})",
        )
    unknown = [c for c in header if c not in COLUMNS + OPTIONAL]
    if unknown and warn:  # a typo ("methd") would otherwise silently fall back to the default
        warn(f"{path}: column {', '.join(unknown)} ignored (sid reads {', '.join(COLUMNS + OPTIONAL)})")
    rows = []
    line = reader.line_num + 1
    for record in reader:
        cells = {k: v.strip() for k, v in zip(header, record, strict=False) if k in COLUMNS + OPTIONAL}
        if any(cells.values()):  # else a blank line
            rows.append(_row(line, cells, path.parent))
        line = reader.line_num + 1
    return rows


def _row(line: int, cells: dict[str, str], base: Path) -> Row:
    photo = Path(cells.get("photo", "")).expanduser()
    photo = photo if photo.is_absolute() else base / photo
    face, error = None, ""
    if not cells.get("photo"):
        error = "no photo given"
    elif not cells.get("name"):
        error = "no name given"
    elif cells.get("face"):
        bound = LIMITS["learn"]["face_index"]  # --face's bounds, named as the column here
        try:
            face = int(cells["face"])
        except ValueError:
            error = f"face must be a whole number (1 = leftmost), not {cells['face']!r}"
        else:
            if not bound.low <= face <= bound.high:
                error = f"face must be {bound.describe()} (1 = leftmost), not {face}"
    return Row(line, photo, cells.get("name", ""), face, cells.get("method") or None, error)
