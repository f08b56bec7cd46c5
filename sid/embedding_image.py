"""AUTOMATIC1111's textual-inversion embeddings saved as images, read without running anything.

A1111 stores the embedding dict twice in the image it saves: as base64 JSON in the ``sd-ti-embedding``
text chunk, and hidden in the pixels, for when a site strips the chunk: the zlib-compressed JSON's
low and high nibbles fill two blocks of pixels left and right of the picture, each behind a one-pixel
black column, the data in each byte's low four bits XOR-ed with a key stream (a linear congruential
generator). Tensors are ``{"TORCHTENSOR": nested lists}``. Only JSON is parsed; decompression is
bounded.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

import numpy as np

TEXT_KEY = "sd-ti-embedding"
MAX_JSON_BYTES = 64 * 2**20  # far above any embedding's JSON; a bound for a hostile stream
MAX_BLOCK_BYTES = 4 * 2**20  # a data block's bytes: an embedding's zlib JSON is some 10-100 KB
LCG = (1664525, 1013904223, 2**32)  # A1111's key stream: seed = (a * seed + c) mod m from 0, then mod 255


def read_embedding_image(image: Any) -> dict[str, Any] | None:
    """The embedding dict an A1111 embedding image (a PIL image) holds: from its text chunk, else from
    its pixels; None when it holds neither. A chunk that is there but unreadable raises ValueError."""
    chunk = getattr(image, "text", {}).get(TEXT_KEY) or image.info.get(TEXT_KEY)
    if chunk:
        try:
            return _json(base64.b64decode(chunk, validate=False))
        except (binascii.Error, TypeError) as e:
            raise ValueError(f"the {TEXT_KEY} chunk is not base64: {e}") from e
    data = _pixel_bytes(np.asarray(image.convert("RGB")))
    if data is None:
        return None
    try:
        stream = zlib.decompressobj()
        text = stream.decompress(data, MAX_JSON_BYTES)
    except zlib.error:
        return None  # an ordinary picture: its pixels are no zlib stream
    return _json(text) if stream.eof else None


def _json(raw: bytes) -> dict[str, Any]:
    def tensors(d: dict) -> Any:
        return np.asarray(d["TORCHTENSOR"], dtype=np.float32) if "TORCHTENSOR" in d else d

    data = json.loads(raw, object_hook=tensors)  # ValueError on anything that is not JSON
    if not isinstance(data, dict):
        raise ValueError("it holds no embedding dict")
    return data


def _pixel_bytes(rgb: np.ndarray) -> bytes | None:
    """The hidden bytes of an (H, W, 3) uint8 image, or None when it has no two data blocks."""
    content = (rgb > 0).all(axis=2)  # black borders around the whole image are cropped first
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if not len(rows):
        return None
    low = rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] & 0x0F
    gaps = np.flatnonzero(low.sum(axis=(0, 2)) == 0)  # the black columns beside the picture
    if len(gaps) < 2:
        return None
    lower, upper = low[:, : gaps.min()], low[:, gaps.max() + 1 :]
    if not 0 < lower.size <= MAX_BLOCK_BYTES or lower.shape != upper.shape:
        return None  # no blocks, or a picture's own dark lines: not worth the key stream
    key = key_stream(lower.size).reshape(lower.shape)
    return (((upper ^ key) << 4) | (lower ^ key)).astype(np.uint8).tobytes()


def key_stream(count: int) -> np.ndarray:
    """The first ``count`` nibbles A1111 XORs each data block with."""
    a, c, m = LCG
    out, seed = np.empty(count, np.uint8), 0
    for i in range(count):
        seed = (a * seed + c) % m
        out[i] = (seed % 255) & 0x0F
    return out
