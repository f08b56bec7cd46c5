"""The identity store: one safetensors file per identity, written atomically under a lock.

An identity file holds its token vectors keyed by text-encoder slot (``clip_l``, ``clip_h``,
``clip_g``; see ``slot_for_width``) and string metadata in the safetensors header. Only numpy and
the safetensors header parser are used here, so listing the store never imports torch.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sid import __version__
from sid.config import store_dir
from sid.errors import IdentityExists, IdentityNotFound, InvalidName, StoreError
from sid.files import atomic_write

SUFFIX = ".safetensors"
THUMB_SUFFIX = ".png"
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
MAX_HEADER = 100 * 1024 * 1024  # a safetensors header larger than this is not one of ours
KNOWN_SLOTS = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}


def slot_for_width(width: int) -> str:
    """The slot key for a text encoder of this embedding width (CLIP L/H/G; others by width)."""
    return KNOWN_SLOTS.get(width, f"te{width}")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a legal identity name, else raise InvalidName."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        shown = name if isinstance(name, str) and len(name) <= 60 else f"{str(name)[:57]}..."
        raise InvalidName(
            f"invalid identity name {shown!r}",
            "use 1-40 letters, digits, '_' or '-', starting with a letter",
        )
    return name


@dataclass
class Identity:
    """A learned identity: K token vectors per text-encoder slot, and how they were made."""

    name: str
    vectors: dict[str, np.ndarray]  # slot -> (K, d) float32
    method: str = ""
    base_model: str = ""
    fingerprints: dict[str, str] = field(default_factory=dict)  # slot -> "width:sha256-prefix"
    created: str = ""
    photo_sha256: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    final_loss: float | None = None
    sid_version: str = __version__

    @property
    def num_vectors(self) -> int:
        return next(iter(self.vectors.values())).shape[0] if self.vectors else 0

    @property
    def widths(self) -> dict[str, int]:
        return {slot: int(v.shape[-1]) for slot, v in self.vectors.items()}

    def header(self) -> dict[str, str]:
        """The safetensors ``__metadata__`` (strings only; structured values as JSON)."""
        return {
            "format": "sid",
            "name": self.name,
            "method": self.method,
            "base_model": self.base_model,
            "fingerprints": json.dumps(self.fingerprints, sort_keys=True),
            "num_vectors": str(self.num_vectors),
            "created": self.created,
            "photo_sha256": self.photo_sha256,
            "settings": json.dumps(self.settings, sort_keys=True),
            "final_loss": "" if self.final_loss is None else repr(float(self.final_loss)),
            "sid_version": self.sid_version,
        }

    def summary(self) -> dict[str, Any]:
        """Metadata as plain JSON-able values (what ``sid show --json`` prints)."""
        return {
            "name": self.name,
            "method": self.method,
            "base_model": self.base_model,
            "slots": self.widths,
            "num_vectors": self.num_vectors,
            "fingerprints": self.fingerprints,
            "created": self.created,
            "photo_sha256": self.photo_sha256,
            "settings": self.settings,
            "final_loss": self.final_loss,
            "sid_version": self.sid_version,
        }


def _parse_header(meta: dict[str, str], name: str, shapes: dict[str, list[int]]) -> dict[str, Any]:
    """Turn a stored ``__metadata__`` back into Identity fields (minus vectors)."""
    loss = meta.get("final_loss", "")
    try:
        return {
            "name": meta.get("name") or name,
            "method": meta.get("method", ""),
            "base_model": meta.get("base_model", ""),
            "fingerprints": json.loads(meta.get("fingerprints") or "{}"),
            "created": meta.get("created", ""),
            "photo_sha256": meta.get("photo_sha256", ""),
            "settings": json.loads(meta.get("settings") or "{}"),
            "final_loss": float(loss) if loss else None,
            "sid_version": meta.get("sid_version", ""),
        }
    except (json.JSONDecodeError, ValueError) as e:
        raise StoreError(f"identity {name!r} has corrupt metadata: {e}", "re-import or re-learn it") from e


def read_header(path: Path) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Read a safetensors file's ``__metadata__`` and tensor shapes without loading tensors."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        raise StoreError(f"{path} is not a readable safetensors file: {e}", "check the file") from e
    meta = header.pop("__metadata__", None) or {}
    shapes = {k: v["shape"] for k, v in header.items()}
    return meta, shapes


def identity_to_bytes(identity: Identity) -> bytes:
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in identity.vectors.items()}
    return save(tensors, metadata=identity.header())


def identity_from_file(path: Path, fallback_name: str = "") -> Identity:
    """Load a sid-format identity file (vectors and metadata)."""
    from safetensors.numpy import load_file

    meta, shapes = read_header(path)
    try:
        vectors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise StoreError(f"{path} could not be read: {e}", "re-import or re-learn it") from e
    fields = _parse_header(meta, fallback_name or path.stem, shapes)
    return Identity(vectors=vectors, **fields)


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class IdentityStore:
    """All identities in one folder. Names are unique regardless of case."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else store_dir()

    # -- locking --------------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise writers across processes."""
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / ".lock"), timeout=60):
            yield

    # -- lookup ---------------------------------------------------------------------------------
    def _files(self) -> dict[str, Path]:
        """lower-case name -> file, for every stored identity."""
        if not self.root.is_dir():
            return {}
        return {
            p.stem.lower(): p
            for p in self.root.iterdir()
            if p.suffix == SUFFIX and not p.name.startswith(".") and NAME_RE.match(p.stem)
        }

    def path(self, name: str) -> Path:
        """The file of an existing identity (case-insensitive), else IdentityNotFound."""
        validate_name(name)
        found = self._files().get(name.lower())
        if found is None:
            known = ", ".join(sorted(p.stem for p in self._files().values())) or "none"
            raise IdentityNotFound(
                f"no identity named {name!r} (known: {known})", "see `sid ls`, or learn one with `sid learn`"
            )
        return found

    def exists(self, name: str) -> bool:
        return validate_name(name).lower() in self._files()

    def names(self) -> list[str]:
        return sorted((p.stem for p in self._files().values()), key=str.lower)

    # -- read -----------------------------------------------------------------------------------
    def get(self, name: str) -> Identity:
        path = self.path(name)
        return identity_from_file(path, path.stem)

    def info(self, name: str) -> dict[str, Any]:
        """Metadata of one identity, read from the header only."""
        return self._info(self.path(name))

    def _info(self, path: Path) -> dict[str, Any]:
        meta, shapes = read_header(path)
        fields = _parse_header(meta, path.stem, shapes)
        slots = {k: int(s[-1]) for k, s in shapes.items()}
        nvec = int(next(iter(shapes.values()))[0]) if shapes else 0
        fields["name"] = path.stem
        fields.update(slots=slots, num_vectors=nvec, file=str(path), size_bytes=path.stat().st_size)
        thumb = path.with_suffix(THUMB_SUFFIX)
        fields["thumbnail"] = str(thumb) if thumb.is_file() else None
        return fields

    def list(self) -> list[dict[str, Any]]:
        """Metadata of every identity, sorted by name."""
        return [self._info(p) for _, p in sorted(self._files().items())]

    def thumbnail(self, name: str) -> Path | None:
        thumb = self.path(name).with_suffix(THUMB_SUFFIX)
        return thumb if thumb.is_file() else None

    # -- write ----------------------------------------------------------------------------------
    def save(self, identity: Identity, overwrite: bool = False, thumbnail_png: bytes | None = None) -> Path:
        """Store ``identity`` atomically; refuse an existing name (any case) unless ``overwrite``."""
        validate_name(identity.name)
        _check_vectors(identity.vectors)
        if not identity.created:
            identity.created = now_iso()
        data = identity_to_bytes(identity)
        with self.lock():
            old = self._files().get(identity.name.lower())
            if old is not None and not overwrite:
                raise IdentityExists(
                    f"an identity named {old.stem!r} already exists",
                    "pick another name, `sid rm` it first, or pass --force",
                )
            target = self.root / f"{identity.name}{SUFFIX}"
            if thumbnail_png is not None:
                atomic_write(target.with_suffix(THUMB_SUFFIX), thumbnail_png)
            atomic_write(target, data)
            if old is not None and not _same_file(old, target):  # old spelling of the same name
                old_thumb = old.with_suffix(THUMB_SUFFIX)
                if old_thumb.is_file() and thumbnail_png is None:
                    os.replace(old_thumb, target.with_suffix(THUMB_SUFFIX))
                old_thumb.unlink(missing_ok=True)
                old.unlink()
        return target

    def remove(self, name: str) -> None:
        with self.lock():
            path = self.path(name)
            path.with_suffix(THUMB_SUFFIX).unlink(missing_ok=True)
            path.unlink()

    def rename(self, old: str, new: str) -> Path:
        """Rename an identity (its file and the name in its header)."""
        validate_name(new)
        with self.lock():
            src = self.path(old)
            clash = self._files().get(new.lower())
            if clash is not None and clash != src:
                raise IdentityExists(f"an identity named {clash.stem!r} already exists", "pick another name")
            identity = identity_from_file(src, src.stem)
            identity.name = new
            target = self.root / f"{new}{SUFFIX}"
            atomic_write(target, identity_to_bytes(identity))
            thumb = src.with_suffix(THUMB_SUFFIX)
            if thumb.is_file():
                os.replace(thumb, target.with_suffix(THUMB_SUFFIX))
            if not _same_file(src, target):
                src.unlink()
        return target


def _same_file(a: Path, b: Path) -> bool:
    """True when both paths name one file (also on case-insensitive file systems)."""
    return a.exists() and b.exists() and os.path.samefile(a, b)


def _check_vectors(vectors: dict[str, np.ndarray]) -> None:
    if not vectors:
        raise StoreError("an identity needs at least one slot of vectors", "this is a bug in the caller")
    counts = set()
    for slot, v in vectors.items():
        if v.ndim != 2 or not np.isfinite(v).all():
            raise StoreError(
                f"vectors of slot {slot!r} must be a finite (K, d) array", "re-learn the identity"
            )
        counts.add(v.shape[0])
    if len(counts) != 1:
        raise StoreError("every slot must hold the same number of vectors", "re-learn the identity")
