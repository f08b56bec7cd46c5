"""Speed knobs for the learn step's frozen UNet: each is off until a GPU run has measured it.

They are library knobs (``LearnConfig.speed``), not CLI flags: ``python -m benchmarks.gpu`` toggles
each one side by side on one GPU (docs/performance.md, "GPU run") and only the winners become
defaults. ``unet_step`` wraps the UNet once, before the loop, so the loop itself stays one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from sid.errors import BadInput

# SDPA backends a run may pin; "sdpa" lets torch choose, "classic" is diffusers' pre-SDPA processor
ATTENTION = ("sdpa", "flash", "efficient", "cudnn", "math", "classic")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

UnetStep = Callable[..., torch.Tensor]  # (z_t, t, cond, *added) -> pred; added: SDXL text_embeds, time_ids
ADDED_CONDITIONS = ("text_embeds", "time_ids")  # SDXL's extra UNet inputs, in the order a step takes them


@dataclass(frozen=True)
class Speedups:
    """How the frozen UNet runs; the defaults are sid's measured-safe eager path."""

    compile: str | None = None  # torch.compile mode of the UNet (None: eager)
    channels_last: bool = False  # NHWC weights and latents (tensor-core convolutions prefer them)
    attention: str = "sdpa"  # one of ATTENTION
    cuda_graphs: bool = False  # replay forward + backward as CUDA graphs (the step's shapes are fixed)

    def label(self) -> str:
        """``eager`` or the knobs that differ from the defaults, as ``parse_speedups`` reads them."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                parts.append(f.name if value is True else f"{f.name}={value}")
        return ",".join(parts) or "eager"

    def check(self, device: str) -> None:
        """Refuse a combination that cannot run on ``device``, before any work."""
        if self.attention not in ATTENTION:
            raise BadInput(f"unknown attention {self.attention!r}", f"use one of: {', '.join(ATTENTION)}")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            modes = ", ".join(COMPILE_MODES)
            raise BadInput(f"unknown compile mode {self.compile!r}", f"use one of: {modes}")
        if self.cuda_graphs and not device.startswith("cuda"):
            raise BadInput(f"cuda_graphs needs a CUDA device, not {device}", "drop cuda_graphs")
        if self.cuda_graphs and self.compile is not None:
            raise BadInput(
                "cuda_graphs and compile both capture the UNet",
                "use one: compile='reduce-overhead' already replays CUDA graphs",
            )


def parse_speedups(text: str) -> Speedups:
    """``"eager"`` or comma-separated knobs: ``channels_last,attention=flash,compile=reduce-overhead``."""
    known = {f.name: f for f in fields(Speedups)}
    speed = Speedups()
    for item in filter(None, (p.strip() for p in text.split(","))):
        if item == "eager":
            continue
        name, _, value = item.partition("=")
        if name not in known:
            raise BadInput(f"unknown speed knob {name!r}", f"use {', '.join(known)} or eager")
        if isinstance(known[name].default, bool):
            if value not in ("", "true", "false"):
                raise BadInput(f"{name} takes no value, not {value!r}", f"write {name} or {name}=false")
            speed = replace(speed, **{name: value != "false"})
        else:
            speed = replace(speed, **{name: value or None})
    return speed


@contextmanager
def _attention_backend(attention: str) -> Iterator[None]:
    """Pin scaled_dot_product_attention to one backend (the choice is made in the forward pass)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }.get(attention)
    with sdpa_kernel([backend]) if backend is not None else nullcontext():
        yield


def unet_step(unet: Any, speed: Speedups, device: str, amp_dtype: torch.dtype | None) -> UnetStep:
    """The frozen ``unet`` set up as ``speed`` says, as a call ``(z_t, t, cond, *added) -> predicted
    sample``; ``added`` are SDXL's ``text_embeds`` and ``time_ids`` (none for SD 1.x/2.x).

    Call it inside the loop's autocast. ``unet`` is changed in place (memory format, attention
    processor, compiled forward); its weights stay frozen.
    """
    speed.check(device)
    if speed.attention == "classic":
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())
    memory_format = torch.channels_last if speed.channels_last else torch.contiguous_format
    if speed.channels_last:
        unet.to(memory_format=memory_format)
    if speed.compile is not None:
        unet.compile(mode=speed.compile, fullgraph=False)

    def step(z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, *added: torch.Tensor) -> torch.Tensor:
        extra = {"added_cond_kwargs": dict(zip(ADDED_CONDITIONS, added, strict=True))} if added else {}
        with _attention_backend(speed.attention):
            return unet(z_t.contiguous(memory_format=memory_format), t, cond, **extra).sample

    return _GraphedStep(step, amp_dtype) if speed.cuda_graphs else step


class _GraphedStep:
    """``step``'s forward and backward captured as CUDA graphs at the first call, replayed after.

    The learn step's shapes never change, so one capture serves every step; the graphs are captured
    under the same autocast dtype as the loop (without autocast's weight cache, which graphs forbid).
    """

    def __init__(self, step: UnetStep, amp_dtype: torch.dtype | None) -> None:
        self.step, self.amp_dtype, self.graphed = step, amp_dtype, None

    def __call__(
        self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, *added: torch.Tensor
    ) -> torch.Tensor:
        if self.graphed is None:
            conds = (cond, *added)  # differentiable where the identity's vectors reach them
            sample = (
                z_t.detach().clone(),
                t.clone(),
                *(c.detach().clone().requires_grad_(c.requires_grad) for c in conds),
            )
            amp = self.amp_dtype or torch.float32
            with torch.autocast("cuda", dtype=amp, enabled=self.amp_dtype is not None, cache_enabled=False):
                self.graphed = torch.cuda.make_graphed_callables(self.step, sample, num_warmup_iters=3)
        return self.graphed(z_t, t, cond, *added)
