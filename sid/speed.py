"""Speed knobs for the learn step's frozen UNet and text encoder, measured side by side on a GPU.

They are library knobs (``LearnConfig.speed``), not CLI flags: ``python -m benchmarks.gpu`` toggles
each one on one GPU (docs/performance.md, "GPU run") and only the winners become defaults. On an H100
the eager step was launch-bound (130 ms, against 24 ms for the UNet replayed as a graph), so
``cuda_graphs="auto"`` replays the whole conditioned prediction (text encoder and UNet, forward and
backward) as graphs on CUDA, with a channels-last UNet (faster only with graphs); compile and pinned
attention backends lost and stay off. ``unet_step`` wraps the UNet and ``capture`` any tensor function
once, before the loop, so the loop itself stays one call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from sid.errors import BadInput, first_line

# SDPA backends a run may pin; "sdpa" lets torch choose, "classic" is diffusers' pre-SDPA processor
ATTENTION = ("sdpa", "flash", "efficient", "cudnn", "math", "classic")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# what CUDA graphs capture: "unet" its forward and backward alone, "predict" the text encoder too,
# "step" the whole learn step (mapper, prediction, loss, clipping and a capturable AdamW); "auto" is
# "predict" on CUDA (with no compile mode) and "off" elsewhere ("step" is not measured yet)
GRAPHS = ("auto", "off", "unet", "predict", "step")

UnetStep = Callable[..., torch.Tensor]  # (z_t, t, cond, *added) -> pred; added: SDXL text_embeds, time_ids
ADDED_CONDITIONS = ("text_embeds", "time_ids")  # SDXL's extra UNet inputs, in the order a step takes them


@dataclass(frozen=True)
class Speedups:
    """How the frozen UNet and text encoder run; the defaults are what the GPU run measured fastest."""

    compile: str | None = None  # torch.compile mode of the UNet (None: eager)
    channels_last: bool | None = None  # NHWC weights and latents (None: where CUDA graphs are on)
    attention: str = "sdpa"  # one of ATTENTION
    cuda_graphs: str = "auto"  # one of GRAPHS: replay forward + backward (the step's shapes are fixed)

    def label(self) -> str:
        """``default``, or the knobs that differ from the defaults as ``parse_speedups`` reads them
        (``eager`` for ``cuda_graphs=off``: nothing captured)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if (f.name, value) == ("cuda_graphs", "off"):
                parts.insert(0, "eager")
            elif value != f.default:
                parts.append(f.name if value is True else f"{f.name}={str(value).lower()}")
        return ",".join(parts) or "default"

    def check(self, device: str) -> None:
        """Refuse a combination that cannot run on ``device``, before any work."""
        if self.attention not in ATTENTION:
            raise BadInput(f"unknown attention {self.attention!r}", f"use one of: {', '.join(ATTENTION)}")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            modes = ", ".join(COMPILE_MODES)
            raise BadInput(f"unknown compile mode {self.compile!r}", f"use one of: {modes}")
        if self.cuda_graphs not in GRAPHS:
            raise BadInput(f"unknown cuda_graphs {self.cuda_graphs!r}", f"use one of: {', '.join(GRAPHS)}")
        if self.cuda_graphs in ("unet", "predict", "step") and not device.startswith("cuda"):
            raise BadInput(f"cuda_graphs={self.cuda_graphs} needs a CUDA device, not {device}", "drop it")
        if self.cuda_graphs in ("unet", "predict", "step") and self.compile is not None:
            raise BadInput(
                "cuda_graphs and compile both capture the UNet",
                "use one: compile='reduce-overhead' already replays CUDA graphs",
            )

    def graphs(self, device: str) -> str:
        """What CUDA graphs capture on ``device``: "off", "unet" or "predict" ("auto" resolved)."""
        if self.cuda_graphs != "auto":
            return self.cuda_graphs
        return "predict" if device.startswith("cuda") and self.compile is None else "off"

    def nhwc(self, device: str) -> bool:
        """Whether the UNet runs channels-last on ``device``: measured 15% faster with CUDA graphs
        on an H100 (28.4 -> 24.2 ms a step) and 26% slower without them."""
        return self.channels_last if self.channels_last is not None else self.graphs(device) != "off"


def parse_speedups(text: str) -> Speedups:
    """``"default"`` or comma-separated knobs: ``eager,channels_last``, ``compile=reduce-overhead``, ...

    ``eager`` is ``cuda_graphs=off``: every kernel launched from Python, as without sid's speed-ups.
    """
    known = {f.name: f for f in fields(Speedups)}
    speed = Speedups()
    for item in filter(None, (p.strip() for p in text.split(","))):
        if item in ("default", "eager"):
            speed = replace(speed, cuda_graphs="off") if item == "eager" else speed
            continue
        name, _, value = item.partition("=")
        if name not in known:
            raise BadInput(f"unknown speed knob {name!r}", f"use {', '.join(known)}, eager or default")
        if "bool" in str(known[name].type):
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
    memory_format = torch.channels_last if speed.nhwc(device) else torch.contiguous_format
    if speed.nhwc(device):
        unet.to(memory_format=memory_format)
    if speed.compile is not None:
        unet.compile(mode=speed.compile, fullgraph=False)

    def step(z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, *added: torch.Tensor) -> torch.Tensor:
        extra = {"added_cond_kwargs": dict(zip(ADDED_CONDITIONS, added, strict=True))} if added else {}
        with _attention_backend(speed.attention):
            return unet(z_t.contiguous(memory_format=memory_format), t, cond, **extra).sample

    return capture(step, amp_dtype) if speed.graphs(device) == "unet" else step


def capture(fn: Callable[..., torch.Tensor], amp_dtype: torch.dtype | None) -> Callable[..., torch.Tensor]:
    """``fn`` (tensors in, one tensor out) with its forward and backward captured as CUDA graphs at the
    first call and replayed after: the learn step's shapes never change, so one capture serves every
    step. Gradients flow to the inputs that require them, as in eager mode."""
    return _Graphed(fn, amp_dtype)


class _Graphed:
    """The graphs are captured under the loop's autocast dtype (without autocast's weight cache,
    which graphs forbid); the first call's inputs, cloned, are the capture's sample inputs. A capture
    that fails (an operation, driver or torch build that refuses it) warns once and runs eagerly:
    slower, never wrong."""

    def __init__(self, fn: Callable[..., torch.Tensor], amp_dtype: torch.dtype | None) -> None:
        self.fn, self.amp_dtype, self.graphed = fn, amp_dtype, None

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        if self.graphed is None:
            sample = tuple(x.detach().clone().requires_grad_(x.requires_grad) for x in tensors)
            amp = self.amp_dtype or torch.float32
            try:
                with torch.autocast(
                    "cuda", dtype=amp, enabled=self.amp_dtype is not None, cache_enabled=False
                ):
                    self.graphed = torch.cuda.make_graphed_callables(self.fn, sample, num_warmup_iters=3)
            except RuntimeError as e:
                message = f"CUDA graph capture failed ({first_line(e)}); running eagerly"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                self.graphed = self.fn
        return self.graphed(*tensors)


def capture_step(
    fn: Callable[..., torch.Tensor], state: Callable[[], list[torch.Tensor]]
) -> Callable[..., torch.Tensor]:
    """``fn`` (the whole learn step: forward, backward and optimizer update; tensors or None in, one
    tensor out) captured as one CUDA graph at the first call and replayed after, its inputs copied
    into the capture's own. ``state`` lists the tensors a step changes (parameters, optimizer
    moments and step counts): the warm-up steps a capture needs run on copies of the first inputs,
    and ``state`` is put back after them, so the run learns exactly the steps it is given. The
    optimizer must be capturable. A capture that fails warns once and runs ``fn`` eagerly."""
    return _GraphedStep(fn, state)


class _GraphedStep:
    def __init__(self, fn: Callable[..., torch.Tensor], state: Callable[[], list[torch.Tensor]]) -> None:
        self.fn, self.state = fn, state
        self.graph: Any = None
        self.eager = False
        self.inputs: list[torch.Tensor | None] = []
        self.out: torch.Tensor | None = None

    def __call__(self, *tensors: torch.Tensor | None) -> torch.Tensor:
        if self.graph is None and not self.eager:
            try:
                self._capture(tensors)
            except (RuntimeError, AssertionError) as e:  # no CUDA, or an operation that syncs the host
                message = f"CUDA graph capture of the learn step failed ({first_line(e)}); running eagerly"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                self.eager = True
        if self.eager:
            return self.fn(*tensors)
        for static, x in zip(self.inputs, tensors, strict=True):
            if static is not None:
                static.copy_(x)
        self.graph.replay()
        return self.out.clone()  # the next replay overwrites the graph's own output

    def _capture(self, tensors: tuple[torch.Tensor | None, ...]) -> None:
        before = {id(t): t.detach().clone() for t in self.state()}
        self.inputs = [None if x is None else x.detach().clone() for x in tensors]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):  # warm-up off the capture stream, as torch's docs do it
                for _ in range(3):
                    self.fn(*self.inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.out = self.fn(*self.inputs)
        finally:  # undo the warm-up's updates; state it created (a fresh AdamW's moments) starts at 0
            with torch.no_grad():
                for t in self.state():
                    t.copy_(before[id(t)]) if id(t) in before else t.zero_()
        self.graph = graph
