"""Identities as files other tools load: sid's own, diffusers, AUTOMATIC1111 and ComfyUI.

- sid: the store's own file (vectors per slot + all metadata).
- diffusers: ``{"<name>": (K, d)}``, which ``pipe.load_textual_inversion(file)`` loads as is.
- a1111 / comfyui: ``{"emb_params": (K, d)}`` for SD1/SD2, ``{"clip_l", "clip_g"}`` for SDXL; both
  tools take the trigger word from the file name, so the file is named after the identity.
SDXL identities use the clip_l/clip_g layout in every format but sid's.

Reading is by keys, never by trusting the suffix: safetensors always; legacy ``.pt``/``.bin`` only
through ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sid.errors import BadInput, StoreError, first_line
from sid.families import SDXL, family_by_widths, family_of_identity, slot_for_width
from sid.store import (
    NAME_RE,
    Identity,
    check_vectors,
    identity_from_file,
    identity_to_bytes,
    now_iso,
    read_header,
)

FORMATS = ("sid", "diffusers", "a1111", "comfyui")


def export_tensors(identity: Identity, fmt: str) -> dict[str, np.ndarray]:
    """The tensors a ``fmt`` file holds for ``identity``."""
    vectors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in identity.vectors.items()}
    if len(vectors) > 1:  # SDXL: A1111/ComfyUI key each encoder's rows by its slot name
        return {slot: vectors[slot] for slot in family_of_identity(identity.widths).slots}
    (only,) = vectors.values()
    if fmt == "diffusers":
        return {f"<{identity.name}>": only}
    return {"emb_params": only}


def write_export(identity: Identity, fmt: str, path: Path) -> None:
    """Write ``identity`` to the file ``path`` in ``fmt``, whole or not at all. The caller picks and checks
    the path (``sid.files.output_file``): A1111 takes the trigger word from the file name."""
    from safetensors.numpy import save

    from sid.files import atomic_write

    if fmt not in FORMATS:
        raise BadInput(f"unknown export format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    if fmt == "sid":
        data = identity_to_bytes(identity)
    else:
        meta = {"name": identity.name, "sid_method": identity.method, "sid_base_model": identity.base_model}
        data = save(export_tensors(identity, fmt), metadata=meta)
    atomic_write(path, data)


@dataclass
class Imported:
    """What an outside file held: vectors per slot, a suggested name, and where it came from."""

    vectors: dict[str, np.ndarray]
    name: str | None
    source_format: str
    identity: Identity | None = None  # set for sid files, which carry full metadata


def read_import(path: Path) -> Imported:
    """Read any supported embedding file, validating shapes and values."""
    path = path.expanduser()
    if path.is_dir():
        raise BadInput(f"{path} is a folder, not an embedding file", "give the path of one file")
    if not path.is_file():
        raise BadInput(f"file {path} not found", "check the path")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        result = _read_safetensors(path)
    elif suffix in (".pt", ".bin"):
        result = _read_torch(path)
    else:
        raise BadInput(
            f"{path.name}: unsupported file type {suffix or '(none)'}",
            "import a .safetensors file (or a legacy .pt/.bin embedding)",
        )
    check_vectors(result.vectors, path.name, BadInput)
    return result


def _read_safetensors(path: Path) -> Imported:
    from safetensors.numpy import load_file

    try:
        meta, _ = read_header(path)
    except StoreError as e:
        reason = first_line(e.__cause__) if e.__cause__ else e.message
        raise BadInput(f"{path.name} is not a valid safetensors file: {reason}", "check the file") from e
    if meta.get("format") == "sid":
        try:
            identity = identity_from_file(path)
        except StoreError as e:
            raise BadInput(e.message, "check the file") from e
        return Imported(identity.vectors, identity.name, "sid", identity)
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise BadInput(f"{path.name} could not be read: {e}", "check the file") from e
    return _from_tensors(tensors, path, meta.get("name"))


def _read_torch(path: Path) -> Imported:
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on the way to refusing them
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not _is_pickle(path):  # torch fails on garbage with the same error it refuses code with
            raise _not_torch(path) from e
        raise BadInput(
            f"{path.name} holds pickled code or objects, which sid refuses to load",
            "convert it to .safetensors with a tool you trust",
        ) from e
    except OSError as e:
        raise BadInput(f"could not read {path.name}: {first_line(e)}", "check the file") from e
    except Exception as e:  # torch raises assorted errors (IndexError, KeyError, RuntimeError) on garbage
        raise _not_torch(path) from e
    if isinstance(obj, dict) and "string_to_param" in obj:  # A1111 legacy .pt
        params = obj["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise BadInput(f"{path.name}: unexpected A1111 layout", "re-export it as .safetensors")
        tensor = next(iter(params.values()))
        name = obj.get("name") if isinstance(obj.get("name"), str) else None
        return _from_tensors({"emb_params": tensor}, path, name)
    if isinstance(obj, torch.Tensor):
        return _from_tensors({"emb_params": obj}, path, None)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _from_tensors(obj, path, None)
    raise BadInput(f"{path.name}: no embedding found in this file", "import a textual-inversion embedding")


def _is_pickle(path: Path) -> bool:
    """True for a torch zip archive or a well-formed pickle stream, read without running any of it."""
    import io
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        return True
    try:
        for _ in pickletools.genops(io.BytesIO(path.read_bytes())):
            pass
    except Exception:  # pickletools raises ValueError and friends on anything that is not a pickle
        return False
    return True


def _not_torch(path: Path) -> BadInput:
    return BadInput(
        f"{path.name} is not a PyTorch embedding file (not a torch checkpoint at all)",
        "check the file: sid imports .safetensors embeddings and legacy textual-inversion .pt/.bin files",
    )


def _from_tensors(tensors: dict, path: Path, name: str | None) -> Imported:
    arrays = {k: _to_numpy(v, path) for k, v in tensors.items()}
    if set(SDXL.slots) <= set(arrays):
        return Imported({k: _matrix(arrays[k], path) for k in SDXL.slots}, name, "a1111-sdxl")
    if "emb_params" in arrays:
        return Imported(_one_slot(arrays["emb_params"], path), name, "a1111")
    if len(arrays) > 1:  # slot-keyed like SDXL's, for other encoder widths (sid's own `te<width>` slots)
        matrices = {k: _matrix(v, path) for k, v in arrays.items()}
        family = family_of_identity({k: m.shape[-1] for k, m in matrices.items()})
        if family.slots == family_by_widths(family.widths).slots:
            return Imported(matrices, name, "a1111-sdxl")
    if len(arrays) == 1:
        token, tensor = next(iter(arrays.items()))
        return Imported(_one_slot(tensor, path), name or token.strip("<>"), "diffusers")
    keys = ", ".join(sorted(arrays)[:5])
    raise BadInput(
        f"{path.name}: unrecognised embedding layout (keys: {keys})", "export it from its tool again"
    )


def _to_numpy(value: object, path: Path) -> np.ndarray:
    """float32 numpy of a float tensor; integer or boolean tensors are not embeddings."""
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.floating):
            raise BadInput(f"{path.name} holds {value.dtype} values, not floats", "check the file")
        return value.astype(np.float32)
    import torch

    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise BadInput(f"{path.name} holds {value.dtype} values, not floats", "check the file")
        return value.detach().to("cpu", torch.float32).numpy()
    raise BadInput(f"{path.name} holds a non-tensor value", "export it from its tool again")


def _matrix(tensor: np.ndarray, path: Path) -> np.ndarray:
    """(K, d) from a (d,) or (K, d) embedding; any other shape is refused here, before slots are named."""
    matrix = tensor[None] if tensor.ndim == 1 else tensor
    if matrix.ndim != 2:
        raise BadInput(
            f"{path.name}: embedding of shape {tuple(tensor.shape)}, not (vectors, width)", "check the file"
        )
    return matrix


def _one_slot(tensor: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    matrix = _matrix(tensor, path)
    return {slot_for_width(matrix.shape[-1]): matrix}


def infer_name(imported: Imported, path: Path) -> str | None:
    """A legal identity name for an imported file: its own, else the file name; None if neither is legal."""
    for candidate in (imported.name, path.stem):
        if candidate and NAME_RE.match(candidate):
            return candidate
    return None


def as_identity(imported: Imported, name: str, source_file: str) -> Identity:
    """What an import is stored as under ``name``: a sid file's own identity, else its vectors with a note
    of where they came from (``sid import`` and ``sid serve``'s upload)."""
    if imported.identity is not None:
        imported.identity.name = name
        return imported.identity
    return Identity(
        name=name,
        vectors=imported.vectors,
        method=f"imported ({imported.source_format})",
        created=now_iso(),
        settings={"source_file": source_file},
    )
