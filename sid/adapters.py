"""One adapter per model family: everything learning, rendering and eval do differently per family.

An adapter wraps one loaded, frozen pipeline and knows how to (a) turn prompt ids that carry the
identity's vectors into the denoiser's conditioning, (b) noise clean latents, (c) predict with the
frozen denoiser and (d) take the method's loss, plus the few facts about a pipeline that render,
eval, ControlNet and 3d ask (native size, ControlNet classes, 3d support).
train.py, many.py, render and eval never branch on the family: they ask ``adapter_for(pipe)``.

``sid.families.FAMILIES`` names each row's adapter (``Family.adapter``, a key of ``ADAPTERS``); a
model of no known row (other text-encoder widths: the tests' tiny models, fine-tunes with other
encoders) gets the first adapter whose ``fits`` takes its pipeline. The next family is one subclass
here, one entry in ``ADAPTERS`` and one row in the table. docs/adapters.md describes the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from sid import flow
from sid.errors import BadInput
from sid.families import FAMILIES, family_of_pipeline
from sid.methods import MASKED_METHODS, noise_loss, two_phase_loss
from sid.prompts import VectorSlot, fingerprint, text_encoders
from sid.speed import Speedups, capture, unet_step

Predict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Sample:
    """One step's training batch: clean and noised latents, their masks, faces, noise levels and prompts.

    Latents are the bank's (B, C, h, w), whatever layout the denoiser takes (an adapter that packs
    them, as FLUX does, packs inside ``denoise``), so masks stay (B, 1, h, w) for every family.
    """

    z0: torch.Tensor  # (B, C, h, w)
    mask: torch.Tensor  # (B, 1, h, w)
    hair_mask: torch.Tensor | None
    face: torch.Tensor  # (B, f): the mirrored photo's embedding where the latent is mirrored
    t: torch.Tensor  # (B,): the noise level as the adapter's denoiser and loss read it
    noise: torch.Tensor  # (B, C, h, w)
    z_t: torch.Tensor  # (B, C, h, w)
    ids: torch.Tensor  # (B, E, L) prompt template ids, per text encoder


def concat(samples: list[Sample]) -> Sample:
    """K units' samples as one batch, unit by unit (the loop's one forward of the model)."""
    parts = {}
    for f in fields(Sample):
        values = [getattr(s, f.name) for s in samples]
        parts[f.name] = None if values[0] is None else torch.cat(values)
    return Sample(**parts)


class Adapter:
    """A frozen pipeline of one family, as the learn step drives it; subclasses fill in the family.

    Built by ``sid.train.load_frozen``; every module of the pipeline is frozen (no gradients, eval).
    ``predictor`` composes ``condition`` and ``denoise`` into one function of tensors, which the loop
    calls once a step and, on CUDA, replays as graphs.
    """

    key: ClassVar[str]  # the name sid.families' rows use for this adapter
    denoiser_name: ClassVar[str] = "unet"  # the pipeline component that predicts (autocast dtype)
    half_encoders: ClassVar[tuple[str, ...]] = ()  # text encoders also loaded in the autocast dtype
    float8_components: ClassVar[tuple[str, ...]] = ()  # components --low-vram stores in float8
    controlnet_model: ClassVar[str] = "ControlNetModel"  # diffusers class name of its ControlNets
    controlnet_pipeline: ClassVar[str | None] = None  # diffusers class wrapping it with one (None: none)
    control_image_arg: ClassVar[str] = "image"  # the ControlNet pipeline's name for the control image
    threed: ClassVar[bool] = False  # whether sid 3d's score distillation drives this family

    def __init__(
        self,
        pipe: Any,
        spec: Any,
        device: str,
        amp_dtype: torch.dtype | None,
        speed: Speedups,
        resolution: int | None = None,
    ) -> None:
        self.pipe, self.spec, self.device, self.amp_dtype = pipe, spec, device, amp_dtype
        self.family = family_of_pipeline(pipe)
        self.denoiser = getattr(pipe, self.denoiser_name)
        self.vae = pipe.vae
        self.encoders: list[tuple[Any, Any]] = text_encoders(pipe)  # (tokenizer, encoder), first first
        for module in (self.denoiser, self.vae, *(enc for _, enc in self.encoders)):
            module.requires_grad_(False).eval()
        self.resolution = resolution or self.native_size(pipe)[0]  # training image side
        self.fingerprints = [fingerprint(enc, tok.vocab_size) for tok, enc in self.encoders]
        self.graph_predict = speed.graphs(device) == "predict"  # capture the whole prediction
        self.memory: dict[str, Any] = {}  # what save_memory did (the identity records it)
        self.setup(speed)

    def setup(self, speed: Speedups) -> None:
        """The family's own state (its training noise, its denoiser set up as ``speed`` says), built once
        the shared attributes are set; nothing beyond them by default."""

    # -- what a pipeline is (asked before or without learning) -------------------------------------
    @classmethod
    def fits(cls, pipe: Any) -> bool:
        """Whether ``pipe`` has this family's layout (for models of no row in the family table)."""
        raise NotImplementedError

    @classmethod
    def native_size(cls, pipe: Any) -> tuple[int, int]:
        """(width, height) the pipeline was trained at: the denoiser's latent side times the VAE's factor."""
        side = int(getattr(pipe, cls.denoiser_name).config.sample_size) * int(pipe.vae_scale_factor)
        return side, side

    @classmethod
    def prompt_reader(cls, pipe: Any) -> tuple[Any, int] | None:
        """The tokenizer of the encoder whose token sequence the denoiser reads, and how many tokens
        (start and end included) the pipeline gives it: CLIP's 77; None without a tokenizer."""
        tokenizer = getattr(pipe, "tokenizer", None)
        return None if tokenizer is None else (tokenizer, int(tokenizer.model_max_length))

    @classmethod
    def guided(cls, pipe: Any) -> bool:
        """Whether the model samples with guidance; False for one distilled to sample without it
        (FLUX.1-schnell, whose transformer has no guidance input): it gets its family's few steps."""
        return True

    @classmethod
    def side_multiple(cls, pipe: Any) -> int:
        """What an image side must be a multiple of: the VAE's factor (FLUX packs 2x2 latents: twice it)."""
        return int(pipe.vae_scale_factor)

    # -- (a) prompts with identity vectors -----------------------------------------------------------
    def prompt_ids(self, templates: tuple[str, ...], token: str) -> torch.Tensor:
        """(T, E, L) ids of every template with ``token`` where the name goes, as each of the E encoders'
        tokenizers reads it (an adapter whose encoders read different lengths pads to the longest)."""
        ids = [tokenize_templates(self.pipe, tok, templates, token) for tok, _ in self.encoders]
        return torch.stack(ids, dim=1)

    def condition(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The denoiser's text conditioning of prompts ``ids`` (B, E, L), run through the encoders (whose
        placeholder rows ``inject_vectors`` fills); ``denoise`` takes it as its trailing arguments."""
        raise NotImplementedError

    # -- (b) noise -------------------------------------------------------------------------------------
    def noised(
        self, draw: tuple[Any, ...], faces: torch.Tensor, templates: torch.Tensor, gen: torch.Generator
    ) -> Sample:
        """A bank draw (z0, mask, hair_mask, flip) with its noise levels, noise and prompt templates
        drawn from ``gen``; ``faces`` (2, f) are the plain and mirrored face embeddings."""
        raise NotImplementedError

    # -- (c) predict -------------------------------------------------------------------------------
    def denoise(self, z_t: torch.Tensor, t: torch.Tensor, *conditioning: torch.Tensor) -> torch.Tensor:
        """The frozen denoiser's output on ``z_t`` at noise levels ``t`` (in its weights' dtype)."""
        raise NotImplementedError

    def predictor(self, slot: VectorSlot) -> Predict:
        """``predict(vectors, ids, z_t, t)``: the denoiser's fp32 prediction conditioned on the prompts
        ``ids`` (B, E, L) with the identity ``vectors`` (B, 2, sum d) injected through ``slot``.

        A function of tensors only, so that on CUDA its forward and backward (text encoders and
        denoiser) are captured once as graphs and replayed: the eager step is launch-bound.
        """

        def predict(
            vectors: torch.Tensor, ids: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor
        ) -> torch.Tensor:
            slot.vectors = vectors  # (B, 2, sum d): the identity's two tokens, every encoder's part
            dtype = self.denoiser.dtype
            conditioning = (c.to(dtype) for c in self.condition(ids))
            return self.denoise(z_t.to(dtype), t, *conditioning).float()

        return capture(predict, self.amp_dtype) if self.graph_predict else predict

    def autocast(self) -> torch.autocast:
        """The loop's autocast (fp32 when ``amp_dtype`` is None)."""
        device = torch.device(self.device).type
        return torch.autocast(
            device, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    # -- (d) loss ----------------------------------------------------------------------------------
    def loss(self, pred: torch.Tensor, s: Sample, method: str) -> torch.Tensor:
        """The method's loss (scalar) of one identity's prediction, in fp32 outside autocast."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What an identity's metadata records of the model's training noise (enough to rebuild it)."""
        raise NotImplementedError

    def save_memory(self) -> None:
        """--low-vram: the denoiser recomputes its activations in the backward pass (diffusers' gradient
        checkpointing) instead of holding them, for every family, and the family's largest frozen
        components are stored in float8 (``store_float8``); ``memory`` records both."""
        self.denoiser.enable_gradient_checkpointing()
        for name in self.float8_components:
            store_float8(getattr(self.pipe, name))
        self.memory = {
            "gradient_checkpointing": [self.denoiser_name],
            "float8_e4m3fn": list(self.float8_components),
        }


def store_float8(module: torch.nn.Module) -> None:
    """Store a frozen module's weights in float8_e4m3fn (1 byte a weight) and compute in its load dtype:
    diffusers' layerwise casting up-casts each layer's weights for its forward and down-casts them after.

    The backward of a layer uses the up-cast weights its forward saved (autograd keeps them alive), so
    the saving holds only where activations are recomputed (gradient checkpointing); layers kept out:
    diffusers' defaults (embeddings of positions and patches, norms, the outer projections) and the
    modules the model's own code keeps in higher precision (``_keep_in_fp32_modules``: T5's ``wo``),
    and token embeddings (sid adds the placeholder rows to them; T5's are 0.13B weights).
    """
    from diffusers.hooks import apply_layerwise_casting
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    compute = next(module.parameters()).dtype
    keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    own = tuple(getattr(module, "_skip_layerwise_casting_patterns", None) or ())
    skip = (*DEFAULT_SKIP_MODULES_PATTERN, *keep, *own)
    embeddings = (torch.nn.Embedding,)
    apply_layerwise_casting(module, torch.float8_e4m3fn, compute, skip, skip_modules_classes=embeddings)


class DDPMAdapter(Adapter):
    """SD 1.x and 2.x: a UNet on one CLIP encoder's last hidden states, trained as DDPM (eps or v).

    Training noise comes from the DDPM forward process of the model's own betas (``training_scheduler``),
    whatever sampler its folder ships; the losses are StableIdentity's masked two-phase loss and
    Celeb Basis's noise loss on that process.
    """

    key = "sd"
    controlnet_pipeline = "StableDiffusionControlNetPipeline"
    threed = True

    def setup(self, speed: Speedups) -> None:
        self.unet = self.denoiser
        self.noise_scheduler = training_scheduler(self.pipe.scheduler.config)
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(self.device)
        self._step = unet_step(self.unet, speed, self.device, self.amp_dtype)

    @classmethod
    def fits(cls, pipe: Any) -> bool:
        return cls._text_encoders(pipe) == 1

    @staticmethod
    def _text_encoders(pipe: Any) -> int:
        """How many text encoders a pipeline with a 2D conditional UNet and a first text encoder has
        (0 for any other pipeline: a video model's, an SDXL refiner's with no first encoder)."""
        unet, first = getattr(pipe, "unet", None), getattr(pipe, "text_encoder", None)
        if type(unet).__name__ != "UNet2DConditionModel" or first is None:
            return 0
        return 1 + (getattr(pipe, "text_encoder_2", None) is not None)

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    def condition(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The encoder's last hidden states (B, L, d)."""
        return (self.encoders[0][1](ids[:, 0])[0],)

    def noised(
        self, draw: tuple[Any, ...], faces: torch.Tensor, templates: torch.Tensor, gen: torch.Generator
    ) -> Sample:
        """Integer timesteps, then noise, then templates, drawn from ``gen`` in that order."""
        z0, mask, hair_mask, flip = draw
        batch, device = len(z0), z0.device
        t = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (batch,), generator=gen, device=device
        )
        noise = torch.randn(z0.shape, generator=gen, device=device)
        z_t = self.noise_scheduler.add_noise(z0, noise, t)
        ids = templates[torch.randint(0, len(templates), (batch,), generator=gen, device=device)]
        return Sample(z0, mask, hair_mask, faces[flip.long()], t, noise, z_t, ids)

    def denoise(self, z_t: torch.Tensor, t: torch.Tensor, *conditioning: torch.Tensor) -> torch.Tensor:
        return self._step(z_t, t, *conditioning)

    def loss(self, pred: torch.Tensor, s: Sample, method: str) -> torch.Tensor:
        if method not in MASKED_METHODS:
            return noise_loss(pred, s.noise, s.z_t, s.z0, s.t, self.alphas_cumprod, self.prediction_type)
        return two_phase_loss(
            pred,
            s.noise,
            s.z_t,
            s.z0,
            s.t,
            self.alphas_cumprod,
            s.mask,
            self.prediction_type,
            hair_mask=s.hair_mask,
            vae_scaling_factor=self.vae.config.scaling_factor,
        )

    def settings(self) -> dict[str, Any]:
        return {
            "prediction_type": self.prediction_type,
            "noise_schedule": describe_schedule(self.noise_scheduler, self.pipe.scheduler),
        }


class SDXLAdapter(DDPMAdapter):
    """SDXL: DDPM like SD, conditioned as its pipeline conditions: both encoders' penultimate hidden
    states side by side, encoder 2's pooled projection (``text_embeds``) and the size condition."""

    key = "sdxl"
    controlnet_pipeline = "StableDiffusionXLControlNetPipeline"
    threed = False

    def setup(self, speed: Speedups) -> None:
        super().setup(speed)
        self.time_ids = size_condition(self.resolution, self.device)  # (1, 6)

    @classmethod
    def fits(cls, pipe: Any) -> bool:
        return cls._text_encoders(pipe) == 2

    def condition(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, L, sum d) penultimate hidden states, (B, d2) ``text_embeds`` and (B, 6) ``time_ids``."""
        outs = [enc(ids[:, e], output_hidden_states=True) for e, (_, enc) in enumerate(self.encoders)]
        cond = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
        return cond, outs[-1][0], self.time_ids.expand(len(ids), -1)


class FluxAdapter(Adapter):
    """FLUX.1: a rectified-flow transformer on CLIP-L's pooled vector and T5's token sequence.

    The identity's vectors reach both encoders (CLIP-L acts only through its pooled output, as the
    pipeline conditions); latents are packed 2×2 with the pipeline's image and text ids; σ is drawn
    from the scheduler config's shifted table at the training size; the guidance input is FLUX.1-dev's
    3.5 when the transformer is guidance-distilled. The losses are ``sid.flow``'s.
    """

    key = "flux"
    denoiser_name = "transformer"
    controlnet_model = "FluxControlNetModel"
    controlnet_pipeline = "FluxControlNetPipeline"
    control_image_arg = "control_image"
    half_encoders = ("text_encoder_2",)  # T5-XXL: 19 GB in fp32, 9.5 GB in bf16
    float8_components = ("transformer", "text_encoder_2")  # --low-vram: 12B + 4.7B weights at 1 byte
    T5_LENGTH = 512  # FluxPipeline's max_sequence_length: the T5 length sid render conditions on
    LEARN_RESOLUTION = 512  # the default training side (FLUX's native 1024² is 4x the tokens and memory)

    def __init__(
        self,
        pipe: Any,
        spec: Any,
        device: str,
        amp_dtype: torch.dtype | None,
        speed: Speedups,
        resolution: int | None = None,
    ) -> None:
        multiple = self.side_multiple(pipe)
        if resolution is not None and resolution % multiple:
            raise BadInput(
                f"--resolution {resolution}: FLUX packs 2x2 latent patches (a multiple of {multiple})",
                f"try --resolution {resolution // multiple * multiple or multiple}",
            )
        super().__init__(pipe, spec, device, amp_dtype, speed, resolution or self.LEARN_RESOLUTION)
        side = self.resolution // int(pipe.vae_scale_factor)  # latent side
        self.image_seq_len = (side // 2) ** 2
        self.sigmas = flow.sigma_table(pipe.scheduler.config, self.image_seq_len).to(device)
        guided = self.guided(pipe)  # dev: a guidance input; schnell: none
        self.guidance = torch.full((1,), flow.FLUX_GUIDANCE, device=device) if guided else None
        self.txt_ids = flow.text_ids(self.T5_LENGTH, device)
        self.img_ids = {(side, side): flow.image_ids(side, side, device)}  # made here: no copy in a graph

    @classmethod
    def fits(cls, pipe: Any) -> bool:
        denoiser = type(getattr(pipe, "transformer", None)).__name__
        return denoiser == "FluxTransformer2DModel" and getattr(pipe, "text_encoder_2", None) is not None

    @classmethod
    def native_size(cls, pipe: Any) -> tuple[int, int]:
        """FluxPipeline's default size: its default latent side (128) times the VAE's factor: 1024²."""
        side = int(pipe.default_sample_size) * int(pipe.vae_scale_factor)
        return side, side

    @classmethod
    def prompt_reader(cls, pipe: Any) -> tuple[Any, int] | None:
        """T5 and its 512 tokens: CLIP, cut at 77 as in every FLUX tool, gives only the pooled vector."""
        return pipe.tokenizer_2, cls.T5_LENGTH

    @classmethod
    def guided(cls, pipe: Any) -> bool:
        return bool(pipe.transformer.config.guidance_embeds)  # FLUX.1-dev's; schnell has none

    @classmethod
    def side_multiple(cls, pipe: Any) -> int:
        return 2 * int(pipe.vae_scale_factor)  # 2x2 patches of the VAE's latents: 16 px

    def save_memory(self) -> None:
        """Also T5 recomputes each block in the backward: without it autograd would hold every T5 layer's
        up-cast weights until T5's backward (more than T5 in bf16), so float8 would save nothing there."""
        super().save_memory()
        t5 = self.pipe.text_encoder_2
        t5.gradient_checkpointing_enable({"use_reentrant": False})  # the name every transformers 5.x has
        for block in t5.encoder.block:  # transformers recomputes a layer only in training mode: the block's
            block.training = True  # own flag asks only that (its dropout and attention stay in eval)
        self.memory["gradient_checkpointing"].append("text_encoder_2")

    def prompt_ids(self, templates: tuple[str, ...], token: str) -> torch.Tensor:
        """(T, 2, 512): CLIP's 77 ids padded to T5's 512 with CLIP's pad id, and T5's ids."""
        (clip_tok, _), (t5_tok, _) = self.encoders
        clip = tokenize_templates(self.pipe, clip_tok, templates, token)
        t5 = tokenize_templates(self.pipe, t5_tok, templates, token, self.T5_LENGTH)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]), value=clip_tok.pad_token_id)
        return torch.stack([clip, t5], dim=1)

    def condition(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """T5's last hidden states (B, 512, d_t5) and CLIP's pooled output (B, d_clip)."""
        (clip_tok, clip), (_, t5) = self.encoders
        pooled = clip(ids[:, 0, : clip_tok.model_max_length]).pooler_output
        return t5(ids[:, 1])[0], pooled

    def noised(
        self, draw: tuple[Any, ...], faces: torch.Tensor, templates: torch.Tensor, gen: torch.Generator
    ) -> Sample:
        """σ from the shifted table, then noise, then templates, drawn from ``gen`` in that order."""
        z0, mask, hair_mask, flip = draw
        batch, device = len(z0), z0.device
        sigma = flow.draw_sigmas(self.sigmas, batch, gen)
        noise = torch.randn(z0.shape, generator=gen, device=device)
        z_t = flow.add_flow_noise(z0, noise, sigma)
        ids = templates[torch.randint(0, len(templates), (batch,), generator=gen, device=device)]
        return Sample(z0, mask, hair_mask, faces[flip.long()], sigma, noise, z_t, ids)

    def denoise(self, z_t: torch.Tensor, t: torch.Tensor, *conditioning: torch.Tensor) -> torch.Tensor:
        """The velocity (B, C, h, w): packed in, unpacked out; ``t`` is σ (the pipeline's timestep / 1000)."""
        sequence, pooled = conditioning
        b, _, h, w = z_t.shape
        guidance = self.guidance.expand(b) if self.guidance is not None else None
        out = self.denoiser(
            hidden_states=flow.pack_latents(z_t),
            timestep=t.to(z_t.dtype),
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=sequence,
            txt_ids=self.txt_ids.to(z_t.dtype),
            img_ids=self._image_ids(h, w).to(z_t.dtype),
            return_dict=False,
        )[0]
        return flow.unpack_latents(out, h, w)

    def _image_ids(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self.img_ids:
            self.img_ids[h, w] = flow.image_ids(h, w, self.device)
        return self.img_ids[h, w]

    def loss(self, pred: torch.Tensor, s: Sample, method: str) -> torch.Tensor:
        if method not in MASKED_METHODS:
            return flow.flow_noise_loss(pred, s.noise, s.z0)
        scale = self.vae.config.scaling_factor
        return flow.flow_two_phase_loss(pred, s.noise, s.z_t, s.z0, s.t, s.mask, scale, s.hair_mask)

    def settings(self) -> dict[str, Any]:
        config = self.pipe.scheduler.config
        keys = (
            "shift",
            "use_dynamic_shifting",
            "base_shift",
            "max_shift",
            "base_image_seq_len",
            "max_image_seq_len",
        )
        return {
            "prediction_type": "flow",  # velocity ε - z0 on z_t = (1 - σ) z0 + σ ε
            "noise_schedule": {
                "class": type(self.pipe.scheduler).__name__,
                **{k: config.get(k) for k in keys},
                "image_seq_len": self.image_seq_len,
                "phase_sigma": flow.phase_sigma(),
                "guidance": flow.FLUX_GUIDANCE if self.guidance is not None else None,
                "t5_length": self.T5_LENGTH,
            },
        }


# the family table's adapter names; for a model of no row, the first that fits (most specific first)
ADAPTERS: dict[str, type[Adapter]] = {cls.key: cls for cls in (FluxAdapter, SDXLAdapter, DDPMAdapter)}


def adapter_for(pipe: Any) -> type[Adapter]:
    """The adapter of a loaded pipeline: its family row's, else the first whose layout fits."""
    key = family_of_pipeline(pipe).adapter
    if key:
        return ADAPTERS[key]
    for cls in ADAPTERS.values():
        if cls.fits(pipe):
            return cls
    raise BadInput(
        f"sid cannot drive a {type(pipe).__name__}",
        f"pass a model of one of: {', '.join(dict.fromkeys(f.name for f in FAMILIES))}",
    )


def fits_any(pipe: Any) -> bool:
    """Whether some adapter drives ``pipe`` (a text-to-image pipeline of a family sid knows)."""
    return any(cls.fits(pipe) for cls in ADAPTERS.values())


def layout_of(pipe: Any) -> type[Adapter]:
    """The adapter to ask about a pipeline's layout: its own, else the base class's defaults (a video
    model's pipeline, which no adapter drives)."""
    return adapter_for(pipe) if fits_any(pipe) else Adapter


def load_dtypes(amp_dtype: torch.dtype | None) -> dict[str, torch.dtype] | None:
    """Per-component load dtypes: every family's denoiser (a pipeline has one of them) and its large
    text encoders (FLUX's 4.7B T5) in the autocast dtype, so no fp32 copy of them is ever on the
    device; None: all fp32."""
    if amp_dtype is None:
        return None
    names = [n for cls in ADAPTERS.values() for n in (cls.denoiser_name, *cls.half_encoders)]
    return dict.fromkeys(names, amp_dtype)


# -- the DDPM families' pieces -------------------------------------------------------------------
def training_scheduler(config: Any) -> DDPMScheduler:
    """The DDPM forward process of a model's own betas, whatever sampler its folder ships.

    A sampler's ``add_noise`` uses its own parametrisation (Euler's is x0 + sigma * eps, not
    sqrt(ab) * x0 + sqrt(1 - ab) * eps), so training noise comes from DDPMScheduler built from the
    same config (betas, prediction_type, zero-terminal-SNR rescale), as both papers' code does.
    """
    return DDPMScheduler.from_config(config)


def describe_schedule(noise_scheduler: Any, sampler: Any) -> dict[str, Any]:
    """What an identity's metadata records of its training noise: enough to rebuild the schedule."""
    keys = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "rescale_betas_zero_snr")
    return {
        "class": type(noise_scheduler).__name__,
        "from": type(sampler).__name__,
        **{k: noise_scheduler.config.get(k) for k in keys},
    }


def size_condition(resolution: int, device: str) -> torch.Tensor:
    """SDXL's (1, 6) ``time_ids`` for a square training image: original size, crop corner (0, 0: the
    bank's images are whole, aligned faces) and target size, as its pipeline passes at that size."""
    return torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], device=device)


def tokenize_templates(
    pipe: Any, tokenizer: Any, templates: tuple[str, ...], token: str, length: int | None = None
) -> torch.Tensor:
    """(T, L) ids of every prompt template with the identity token where the name goes, padded to
    ``length`` (default: the tokenizer's own, 77 for CLIP)."""
    texts = [pipe.maybe_convert_prompt(t.format(token), tokenizer) for t in templates]
    return tokenizer(
        texts,
        padding="max_length",
        max_length=length or tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
