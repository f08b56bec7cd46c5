"""Model families: what the widths of a pipeline's text encoders mean, in one table.

A UNet family is the tuple of its text encoders' token-embedding widths, first encoder first: SD 1.x
is (768,), SD 2.x (1024,), SDXL (768, 1280). FLUX.1 (CLIP-L 768 pooled + T5-XXL 4096) is also known
by its denoiser, ``FluxTransformer2DModel``: a FLUX-layout model with other widths (the tests' tiny
one) is still FLUX, keeps FLUX's slots and never passes for a UNet model of the same widths.
Everything that follows from a family (the store slot of each encoder, the built-in model presets,
the video backend, the default ControlNets, render defaults, the adapter that drives its pipelines)
is a column of ``FAMILIES``; every module asks here. A new family is one new row (and, if no adapter
drives it yet, one class in sid.adapters). sid learns on every family.

Standard library only: the store (``sid ls``) imports this and must not pull in torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sid.errors import IncompatibleIdentity

# the video backends `sid video` drives (sid.video knows how)
T2V = "text-to-video"
ANIMATEDIFF = "animatediff"
ANIMATEDIFF_SDXL = "animatediff-sdxl"
LTX = "ltx-video"  # LTX-Video: conditioned on the same T5-v1.1-XXL as FLUX.1 (sid.video_t5)


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
    # the denoiser class that marks this family whatever its encoders' widths (None: known by widths)
    denoiser: str | None = None
    # format -> the key of each encoder's rows in that tool's file; when set, only these formats exist
    # (besides sid's own) for the family, and files with these keys import as it
    export_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    render_steps: int | None = None  # sid render's default steps on this family (None: sid's default)
    render_guidance: float | None = None  # and guidance (FLUX.1-dev's distilled guidance input)
    # steps of its models distilled to sample without guidance (FLUX.1-schnell: no guidance input)
    unguided_steps: int | None = None
    own_sampler: bool = False  # render with the model's own scheduler, not sid's --scheduler choice
    # whether its pipelines use a negative prompt at sid's guidance (FLUX.1's distilled guidance: only
    # with a second, "true" CFG pass that sid does not run)
    takes_negative: bool = True
    adapter: str = ""  # how sid drives its pipelines: a key of sid.adapters.ADAPTERS ("": the one that fits)

    def at_widths(self, widths: tuple[int, ...]) -> Family:
        """This family's layout with other encoder widths (a test's tiny FLUX): same slots and
        denoiser, no presets, a label that gives the widths."""
        if widths == self.widths:
            return self
        encoders = " + ".join(f"{w}-d" for w in widths)
        label = f"a {self.name}-layout model with {encoders} text encoders"
        return replace(self, label=label, widths=widths, presets=())


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
    Family(
        "flux",
        "FLUX.1",
        "FLUX.1 (CLIP ViT-L 768-d pooled + T5-v1.1-XXL 4096-d)",
        (768, 4096),
        ("clip_l", "t5"),  # the keys diffusers' FLUX textual-inversion training writes
        ("flux-dev", "flux-schnell"),
        LTX,  # the identity's T5 half in LTX-Video's T5
        {
            "canny": "InstantX/FLUX.1-dev-Controlnet-Canny",
            "depth": "Shakker-Labs/FLUX.1-dev-ControlNet-Depth",
            "pose": "Shakker-Labs/FLUX.1-dev-ControlNet-Union-Pro",  # a union ControlNet: mode "pose"
        },
        denoiser="FluxTransformer2DModel",
        # diffusers' FLUX textual-inversion keys, ComfyUI's names for the two encoders; no A1111 (no FLUX)
        export_keys={"diffusers": ("clip_l", "t5"), "comfyui": ("clip_l", "t5xxl")},
        render_steps=28,
        render_guidance=3.5,
        unguided_steps=4,
        own_sampler=True,
        takes_negative=False,
        adapter="flux",
    ),
)
SD1, SD2, SDXL, FLUX = FAMILIES


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
    The slots of a family known by its denoiser (FLUX's ``clip_l`` + ``t5``) name it at any widths.
    """
    for family in FAMILIES:
        if dict(zip(family.slots, family.widths, strict=True)) == dict(slots):
            return family
    for family in FAMILIES:
        if family.denoiser and set(family.slots) == set(slots):
            return family.at_widths(tuple(slots[s] for s in family.slots))
    known = family_by_widths(tuple(slots.values()))
    return known if set(known.slots) == set(slots) else _unknown(tuple(slots.values()), tuple(slots))


def family_of_pipeline(pipe: Any) -> Family:
    """The family of a loaded pipeline: by its denoiser where a family is known by one, else by its
    text encoders' widths."""
    widths = pipeline_widths(pipe)
    denoiser = type(getattr(pipe, "transformer", None)).__name__
    for family in FAMILIES:
        if family.denoiser == denoiser:
            return family.at_widths(widths)
    return family_by_widths(widths)


def same_family(a: Family, b: Family) -> bool:
    """Whether identities of ``a`` fit models of ``b``: the same widths and the same denoiser."""
    return a.widths == b.widths and a.denoiser == b.denoiser


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
    if len({(f.widths, f.denoiser) for f in families.values()}) > 1:
        listing = ", ".join(
            f"{i.name} ({families[i.name].label}, learned on {i.base_model or 'an unrecorded model'})"
            for i in identities
        )
        raise IncompatibleIdentity(
            f"the prompt mixes identities learned for different text encoders: {listing}",
            "a model has one text encoder: name identities of one family in a prompt",
        )
    return next(iter(families.values()))
