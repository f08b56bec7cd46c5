"""Identities as files other tools load: sid's own, diffusers, AUTOMATIC1111, ComfyUI and InvokeAI.

- sid: the store's own file (vectors per slot + all metadata).
- diffusers: ``{"<name>": (K, d)}``, which ``pipe.load_textual_inversion(file)`` loads as is.
- a1111 / comfyui / invokeai: ``{"emb_params": (K, d)}`` for SD1/SD2, ``{"clip_l", "clip_g"}`` for
  SDXL; the tools take the trigger word from the file name, so the file is named after the identity.
  InvokeAI's probe refuses the diffusers and sid layouts of SD 1.x/2.x identities ("unrecognized
  token dimension 2"), so ``invokeai`` writes this layout.
SDXL identities use the clip_l/clip_g layout in every format but sid's. FLUX.1 identities: diffusers
``{"clip_l", "t5"}`` (what diffusers' FLUX textual-inversion training writes), ComfyUI
``{"clip_l", "t5xxl"}``; A1111 (and InvokeAI) have no FLUX.1, so no a1111 export (``Family.export_keys``).
``sid.interop.TOOLS`` says which format each tool takes.

Reading is by keys, never by trusting the suffix: safetensors always; legacy ``.pt``/``.bin`` only
through ``torch.load(weights_only=True)``, which refuses pickled code (A1111's pickled
``torch.nn.ParameterDict`` is the one class added to its allow-list, as A1111's own restricted
unpickler allows it); AUTOMATIC1111's embedding images from their text chunk or their pixels (JSON,
no pickle: ``sid.embedding_image``). Two single-encoder files of one SDXL-like family (diffusers'
SDXL training writes ``learned_embeds.safetensors`` and ``learned_embeds_2.safetensors``) combine
into one identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sid.errors import BadInput, StoreError, first_line
from sid.families import FAMILIES, SDXL, family_by_widths, family_of_identity, slot_for_width
from sid.interop import FORMATS
from sid.names import NAME_RE
from sid.store import (
    Identity,
    check_vectors,
    identity_from_file,
    identity_to_bytes,
    now_iso,
    read_header,
)


def export_tensors(identity: Identity, fmt: str) -> dict[str, np.ndarray]:
    """The tensors a ``fmt`` file holds for ``identity``."""
    vectors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in identity.vectors.items()}
    family = family_of_identity(identity.widths)
    if family.export_keys:  # a family whose tools name its encoders their own way (FLUX)
        if fmt not in family.export_keys:
            formats = ", ".join(["sid", *family.export_keys])
            raise BadInput(
                f"{identity.name} is a {family.name} identity, which the {fmt} format has no layout for",
                f"export it as one of: {formats}",
            )
        keys = family.export_keys[fmt]
        return {key: vectors[slot] for key, slot in zip(keys, family.slots, strict=True)}
    if len(vectors) > 1:  # SDXL: A1111/ComfyUI key each encoder's rows by its slot name
        return {slot: vectors[slot] for slot in family_of_identity(identity.widths).slots}
    (only,) = vectors.values()
    if fmt == "diffusers":
        return {f"<{identity.name}>": only}
    return {"emb_params": only}


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise BadInput(f"unknown export format {fmt!r}", f"use one of: {', '.join(FORMATS)}")


def export_path(output: str | None, name: str, fmt: str, force: bool) -> Path:
    """The checked file ``sid export`` writes: the format first (a typo is never hidden behind "already
    exists"), then ``-o`` (``sid.files.output_file``), which must name a .safetensors file: every format
    is one, and a ``.pt`` name would promise a pickle."""
    from sid.files import output_file

    check_format(fmt)
    path = output_file(output, f"{name}.safetensors", force, ".safetensors")
    if path.suffix.lower() != ".safetensors":
        raise BadInput(f"-o {path}: sid exports .safetensors files", f"name it {path.stem}.safetensors")
    return path


def write_export(identity: Identity, fmt: str, path: Path) -> None:
    """Write ``identity`` to the file ``path`` in ``fmt``, whole or not at all. The caller picks and checks
    the path (``export_path``): A1111 takes the trigger word from the file name."""
    from safetensors.numpy import save

    from sid.files import atomic_write

    check_format(fmt)
    if fmt == "sid":
        data = identity_to_bytes(identity)
    else:
        tensors = export_tensors(identity, fmt)  # refuses a format the family has no layout for
        meta = {"name": identity.name, "sid_method": identity.method, "sid_base_model": identity.base_model}
        data = save(tensors, metadata=meta)
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
    elif suffix in (".png", ".webp"):
        result = _read_image(path)
    else:
        raise BadInput(
            f"{path.name}: unsupported file type {suffix or '(none)'}",
            "import a .safetensors file (or a legacy .pt/.bin or .png embedding)",
        )
    check_vectors(result.vectors, path.name, BadInput)
    return result


def read_imports(paths: list[Path]) -> Imported:
    """One identity from one file, or from one single-encoder file per text encoder of a family
    (diffusers' SDXL ``learned_embeds.safetensors`` + ``learned_embeds_2.safetensors``, in either order)."""
    if len(paths) == 1:
        return read_import(paths[0])
    parts = [read_import(p) for p in paths]
    listing = ", ".join(p.name for p in paths)
    if any(part.identity is not None or len(part.vectors) != 1 for part in parts):
        raise BadInput(
            f"{listing}: only single-encoder embeddings combine into one identity",
            "import a file that already holds every encoder on its own",
        )
    matrices = [next(iter(part.vectors.values())) for part in parts]
    widths = tuple(m.shape[-1] for m in matrices)
    known = {f.widths: f for f in FAMILIES}
    order = next((o for o in (widths, widths[::-1]) if o in known and len(known[o].slots) > 1), None)
    if order is None or len(set(widths)) != len(widths):
        raise BadInput(
            f"{listing}: widths {', '.join(map(str, widths))} are not the text encoders of one model family",
            "pass one file per text encoder, e.g. learned_embeds.safetensors learned_embeds_2.safetensors",
        )
    by_width = {m.shape[-1]: m for m in matrices}
    vectors = {slot: by_width[w] for slot, w in zip(known[order].slots, order, strict=True)}
    check_vectors(vectors, listing, BadInput)
    name = next((part.name for part in parts if part.name), None)
    return Imported(vectors, name, f"{parts[0].source_format} ({len(parts)} files)")


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
    except (TypeError, AttributeError):  # a dtype numpy lacks (bfloat16, float8): torch reads those
        from safetensors.torch import load_file as load_torch

        tensors = load_torch(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise BadInput(f"{path.name} could not be read: {e}", "check the file") from e
    return _from_tensors(tensors, path, meta.get("name"))


def _read_torch(path: Path) -> Imported:
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([torch.nn.ParameterDict]):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on the way to refusing them
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
        return _from_a1111(obj, path)
    if isinstance(obj, torch.Tensor):
        return _from_tensors({"emb_params": obj}, path, None)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _from_tensors(obj, path, None)
    raise BadInput(f"{path.name}: no embedding found in this file", "import a textual-inversion embedding")


def _from_a1111(data: dict, path: Path) -> Imported:
    """A1111's embedding dict: ``string_to_param`` holds one (K, d) tensor (a plain dict, a pickled
    ``ParameterDict`` in older .pt files, or nested lists from a PNG's JSON)."""
    params = data["string_to_param"]
    values = list(params.values()) if hasattr(params, "values") else []
    if len(values) != 1:
        raise BadInput(f"{path.name}: unexpected A1111 layout", "re-export it as .safetensors")
    name = data.get("name") if isinstance(data.get("name"), str) else None
    return _from_tensors({"emb_params": values[0]}, path, name)


def _read_image(path: Path) -> Imported:
    """An AUTOMATIC1111 embedding saved as an image (``sid.embedding_image``)."""
    from PIL import Image, UnidentifiedImageError

    from sid.embedding_image import read_embedding_image

    try:
        with Image.open(path) as image:
            data = read_embedding_image(image)
    except (OSError, UnidentifiedImageError) as e:
        raise BadInput(f"{path.name} is not a readable image: {first_line(e)}", "check the file") from e
    except ValueError as e:
        raise BadInput(f"{path.name}: its embedding is not valid: {first_line(e)}", "check the file") from e
    if data is None:
        raise BadInput(
            f"{path.name} holds no AUTOMATIC1111 embedding (no text chunk, none in its pixels)",
            "import the embedding image A1111 saved, or its .pt/.safetensors file",
        )
    if "string_to_param" not in data:
        raise BadInput(f"{path.name}: its embedding holds no string_to_param", "check the file")
    return _from_a1111(data, path)


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
    for family in FAMILIES:  # a family's own tool layouts (FLUX: diffusers' clip_l + t5, ComfyUI's t5xxl)
        for fmt, keys in family.export_keys.items():
            if set(keys) == set(arrays):
                slots = dict(zip(family.slots, keys, strict=True))
                return Imported({s: _matrix(arrays[k], path) for s, k in slots.items()}, name, fmt)
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
    """float32 numpy of a float tensor; integer or boolean tensors are not embeddings, float8 ones too
    coarse. numpy reads bfloat16 and float8 too where a library registered them (ml_dtypes)."""
    if isinstance(value, np.ndarray):
        name = value.dtype.name
        if not (np.issubdtype(value.dtype, np.floating) or name.startswith(("bfloat16", "float8"))):
            raise BadInput(f"{path.name} holds {value.dtype} values, not floats", "check the file")
        _check_precision(name, path)
        return value.astype(np.float32)
    import torch

    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise BadInput(f"{path.name} holds {value.dtype} values, not floats", "check the file")
        _check_precision(str(value.dtype).removeprefix("torch."), path)
        return value.detach().to("cpu", torch.float32).numpy()
    raise BadInput(f"{path.name} holds a non-tensor value", "export it from its tool again")


def _check_precision(dtype: str, path: Path) -> None:
    """float8 is too coarse for a token embedding (bfloat16, float16 and wider are fine)."""
    if dtype.startswith("float8"):
        raise BadInput(
            f"{path.name} holds {dtype} values, too coarse for an embedding",
            "export it as float16, bfloat16 or float32",
        )


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
        if candidate and NAME_RE.fullmatch(candidate):
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
