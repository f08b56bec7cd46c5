"""Score distillation: the frozen diffusion model tells each rendered view which way to move.

SDS (DreamFusion): noise the view's latents to a random step t, let the UNet predict the noise with
classifier-free guidance, and push the latents along ``w(t) * (eps_hat - eps)``, with
``w(t) = 1 - alphā_t`` (DreamFusion's sigma_t^2 weighting). ISM (LucidDreamer, optional): replace the
random noise by a deterministic DDIM-inversion trajectory, x0 -> x_s -> x_t with s = t - delta, and
push along ``w(t) * (eps_hat(x_t, t) - eps_uncond(x_s, s))``.

The gradient enters autograd through ``gradient_loss``, a surrogate whose gradient with respect to
the latents is exactly the given tensor (no rounding), and whose value is ``0.5 * |g|^2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sid.methods import split_prediction
from sid.pipelines import native_size
from sid.threed.cameras import VIEWS

# Predictor: (x_t (B,4,h,w), t (B,), guidance or None) -> predicted noise; None means unconditional only
Predictor = Callable[[torch.Tensor, torch.Tensor, "float | None"], torch.Tensor]
T_RANGE = (0.02, 0.98)  # fraction of the training timesteps t is drawn from
ANTI_JANUS = {  # negatives added per view direction, against faces everywhere (the Janus problem)
    "front": "",
    "side": "multiple faces, two faces",
    "back": "face, multiple faces, two faces",
}
DEFAULT_GUIDANCE = {"sds": 100.0, "ism": 7.5}
ISM_DELTA_T = 50  # s = t - delta: the interval ISM matches over
ISM_INVERSION_STRIDE = 200  # DDIM inversion from x0 to x_s in steps of at most this many timesteps


# -- prompts ----------------------------------------------------------------------------------------
def view_prompts(text: str, negative: str = "") -> dict[str, tuple[str, str]]:
    """view label -> (prompt with a view suffix, negative prompt with the anti-Janus terms)."""
    table = {}
    for view in VIEWS:
        extra = ANTI_JANUS[view]
        neg = ", ".join(p for p in (negative.strip(), extra) if p)
        table[view] = (f"{text}, {view} view", neg)
    return table


@torch.no_grad()
def encode_views(pipe: Any, text: str, negative: str = "", device: Any = None) -> dict[str, torch.Tensor]:
    """view label -> (2, L, d) [unconditional, conditional] embeddings from the pipeline's own
    ``encode_prompt`` (which expands multi-vector identity tokens as textual inversion does)."""
    device = device or pipe.device
    table = {}
    for view, (prompt, neg) in view_prompts(text, negative).items():
        cond, uncond = pipe.encode_prompt(prompt, device, 1, True, negative_prompt=neg)
        table[view] = torch.cat([uncond, cond])
    return table


# -- the pure gradients -----------------------------------------------------------------------------
def sample_timesteps(
    batch: int, num_train_timesteps: int, generator: torch.Generator, t_range: tuple[float, float] = T_RANGE
) -> torch.Tensor:
    low, high = int(t_range[0] * num_train_timesteps), int(t_range[1] * num_train_timesteps)
    return torch.randint(low, high + 1, (batch,), generator=generator)


def _abar(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return alphas_cumprod.to(t.device)[t].float().view(-1, 1, 1, 1)


def sds_gradient(
    latents: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    predict: Predictor,
    guidance: float,
) -> torch.Tensor:
    """``w(t) * (eps_hat - noise)`` for latents (B, 4, h, w); no gradient flows through it."""
    with torch.no_grad():
        a = _abar(alphas_cumprod, t)
        x_t = a.sqrt() * latents.detach() + (1.0 - a).sqrt() * noise
        eps_hat = predict(x_t, t, guidance).float()
        return (1.0 - a) * (eps_hat - noise)


def ddim_invert(
    x: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    predict: Predictor,
    stride: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic DDIM (eta = 0) from step ``start`` up to ``end`` (both (B,)), unconditional,
    in steps of at most ``stride``. Returns x_end and the noise predicted at the last point left."""
    eps = torch.zeros_like(x)
    here = start.clone()
    while bool((here < end).any()):
        there = torch.minimum(here + stride, end)
        a, b = _abar(alphas_cumprod, here), _abar(alphas_cumprod, there)
        eps = predict(x, here, None).float()
        x0 = (x - (1.0 - a).sqrt() * eps) / a.sqrt()
        moved = (there > here).view(-1, 1, 1, 1)
        x = torch.where(moved, b.sqrt() * x0 + (1.0 - b).sqrt() * eps, x)
        here = there
    return x, eps


def ism_gradient(
    latents: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    predict: Predictor,
    guidance: float,
    delta_t: int = ISM_DELTA_T,
    stride: int = ISM_INVERSION_STRIDE,
) -> torch.Tensor:
    """Interval score matching: ``w(t) * (eps_hat(x_t, t) - eps_uncond(x_s, s))``, with DDIM inversion."""
    with torch.no_grad():
        x0 = latents.detach().float()
        s = (t - delta_t).clamp(min=0)
        x_s, _ = ddim_invert(x0, torch.zeros_like(t), s, alphas_cumprod, predict, stride)
        eps_s = predict(x_s, s, None).float()
        a_s, a_t = _abar(alphas_cumprod, s), _abar(alphas_cumprod, t)
        x_t = a_t.sqrt() * (x_s - (1.0 - a_s).sqrt() * eps_s) / a_s.sqrt() + (1.0 - a_t).sqrt() * eps_s
        eps_hat = predict(x_t, t, guidance).float()
        return (1.0 - a_t) * (eps_hat - eps_s)


def gradient_loss(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient w.r.t. ``latents`` is exactly ``grad`` and whose value is 0.5 * |grad|^2.

    ``(latents * g).sum()`` has gradient g bit for bit; the detached copy subtracts the same number
    back, so the value is the usual SDS surrogate ``0.5 * |latents - (latents - g)|^2``.
    """
    g = grad.detach().to(latents.dtype)
    return (latents * g).sum() - (latents.detach() * g).sum() + 0.5 * (g.float() ** 2).sum()


# -- the frozen model --------------------------------------------------------------------------------
class Guide:
    """The frozen VAE + UNet of a Stable Diffusion pipeline, turned into latents and predictors."""

    def __init__(self, pipe: Any, embeddings: dict[str, torch.Tensor]) -> None:
        self.unet, self.vae = pipe.unet, pipe.vae
        for module in (self.unet, self.vae, pipe.text_encoder):
            module.requires_grad_(False).eval()
        self.device = self.unet.device
        self.embeddings = embeddings  # view -> (2, L, d) [uncond, cond]
        self.alphas_cumprod = pipe.scheduler.alphas_cumprod.to(self.device)
        self.num_train_timesteps = int(pipe.scheduler.config.num_train_timesteps)
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        self.scaling = float(self.vae.config.scaling_factor)
        self.native = native_size(pipe)[0]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] -> latents (B, 4, n/8, n/8) at the model's native size n,
        bilinearly resized first when S != n. Differentiable."""
        if images.shape[-1] != self.native:
            images = F.interpolate(images, (self.native, self.native), mode="bilinear", align_corners=False)
        x = (images * 2.0 - 1.0).to(self.vae.dtype)
        return self.vae.encode(x).latent_dist.mean.float() * self.scaling

    def predictor(self, views: list[str]) -> Predictor:
        """Noise predictor for a batch whose i-th sample was rendered from view ``views[i]``."""
        emb = torch.stack([self.embeddings[v] for v in views], 1)  # (2, B, L, d)
        uncond, cond = emb[0], emb[1]

        def predict(x_t: torch.Tensor, t: torch.Tensor, guidance: float | None) -> torch.Tensor:
            t = t.to(self.device)
            abar = _abar(self.alphas_cumprod, t)
            if guidance is None:
                x_in, t_in, ctx = x_t, t, uncond
            else:
                x_in, t_in, ctx = torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([uncond, cond])
            pred = self.unet(
                x_in.to(self.unet.dtype), t_in, encoder_hidden_states=ctx.to(self.unet.dtype)
            ).sample
            abar_in = torch.cat([abar] * (x_in.shape[0] // x_t.shape[0]))
            pred, _ = split_prediction(pred.float(), x_in.float(), abar_in, self.prediction_type)
            if guidance is None:
                return pred
            eps_u, eps_c = pred.chunk(2)
            return eps_u + guidance * (eps_c - eps_u)

        return predict

    def gradient(
        self,
        latents: torch.Tensor,
        views: list[str],
        generator: torch.Generator,
        guidance: float,
        method: str = "sds",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient for the latents, timesteps used); random draws come from the CPU ``generator``."""
        t = sample_timesteps(latents.shape[0], self.num_train_timesteps, generator).to(self.device)
        predict = self.predictor(views)
        if method == "ism":
            grad = ism_gradient(latents, t, self.alphas_cumprod, predict, guidance)
        else:
            noise = torch.randn(latents.shape, generator=generator).to(self.device)
            grad = sds_gradient(latents, noise, t, self.alphas_cumprod, predict, guidance)
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0), t
