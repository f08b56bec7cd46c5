"""Uploaded files: size-capped, checked as the CLI checks a photo, written under server-chosen names.

A client's file name is never used as a path: photos are saved as ``photo-N.EXT`` (or, for a batch,
``NAME.EXT`` once NAME passes the store's name check) in the job's own folder. The bytes are kept as
sent, so a photo learned through the server hashes as it does from the CLI (the same checkpoint,
``--resume`` from either side).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath

from sid.errors import BadInput
from sid.manifest import IMAGE_SUFFIXES

MAX_FILE_BYTES = 40 * 1024 * 1024  # one photo or embedding; phone photos are under 15 MB
MAX_REQUEST_BYTES = 8 * MAX_FILE_BYTES  # one request, every part together


class TooLarge(BadInput):
    """An upload over the cap (HTTP 413)."""


def max_request_bytes() -> int:
    """The request cap: $SID_SERVE_MAX_UPLOAD (bytes), else MAX_REQUEST_BYTES."""
    env = os.environ.get("SID_SERVE_MAX_UPLOAD")
    return int(env) if env and env.isdigit() else MAX_REQUEST_BYTES


def check_size(data: bytes, label: str) -> None:
    if not data:
        raise BadInput(f"{label} is empty (0 bytes)", "upload the file itself")
    cap = min(MAX_FILE_BYTES, max_request_bytes())
    if len(data) > cap:
        raise TooLarge(f"{label} is over the upload cap of {cap // (1024 * 1024)} MiB", "send a smaller file")


def client_stem(filename: str | None) -> str:
    """The client's file name without folders and suffix (for messages and batch names only)."""
    return PurePath((filename or "").replace("\\", "/")).stem


def save_photo(data: bytes, filename: str | None, folder: Path, stem: str) -> Path:
    """Check ``data`` is a photo sid can learn from (decodable, not a bomb, big enough); write it."""
    import io

    from PIL import Image

    from sid.photos import decode_photo

    label = f"upload {client_stem(filename) or stem!r}"
    check_size(data, label)
    decode_photo(data, Path(label))  # the CLI's own checks: empty, not an image, bombs, damaged, tiny
    with Image.open(io.BytesIO(data)) as img:
        suffix = f".{(img.format or 'png').lower()}".replace(".jpeg", ".jpg")
    if suffix not in IMAGE_SUFFIXES:
        raise BadInput(f"{label} is a {suffix[1:]} image", "upload a JPEG, PNG or WebP photo")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}{suffix}"
    path.write_bytes(data)
    return path


def save_file(data: bytes, filename: str, folder: Path) -> Path:
    """An embedding upload as ``upload.SUFFIX`` (the client's suffix, which ``read_import`` judges)."""
    suffix = PurePath(filename.replace("\\", "/")).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,16}", suffix):
        suffix = ""
    check_size(data, f"upload {client_stem(filename)!r}")
    path = folder / f"upload{suffix}"
    path.write_bytes(data)
    return path
