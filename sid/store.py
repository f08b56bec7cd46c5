"""The identity store: one safetensors file per identity, written atomically under a lock.

An identity file holds its token vectors keyed by text-encoder slot (``clip_l``, ``clip_h``,
``clip_g``; see ``sid.families``) and string metadata in the safetensors header, including the
face thumbnail (base64 PNG): one file per identity, so an identity and its face change together or
not at all. Files written before sid kept the thumbnail inside are still read with their ``.png``.
Listing reads headers only (safetensors' ``safe_open``) through a derived cache, ``.listing.json``,
of each file's header fields keyed by its size, mtime and inode: `sid ls` opens only files that
changed since the last listing, and never imports torch (nor numpy, once the cache is warm).

Every file is checked when read: one corrupt or foreign file is reported by name and never hides
the others (``IdentityStore.list`` returns the good rows and the problems).

One concern, the identity files and the folder that holds them (format, checks, listing), hence one
file past 450 lines; the lock that serialises writers is ``sid.storelock``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sid import __version__
from sid.config import store_dir
from sid.errors import (
    IdentityExists,
    IdentityNotFound,
    SidError,
    StoreError,
    WriteError,
    first_line,
    os_error,
)
from sid.families import family_of_identity
from sid.files import atomic_path, atomic_write, no_link
from sid.names import NAME_RE, check_name_syntax, validate_name
from sid.storelock import store_lock

if TYPE_CHECKING:  # numpy loads only where vectors are read or written: `sid ls` never needs it
    import numpy as np

SUFFIX = ".safetensors"
THUMB_SUFFIX = ".png"
MAX_VECTORS = 75  # more than fits in one CLIP prompt is not an embedding
MIN_WIDTH = 8  # narrower rows are not token embeddings
# An identity's vectors stay within this many times the largest token embedding of the text encoder
# they load into: learned or imported ones come nowhere near it; 3e38 is finite, yet renders black.
SCALE_LIMIT = 100.0
THUMB_KEY = "thumbnail"  # header key of the base64 PNG face thumbnail ("" = none; absent = older file)
MIN_FREE_BYTES = 64 * 1024 * 1024  # checkpoints and the identity of one learn run fit easily
LISTING_CACHE = ".listing.json"  # derived data, rebuilt whenever it is missing, stale or unreadable
LISTING_FORMAT = 1  # bump when the fields ``IdentityStore._info`` returns change


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
    thumbnail_png: bytes | None = field(default=None, repr=False)  # the aligned face it was learned from

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
            THUMB_KEY: base64.b64encode(self.thumbnail_png).decode("ascii") if self.thumbnail_png else "",
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


def _parse_header(meta: dict[str, str], path: Path) -> dict[str, Any]:
    """Turn a stored ``__metadata__`` back into Identity fields (minus vectors and thumbnail)."""
    loss = meta.get("final_loss", "")
    try:
        fields = {
            "name": meta.get("name") or path.stem,
            "method": meta.get("method", ""),
            "base_model": meta.get("base_model", ""),
            "fingerprints": json.loads(meta.get("fingerprints") or "{}"),
            "created": meta.get("created", ""),
            "photo_sha256": meta.get("photo_sha256", ""),
            "settings": json.loads(meta.get("settings") or "{}"),
            "final_loss": float(loss) if loss else None,
            "sid_version": meta.get("sid_version", ""),
        }
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError; deep nesting recurses
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise StoreError(f"{path} has corrupt metadata: {reason}", "re-import or re-learn it") from e
    if not isinstance(fields["fingerprints"], dict) or not isinstance(fields["settings"], dict):
        raise StoreError(
            f"{path} has corrupt metadata (fingerprints or settings)", "re-import or re-learn it"
        )
    return fields


def read_header(path: Path) -> tuple[dict[str, str], dict[str, list[int]]]:
    """A safetensors file's ``__metadata__`` and tensor shapes, without reading any tensor.

    safetensors' own reader checks the header as the format defines it (string metadata, dtypes,
    shapes and offsets that fit the file), so a malformed file is one StoreError naming it.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            shapes = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except (OSError, SafetensorError) as e:
        raise StoreError(
            f"{path} is not a readable safetensors file: {first_line(e)}", "check the file"
        ) from e
    return meta, shapes


def check_vectors(vectors: dict[str, np.ndarray], source: str, error: type[SidError] = StoreError) -> None:
    """Every slot a finite float (K, d) array with the same K: what an identity must hold.

    ``source`` names the file or identity in the message; ``error`` picks the error class (BadInput
    for a file being imported, StoreError for the store).
    """
    import numpy as np

    if not vectors:
        raise error(f"{source} holds no vectors", "check the file")
    counts = set()
    for slot, v in vectors.items():
        if not np.issubdtype(v.dtype, np.floating):
            raise error(f"{source}: slot {slot} holds {v.dtype} values, not floats", "check the file")
        if v.ndim != 2 or not 1 <= v.shape[0] <= MAX_VECTORS or v.shape[1] < MIN_WIDTH:
            raise error(
                f"{source}: slot {slot} has shape {tuple(v.shape)}, not (vectors, width)", "check the file"
            )
        if not np.isfinite(v).all():
            raise error(f"{source}: slot {slot} holds NaN or infinite values", "re-learn or re-export it")
        counts.add(v.shape[0])
    if len(counts) != 1:
        raise error(f"{source}: slots hold different numbers of vectors", "check the file")


def check_scale(vectors: np.ndarray, largest: float, source: str) -> None:
    """StoreError when a row of ``vectors`` is longer than ``SCALE_LIMIT`` times ``largest``, the longest
    token embedding of the text encoder they are for (only a model knows that scale)."""
    import numpy as np

    norm = float(np.linalg.norm(vectors.astype(np.float64), axis=-1).max())
    if not norm <= SCALE_LIMIT * largest:
        raise StoreError(
            f"{source} holds vectors of length {norm:.3g}, far beyond this text encoder's token embeddings "
            f"(at most {largest:.3g})",
            "re-learn or re-import it: no prompt renders with vectors this large",
        )


def identity_to_bytes(identity: Identity) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in identity.vectors.items()}
    return save(tensors, metadata=identity.header())


def identity_from_file(path: Path, name: str = "") -> Identity:
    """Load a sid-format identity file (vectors, metadata and thumbnail), checking every part.

    ``name`` overrides the header's: in the store the file name is the identity's name.
    """
    import numpy as np
    from safetensors.numpy import load_file

    meta, _ = read_header(path)
    try:
        vectors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise StoreError(f"{path} could not be read: {e}", "re-import or re-learn it") from e
    check_vectors(vectors, str(path))
    fields = _parse_header(meta, path)
    if name:
        fields["name"] = name
    vectors = {k: v.astype(np.float32) for k, v in vectors.items()}
    return Identity(vectors=vectors, thumbnail_png=_thumbnail_of(path, meta), **fields)


def _thumbnail_of(path: Path, meta: dict[str, str]) -> bytes | None:
    """The embedded thumbnail; for files from before sid embedded it, the ``.png`` beside the file."""
    if THUMB_KEY in meta:
        try:
            return base64.b64decode(meta[THUMB_KEY], validate=True) or None
        except ValueError as e:
            raise StoreError(f"{path} has a corrupt thumbnail", "re-learn or re-import it") from e
    legacy = path.with_suffix(THUMB_SUFFIX)
    return legacy.read_bytes() if legacy.is_file() else None


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class BadFile:
    """A file in the store that cannot be used, and why (listed, never hiding the good ones)."""

    file: str
    error: str


@dataclass
class Listing:
    identities: list[dict[str, Any]]  # metadata of every readable identity, sorted by name
    errors: list[BadFile]  # every file that could not be listed


def _stderr(message: str) -> None:
    sys.stderr.write(f"sid: {message}\n")
    sys.stderr.flush()


class IdentityStore:
    """All identities in one folder. Names are unique regardless of case."""

    def __init__(self, root: Path | None = None, notify: Callable[[str], None] = _stderr) -> None:
        self.root = Path(root) if root is not None else store_dir()
        self.notify = notify  # how waiting for another process's lock is announced

    # -- locking --------------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise writers across processes; say who holds the lock while waiting for it."""
        self._make_root()
        with store_lock(self.root, self.notify):
            yield

    def _make_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(e, f"create the store folder {self.root}") from e

    def check_writable(self, *folders: Path) -> None:
        """Fail now, not after training, when the store (or ``folders``) cannot take new files."""
        self._make_root()
        for folder in (self.root, *folders):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder) as f:
                    f.write(b"sid")
                    f.flush()
                    os.fsync(f.fileno())
                free = shutil.disk_usage(folder).free
            except OSError as e:
                raise os_error(e, f"write to {folder}") from e
            if free < MIN_FREE_BYTES:
                raise StoreError(
                    f"only {free // 2**20} MB free in {folder}; sid needs {MIN_FREE_BYTES // 2**20} MB",
                    "free some disk space, or set SID_HOME to a folder on another disk",
                )

    # -- lookup ---------------------------------------------------------------------------------
    def _scan(self) -> tuple[dict[str, list[Path]], list[BadFile]]:
        """lower-case name -> its file(s), and the files that cannot be identities by their name."""
        found: dict[str, list[Path]] = {}
        bad: list[BadFile] = []
        try:
            entries = sorted(self.root.iterdir()) if self.root.is_dir() else []
        except OSError as e:
            raise os_error(e, f"read the store folder {self.root}") from e
        for p in entries:
            if p.suffix != SUFFIX or p.name.startswith("."):
                continue
            try:
                no_link(p)
            except StoreError as e:
                bad.append(BadFile(str(p), e.message))
                continue
            if not NAME_RE.fullmatch(p.stem):
                bad.append(BadFile(str(p), f"{p} is not named like an identity: rename the file"))
                continue
            found.setdefault(p.stem.lower(), []).append(p)
        return found, bad

    def _files(self) -> dict[str, Path]:
        """lower-case name -> file, for every stored identity (one of the spellings where two clash)."""
        return {key: paths[0] for key, paths in self._scan()[0].items()}

    def path(self, name: str) -> Path:
        """The file of an existing identity (case-insensitive), else IdentityNotFound."""
        no_link(self.root / f"{check_name_syntax(name)}{SUFFIX}")
        found = self._scan()[0].get(name.lower())
        if found is None:
            known = ", ".join(self.names()) or "none"
            raise IdentityNotFound(
                f"no identity named {name!r} (known: {known})", "see `sid ls`, or learn one with `sid learn`"
            )
        if len(found) > 1:
            raise StoreError(_clash_message(found), "rename or remove all but one of those files")
        return found[0]

    def exists(self, name: str) -> bool:
        return check_name_syntax(name).lower() in self._scan()[0]

    def check_free(self, name: str, overwrite: bool, hint: str) -> None:
        """IdentityExists, naming the stored spelling, if ``name`` is taken in any case (unless overwrite)."""
        taken = self._files().get(name.lower())
        if taken is not None and not overwrite:
            raise IdentityExists(f"an identity named {taken.stem!r} already exists", hint)

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
        fields = _parse_header(meta, path)
        if not shapes or any(len(s) != 2 for s in shapes.values()):
            raise StoreError(f"{path} holds no (vectors, width) tensors", "re-import or re-learn it")
        fields["name"] = path.stem
        fields.update(
            slots={k: int(s[-1]) for k, s in shapes.items()},
            num_vectors=int(next(iter(shapes.values()))[0]),
            file=str(path),
            size_bytes=path.stat().st_size,
        )
        fields["family"] = family_of_identity(fields["slots"]).key
        legacy = path.with_suffix(THUMB_SUFFIX)
        if THUMB_KEY in meta:
            fields["thumbnail"] = "embedded" if meta[THUMB_KEY] else None
        else:
            fields["thumbnail"] = str(legacy) if legacy.is_file() else None
        return fields

    def list(self) -> Listing:
        """Metadata of every readable identity, and every file that is not one (never one hiding the rest).

        Rows of files unchanged since the last listing come from the listing cache; the others are
        read and the cache rewritten (best effort: a read-only store still lists).
        """
        found, errors = self._scan()
        cached, fresh, rows = self._read_listing_cache(), {}, []
        for paths in found.values():
            if len(paths) > 1:
                errors.extend(BadFile(str(p), _clash_message(paths)) for p in paths)
                continue
            path = paths[0]
            try:
                stamp = _stamp(path)  # before reading: a file replaced meanwhile gets a new stamp
                hit = cached.get(path.name)
                row = hit["info"] if isinstance(hit, dict) and hit.get("stamp") == stamp else self._info(path)
                row["file"] = str(path)  # the store folder itself may have moved since it was cached
            except SidError as e:
                errors.append(BadFile(str(path), e.message))
                continue
            except OSError as e:  # removed or unreadable since the scan
                errors.append(BadFile(str(path), os_error(e, f"read {path}").message))
                continue
            rows.append(row)
            if row["thumbnail"] in ("embedded", None):  # a legacy .png beside the file may come and go
                fresh[path.name] = {"stamp": stamp, "info": row}
        if fresh != cached:
            self._write_listing_cache(fresh)
        rows.sort(key=lambda r: r["name"].lower())
        return Listing(rows, sorted(errors, key=lambda b: b.file))

    def _listing_key(self) -> str:
        return f"{__version__}/{LISTING_FORMAT}"

    def _read_listing_cache(self) -> dict[str, Any]:
        no_link(self.root / LISTING_CACHE)
        try:
            data = json.loads((self.root / LISTING_CACHE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        ok = (
            isinstance(data, dict)
            and data.get("key") == self._listing_key()
            and isinstance(data.get("rows"), dict)
        )
        return data["rows"] if ok else {}

    def _write_listing_cache(self, rows: dict[str, Any]) -> None:
        try:
            data = {"key": self._listing_key(), "rows": rows}
            text = json.dumps(data, separators=(",", ":")).encode("utf-8")
            atomic_write(self.root / LISTING_CACHE, text, follow_links=False)
        except OSError:  # a read-only or full store: the listing itself is still right
            pass

    def thumbnail(self, name: str) -> bytes | None:
        """The PNG of the face the identity was learned from, if it has one."""
        return self.get(name).thumbnail_png

    # -- write ----------------------------------------------------------------------------------
    def save(self, identity: Identity, overwrite: bool = False) -> Path:
        """Store ``identity`` (vectors, metadata and thumbnail in one file) atomically."""
        return self.save_all([identity], overwrite)[0]

    def save_all(self, identities: list[Identity], overwrite: bool = False) -> list[Path]:
        """Store identities together, one file each: all of them or, on failure, none.

        Every file is written and fsynced under a temporary name before any is renamed into place, so
        a full disk or a taken name leaves the store as it was (only a failing rename, which needs no
        space, could split a group). Refuses an existing name (any case) unless ``overwrite``.
        """
        for identity in identities:
            validate_name(identity.name)
            check_vectors(identity.vectors, f"identity {identity.name!r}")
            identity.created = identity.created or now_iso()
        payloads = [identity_to_bytes(identity) for identity in identities]
        with self.lock():
            olds, targets = [], []
            for identity in identities:
                self.check_free(
                    identity.name, overwrite, "pick another name, `sid rm` it first, or pass --force"
                )
                olds.append(self._files().get(identity.name.lower()))
                targets.append(self.root / f"{identity.name}{SUFFIX}")
            with _writing(f"write to {self.root}"), ExitStack() as renames:  # renamed as the block closes
                for target, data in zip(targets, payloads, strict=True):
                    renames.enter_context(atomic_path(target, follow_links=False)).write_bytes(data)
            for old, target in zip(olds, targets, strict=True):
                self._drop_old(old, target)
        return targets

    def remove(self, name: str) -> None:
        with self.lock():
            path = self.path(name)
            with _writing(f"remove {path}"):
                path.unlink()
            path.with_suffix(THUMB_SUFFIX).unlink(missing_ok=True)  # a thumbnail from before sid embedded it

    def rename(self, old: str, new: str) -> Path:
        """Rename an identity (its file and header name; an older separate thumbnail moves inside)."""
        validate_name(new)
        with self.lock():
            src = self.path(old)
            clash = self._files().get(new.lower())
            if clash is not None and clash != src:
                raise IdentityExists(f"an identity named {clash.stem!r} already exists", "pick another name")
            identity = identity_from_file(src, src.stem)
            identity.name = new
            target = self.root / f"{new}{SUFFIX}"
            with _writing(f"write {target}"):
                atomic_write(target, identity_to_bytes(identity), follow_links=False)
            self._drop_old(src, target)
        return target

    def _drop_old(self, old: Path | None, target: Path) -> None:
        """After ``target`` is written: remove a replaced other spelling and any separate old thumbnail.

        The new file already carries its own thumbnail (or says it has none), so a crash before this
        cleanup leaves a stale file at worst, never an identity showing another face.
        """
        with _writing(f"clean up after writing {target}"):
            if old is not None and not _same_file(old, target):
                old.unlink(missing_ok=True)
                old.with_suffix(THUMB_SUFFIX).unlink(missing_ok=True)
            target.with_suffix(THUMB_SUFFIX).unlink(missing_ok=True)


@contextmanager
def _writing(doing: str) -> Iterator[None]:
    """Turn a failed file operation (full disk, read-only folder) into a StoreError that says the fix."""
    try:
        yield
    except OSError as e:  # a WriteError from sid.files carries the system's error as its cause
        cause = e.__cause__ if isinstance(e, WriteError) and isinstance(e.__cause__, OSError) else e
        raise os_error(cause, doing) from e


def _clash_message(paths: list[Path]) -> str:
    names = " and ".join(p.name for p in paths)
    return f"{names} in {paths[0].parent} differ only in case: sid cannot tell these identities apart"


def _stamp(path: Path) -> list[int]:
    """What changes whenever a file's content may have: size, modification time, inode (a rename-into-
    place, as every sid write is, always gives a new inode)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _same_file(a: Path, b: Path) -> bool:
    """True when both paths name one file (also on case-insensitive file systems)."""
    return a.exists() and b.exists() and os.path.samefile(a, b)
