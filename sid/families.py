"""Model families: what the widths of a pipeline's text encoders mean, in one table.

A family is the tuple of its text encoders' token-embedding widths, first encoder first: SD 1.x is
(768,), SD 2.x (1024,), SDXL (768, 1280). Everything that follows from it (the store slot of each
encoder, the built-in model presets, the video backend, the default ControlNets, the adapter
that drives its pipelines) is a column of ``FAMILIES``; every module asks here. A new family is one
new row (and, if no adapter drives it yet, one class in sid.adapters). sid learns on every family.

Standard library only: the store (``sid ls``) imports this and must not pull in torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sid.errors import IncompatibleIdentity

# the video backends `sid video` drives (sid.video knows how)
T2V = "text-to-video"
ANIMATEDIFF = "animatediff"
ANIMATEDIFF_SDXL = "animatediff-sdxl"


@dataclass(frozen=True)
class Family:
    """One text-encoder family of Stable Diffusion models."""

    key: str  # short id in JSON and config files: "sd1", "sd2", "sdxl"
    name: str  # "SD 2.x"
    label: str  # for messages: "SD 2.x (OpenCLIP ViT-H, 1024-d)"
    widths: tuple[int, ...]  # token-embedding width of each text encoder, first encoder first
    slots: tuple[str, ...]  # the store's vector slot of each text encoder, same order
    presets: tuple[str, ...] = ()  # built-in --model presets of this family (sid.pipelines.PRESETS)
    video: str | None = None  # the video backend whose models share this text encoder, if any
    controlnets: Mapping[str, str] = field(default_factory=dict, compare=False)  # control type -> hub id
    adapter: str = ""  # how sid drives its pipelines: a key of sid.adapters.ADAPTERS ("": the one that fits)


FAMILIES: tuple[Family, ...] = (
    Family(
        "sd1",
        "SD 1.x",
        "SD 1.x (CLIP ViT-L, 768-d)",
        (768,),
        ("clip_l",),
        ("sd15",),
        ANIMATEDIFF,
        {
            "pose": "lllyasviel/control_v11p_sd15_openpose",
            "canny": "lllyasviel/control_v11p_sd15_canny",
            "depth": "lllyasviel/control_v11f1p_sd15_depth",
        },
        adapter="sd",
    ),
    Family(
        "sd2",
        "SD 2.x",
        "SD 2.x (OpenCLIP ViT-H, 1024-d)",
        (1024,),
        ("clip_h",),
        ("sd21",),
        T2V,
        {
            "pose": "thibaud/controlnet-sd21-openpose-diffusers",
            "canny": "thibaud/controlnet-sd21-canny-diffusers",
            "depth": "thibaud/controlnet-sd21-depth-diffusers",
        },
        adapter="sd",
    ),
    Family(
        "sdxl",
        "SDXL",
        "SDXL (CLIP ViT-L 768-d + OpenCLIP ViT-bigG 1280-d)",
        (768, 1280),
        ("clip_l", "clip_g"),
        ("sdxl",),
        ANIMATEDIFF_SDXL,
        {
            "pose": "thibaud/controlnet-openpose-sdxl-1.0",
            "canny": "diffusers/controlnet-canny-sdxl-1.0",
            "depth": "diffusers/controlnet-depth-sdxl-1.0",
        },
        adapter="sdxl",
    ),
)
SD1, SD2, SDXL = FAMILIES


def slot_for_width(width: int) -> str:
    """The store slot of a lone text encoder of this width (``clip_l``, ``clip_h``, else ``te<width>``)."""
    return family_by_widths((width,)).slots[0]


def family_by_widths(widths: tuple[int, ...]) -> Family:
    """The family of these text-encoder widths; an unknown tuple is a family of its own (tiny test
    models, other text encoders): slots ``te<width>``, no presets. A width that an earlier encoder
    already has takes its position too (``te768_2``): two encoders of one width keep two slots."""
    for family in FAMILIES:
        if family.widths == widths:
            return family
    slots = tuple(f"te{w}" if widths.index(w) == i else f"te{w}_{i + 1}" for i, w in enumerate(widths))
    return _unknown(widths, slots)


def family_by_key(key: str) -> Family | None:
    return next((f for f in FAMILIES if f.key == key), None)


def family_of_video(backend: str) -> Family | None:
    """The family whose text encoder the video backend's models use."""
    return next((f for f in FAMILIES if f.video == backend), None)


def family_of_identity(slots: Mapping[str, int]) -> Family:
    """The family an identity was learned for, from its slots (slot -> width).

    Slots name encoder positions, so an SDXL identity is found whatever order its file lists them in.
    """
    for family in FAMILIES:
        if dict(zip(family.slots, family.widths, strict=True)) == dict(slots):
            return family
    known = family_by_widths(tuple(slots.values()))
    return known if set(known.slots) == set(slots) else _unknown(tuple(slots.values()), tuple(slots))


def family_of_pipeline(pipe: Any) -> Family:
    """The family of a loaded pipeline, from its text encoders' widths."""
    return family_by_widths(pipeline_widths(pipe))


def pipeline_widths(pipe: Any) -> tuple[int, ...]:
    """Token-embedding width of each of a pipeline's text encoders, first encoder first."""
    encoders = (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None))
    return tuple(int(e.get_input_embeddings().weight.shape[-1]) for e in encoders if e is not None)


def _unknown(widths: tuple[int, ...], slots: tuple[str, ...]) -> Family:
    many = len(widths) > 1
    encoders = " + ".join(f"{w}-d" for w in widths) + (" text encoders" if many else " text encoder")
    label = f"a model with {encoders}" if many else f"a model with a {encoders}"
    return Family("+".join(f"te{w}" for w in widths), label, label, widths, slots)


def prompt_family(identities: Sequence[Any]) -> Family:
    """The one family all identities (``store.Identity``) share (a model has one set of text
    encoders); else an error naming each with its family and base model."""
    families = {i.name: family_of_identity(i.widths) for i in identities}
    if len({f.widths for f in families.values()}) > 1:
        listing = ", ".join(
            f"{i.name} ({families[i.name].label}, learned on {i.base_model or 'an unrecorded model'})"
            for i in identities
        )
        raise IncompatibleIdentity(
            f"the prompt mixes identities learned for different text encoders: {listing}",
            "a model has one text encoder: name identities of one family in a prompt",
        )
    return next(iter(families.values()))
