"""The two learning methods as plain math: the face-to-name mappers, their losses and their training recipes.

StableIdentity (Wang et al. 2024) maps a face feature through an MLP to two vectors landed in the
celebrity-name distribution by AdaIN and trains with a masked two-phase diffusion loss. Celeb Basis
(Yuan et al. 2023) maps it to unit-norm coefficients of the celebrity principal directions and trains
with the plain noise-prediction loss. Only the mapper is trained; everything here is device-agnostic.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sid.errors import BadInput
from sid.priors import CelebPrior

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
MASKED_METHODS = ("stableidentity",)  # methods whose loss uses the face (and hair) mask
SD_VAE_SCALING_FACTOR = 0.18215  # Stable Diffusion 1.x/2.x
# Floor of ab and 1 - ab where they divide: a zero-terminal-SNR schedule has ab = 0 at its last step,
# where the x0 estimate would be 0/0 (NaN gradients even through torch.where's unused branch). The
# value is diffusers' own for that step (EulerDiscreteScheduler); no standard schedule comes near it.
MIN_ALPHA_BAR = 2.0**-24
PHASE_THRESHOLD = 600  # StableIdentity's two-phase boundary: DDPM t > 600 is the high-noise phase


# -- mappers ------------------------------------------------------------------------------------------
def fp32(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run a mapper method in fp32 even inside the training loop's bf16/fp16 autocast.

    Both papers' official runs are fp32; under bf16 the mapper's output moves by ~0.5 % and its
    gradient by ~0.7 %, while the tiny MLP costs nothing next to the UNet. The frozen networks keep
    the autocast dtype; only the trained part (and the vectors it hands them) stays exact.
    """

    @functools.wraps(forward)
    def run(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return forward(self, x.float())

    return run


class EqualLinear(nn.Module):
    """A linear layer with an equalized learning rate, in the form StableIdentity's mapper uses.

    The stored parameters are multiplied by ``lr_mul`` at every call: W_eff = lr_mul * W and
    b_eff = lr_mul * b. StableIdentity's layer has no He constant (c = 1, where StyleGAN2 uses
    1/sqrt(in_dim)), and its training script re-initialises the *stored* weight to N(0, 0.02) and the
    bias to 0; ``init_std`` and ``bias_init`` are those stored values, so with the defaults
    W_eff ~ N(0, (0.1 * 0.02)^2) = N(0, 0.002^2) at init. Since W_eff is a fixed multiple of W:

    - SGD: dL/dW = lr_mul * dL/dW_eff, so a step of ``lr`` moves W_eff by -lr * lr_mul^2 * dL/dW_eff;
    - Adam/AdamW (invariant to the gradient's scale): a step moves each stored entry by about ``lr``,
      so W_eff by about lr * lr_mul (5e-6 for StableIdentity's lr 5e-5), the same step relative to
      the weights' size (lr / init_std) as a plain layer initialised N(0, init_std^2).

    AdamW's decoupled weight decay shrinks W, hence W_eff, by the same factor either way.
    """

    def __init__(
        self, in_dim: int, out_dim: int, lr_mul: float = 0.1, init_std: float = 0.02, bias_init: float = 0.0
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) * init_std)  # stored (out, in)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.lr_mul = lr_mul

    @property
    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.lr_mul

    @property
    def effective_bias(self) -> torch.Tensor:
        return self.bias * self.lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight, self.effective_bias)


class StableIdentityMapper(nn.Module):
    """Face feature (B, f) -> K name vectors (B, K, d) landed in the celebrity-name distribution.

    EqualLinear(f -> h) -> LeakyReLU(0.2) -> LayerNorm(h) -> EqualLinear(h -> K*d) -> LayerNorm(K*d),
    then AdaIN per slot: v_k = std_k * x_k + mean_k with the celebrities' per-dimension statistics.
    h defaults to K*d, as in StableIdentity.

    Several text encoders (SDXL: ``token_dim`` (768, 1280)): one MLP whose output covers every
    encoder (K * sum(d_e)); the final LayerNorm and AdaIN act per encoder part with that encoder's
    statistics, so each part lands among its own encoder's celebrities as a lone encoder's would.
    The output is (B, K, sum(d_e)), encoders side by side (``split_widths`` parts them), and
    ``mean``/``std`` are the encoders' (K, d_e) statistics side by side likewise.

    The final LayerNorm normalises the whole K*d vector, as StableIdentity's code does (its mapper's
    output width is num_tokens * token_dim), not each token: per token would only differ at init (the
    learned LayerNorm gain and bias, K*d each, reshape the output anyway), and per-token gains of size d
    could not tell the slots apart. LayerNorm is per sample, so at init it gives each sample's K*d
    values mean 0 and mean square var / (var + eps) ~ 1. Over a batch of different faces the
    standardised landed vectors (v - mean) / std therefore have a second moment averaged over samples
    and all K*d dimensions of exactly that, and per-dimension batch means near 0 and stds near 1
    (within ~25% at init): an approximate, not exact, match of the celebrities' per-dimension mean and
    std, which is all that a per-sample normalisation can promise.

    Feed features whose entries are O(1) (StableIdentity's ViT CLS token): a unit-length 512-d
    embedding gives the first LayerNorm inputs of variance ~2e-6 at init, below its eps of 1e-5, so
    that LayerNorm does not normalise until the first layer's weights grow.
    """

    def __init__(
        self,
        face_dim: int,
        token_dim: int | tuple[int, ...],
        mean: torch.Tensor,
        std: torch.Tensor,
        num_tokens: int = 2,
        hidden: int | None = None,
    ):
        super().__init__()
        self.widths = _widths(token_dim)
        width = sum(self.widths)
        if mean.shape != (num_tokens, width) or std.shape != (num_tokens, width):
            shapes = f"{tuple(mean.shape)}/{tuple(std.shape)}"
            raise ValueError(f"mean/std must be ({num_tokens}, {width}), got {shapes}")
        out = num_tokens * width
        hidden = hidden or out
        self.num_tokens = num_tokens
        self.net = nn.Sequential(
            EqualLinear(face_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.LayerNorm(hidden),
            EqualLinear(hidden, out),
        )
        self.norms = nn.ModuleList(nn.LayerNorm(num_tokens * w) for w in self.widths)  # one per encoder
        self.register_buffer("mean", mean.detach().clone().float())  # (K, sum d)
        self.register_buffer("std", std.detach().clone().float())  # (K, sum d)

    @fp32
    def forward(self, face_emb: torch.Tensor) -> torch.Tensor:
        parts = torch.split(self.net(face_emb), [self.num_tokens * w for w in self.widths], dim=-1)
        x = torch.cat(  # (B, K, sum d), standardised per encoder
            [
                norm(p).view(-1, self.num_tokens, w)
                for norm, p, w in zip(self.norms, parts, self.widths, strict=True)
            ],
            dim=-1,
        )
        return x * self.std + self.mean


class CelebBasisMapper(nn.Module):
    """Face feature (B, f) -> 2 name vectors (B, 2, d) in the span of the celebrity basis.

    Linear(f -> 2*hidden) -> LeakyReLU(0.2) -> per slot L2-normalised coefficients c_k (hidden,), then
    v_k = mean_k + c_k[:p] @ directions_k. The weight starts N(0, 1) with a zero bias, as Celeb Basis's
    layer (an equalized-lr linear with lr_mul = 1) does, not PyTorch's default uniform(+-1/sqrt(f)):
    the output is invariant to the weight's scale, but with Adam at lr 1e-2 that scale sets how far one
    step turns the coefficients (about 1% of the weights per step here, ~40x more with the default).

    Several text encoders (SDXL): each encoder's slot gets its own unit-norm coefficients over that
    encoder's basis, so the rows are (encoder, slot) pairs, E*K of them; ``basis`` is ``stack_bases``
    of the encoders' bases and ``token_dim`` their widths. The output is (B, K, sum(d_e)), encoders
    side by side as ``split_widths`` parts them.

    Celeb Basis stores, per identity, not the mapper's last output but a moving average of the
    coefficients it produced while training (``average``, one row per jointly learned identity; a
    buffer, so checkpoints carry it).
    """

    def __init__(
        self,
        face_dim: int,
        basis: torch.Tensor,
        hidden: int = 512,
        identities: int = 1,
        momentum: float = 0.99,
        token_dim: int | tuple[int, ...] | None = None,
    ):
        super().__init__()
        num_rows, rows, width = basis.shape  # (E*K, 1 + p, max d)
        self.widths = _widths(token_dim or width)
        if rows - 1 > hidden:
            raise ValueError(f"the basis has {rows - 1} directions but only {hidden} coefficients")
        self.num_tokens, self.hidden, self.momentum = num_rows // len(self.widths), hidden, momentum
        self.linear = nn.Linear(face_dim, num_rows * hidden)
        nn.init.normal_(self.linear.weight, 0.0, 1.0)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("basis", basis.detach().clone().float())  # (E*K, 1 + p, max d)
        self.register_buffer("average", torch.zeros(identities, num_rows, hidden))  # (N, E*K, hidden)
        self.register_buffer("updates", torch.zeros(identities, dtype=torch.long))  # samples averaged, per id

    @fp32
    def coefficients(self, face_emb: torch.Tensor) -> torch.Tensor:
        """(B, E*K, hidden) unit-norm coefficient rows."""
        x = F.leaky_relu(self.linear(face_emb), 0.2).view(-1, len(self.basis), self.hidden)
        return F.normalize(x, dim=-1)

    @fp32
    def vectors(self, c: torch.Tensor) -> torch.Tensor:
        """(B, K, sum d) name vectors of coefficients (B, E*K, hidden): mean + c[:p] @ directions, per row."""
        mean, directions = self.basis[:, 0], self.basis[:, 1:]  # (E*K, d), (E*K, p, d)
        rows = mean + torch.einsum(
            "bkp,kpd->bkd", c[..., : directions.shape[1]].to(directions.dtype), directions
        )
        k = self.num_tokens
        return torch.cat([rows[:, e * k : (e + 1) * k, :w] for e, w in enumerate(self.widths)], dim=-1)

    def forward(self, face_emb: torch.Tensor) -> torch.Tensor:
        return self.vectors(self.coefficients(face_emb))

    @torch.no_grad()
    def update_average(self, who: int, face_emb: torch.Tensor) -> None:
        """Fold this step's coefficients of identity ``who`` into its moving average, sample by sample.

        As Celeb Basis's code: avg = m * avg + (1 - m) * c for each sample of the batch in order, with
        the coefficients of the weights the step's loss used (call before ``optimizer.step``). Its code
        starts the average at a random normal draw; here it starts at the first sample's coefficients,
        so short runs are not left holding 0.99^n of noise.
        """
        for c in self.coefficients(face_emb).float():  # (E*K, hidden) per sample
            blended = self.momentum * self.average[who] + (1 - self.momentum) * c
            self.average[who] = torch.where(self.updates[who] > 0, blended, c)
            self.updates[who] += 1

    def averaged_vectors(self, who: int) -> torch.Tensor:
        """(K, sum d) the stored result of identity ``who``: the vectors of its averaged coefficients."""
        return self.vectors(self.average[who : who + 1])[0]


def split_widths(vectors: torch.Tensor, widths: tuple[int, ...]) -> list[torch.Tensor]:
    """(..., sum(widths)) -> one (..., w) part per text encoder, encoder 1 first: a mapper's output
    holds every encoder's vectors side by side, so the step hands one tensor around."""
    return list(torch.split(vectors, list(widths), dim=-1))


def _widths(token_dim: int | tuple[int, ...]) -> tuple[int, ...]:
    return (token_dim,) if isinstance(token_dim, int) else tuple(token_dim)


def stack_bases(bases: list[torch.Tensor]) -> torch.Tensor:
    """One (E*K, 1 + p, max d) tensor of E encoders' (K, 1 + p_e, d_e) bases, zero-padded: padded
    directions add nothing and ``CelebBasisMapper.vectors`` cuts the padded dimensions off again."""
    rows, width = max(b.shape[1] for b in bases), max(b.shape[2] for b in bases)
    return torch.cat([F.pad(b, (0, width - b.shape[2], 0, rows - b.shape[1])) for b in bases])


def build_mapper(method: str, face_dim: int, priors: list[CelebPrior], identities: int = 1) -> nn.Module:
    """The trainable mapper of ``method`` for face features of width ``face_dim``, with one celebrity
    prior per text encoder of the model (each built from that encoder's own embedding table)."""
    widths = tuple(p.token_dim for p in priors)
    if method == "stableidentity":
        mean, std = (torch.cat([getattr(p, stat) for p in priors], dim=-1) for stat in ("mean", "std"))
        return StableIdentityMapper(face_dim, widths, mean, std)
    if method == "celebbasis":
        basis = stack_bases([p.basis for p in priors])
        ema = RECIPES[method].ema
        return CelebBasisMapper(face_dim, basis, identities=identities, momentum=ema, token_dim=widths)
    raise BadInput(f"unknown method {method!r}", f"use one of: {', '.join(RECIPES)}")


class StackedMappers(nn.Module):
    """K independent mappers of one architecture as one module: parameters stacked on a leading K axis
    and run as one vmapped call, so a step costs the same few kernels whatever K.

    Identity k's slice only ever sees identity k's samples, so its gradient is the one it would get
    alone; AdamW is elementwise, so one optimizer over the stacked tensors keeps each identity's own
    state; ``clip_grad_norm_`` clips each identity's slice by its own norm. Mappers with running
    buffers that training updates (Celeb Basis's moving average) are not stacked: buffers are shared
    read-only state here.
    """

    def __init__(self, mappers: list[nn.Module]) -> None:
        super().__init__()
        from torch.func import stack_module_state

        params, buffers = stack_module_state(mappers)
        self.names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach()) for n in self.names])
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[name])
        self.count = len(mappers)
        self._shape = [copy.deepcopy(mappers[0]).to("meta")]  # the architecture only (not a submodule)

    def _buffers_by_name(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"buffer{i}") for i, name in enumerate(self.buffer_names)}

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """(K, B, f) face features -> (K, B, ...) each identity's mapper output on its own faces."""
        from torch.func import functional_call

        def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor):
            return functional_call(self._shape[0], (params, buffers), (x,))

        params = dict(zip(self.names, self.stacked, strict=True))
        return torch.vmap(one)(params, self._buffers_by_name(), faces)

    def state_of(self, k: int) -> dict[str, torch.Tensor]:
        """Identity k's mapper state dict (its parameters' slices and its buffers)."""
        state = {n: p[k].detach() for n, p in zip(self.names, self.stacked, strict=True)}
        return state | {n: b[k] for n, b in self._buffers_by_name().items()}

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip each identity's gradient to ``max_norm`` as ``torch.nn.utils.clip_grad_norm_`` would clip
        it alone; returns the (K,) norms before clipping."""
        grads = [p.grad for p in self.stacked if p.grad is not None]
        norms = torch.stack([g.float().flatten(1).square().sum(1) for g in grads]).sum(0).sqrt()
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.ndim - 1)).to(g.dtype))
        return norms


def slice_state(stacked: dict[str, Any], k: int, like: dict[str, Any]) -> dict[str, Any]:
    """Identity k's AdamW state (step, moments) out of the stacked optimizer's state dict."""
    state = {
        pid: {name: v if name == "step" else v[k] for name, v in entry.items()}
        for pid, entry in stacked["state"].items()
    }
    return {"state": state, "param_groups": like["param_groups"]}


def stack_states(singles: list[dict[str, Any]], like: dict[str, Any]) -> dict[str, Any]:
    """The stacked optimizer's state from K identities' own (resumed from the same step)."""
    state = {
        pid: {
            name: v if name == "step" else torch.stack([s["state"][pid][name] for s in singles])
            for name, v in entry.items()
        }
        for pid, entry in singles[0]["state"].items()
    }
    return {"state": state, "param_groups": like["param_groups"]}


# -- losses -------------------------------------------------------------------------------------------
def _per_sample(alpha_bar_t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast against ``like``."""
    return alpha_bar_t.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise BadInput(
            f"unsupported scheduler prediction_type {prediction_type!r}",
            f"sid learns with models that predict one of: {', '.join(PREDICTION_TYPES)}",
        )


def split_prediction(
    model_output: torch.Tensor, z_t: torch.Tensor, alpha_bar_t: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_hat, x0_hat) from a UNet output, with z_t = sqrt(ab) * x0 + sqrt(1 - ab) * eps and ab (B,).

    ab and 1 - ab are floored at MIN_ALPHA_BAR, so the estimates stay finite at ab = 0 (zero terminal SNR).
    """
    _check_prediction_type(prediction_type)
    ab = _per_sample(alpha_bar_t, model_output)
    a, s = ab.clamp(min=MIN_ALPHA_BAR).sqrt(), (1 - ab).clamp(min=MIN_ALPHA_BAR).sqrt()
    if prediction_type == "epsilon":
        return model_output, (z_t - s * model_output) / a
    if prediction_type == "v_prediction":  # v = a * eps - s * x0
        return a * model_output + s * z_t, a * z_t - s * model_output
    return (z_t - a * model_output) / s, model_output  # "sample"


def _native_target(
    noise: torch.Tensor, z0: torch.Tensor, ab: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the UNet was trained to output: eps, v = sqrt(ab) * eps - sqrt(1 - ab) * z0, or z0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return ab.sqrt() * noise - (1 - ab).sqrt() * z0
    return z0


def masked_mse(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) mean over each sample's whole tensor of (M*a - M*b)^2, zeros outside the mask included."""
    return (mask * (a - b)).square().flatten(1).mean(dim=1)


def two_phase_loss(
    model_output: torch.Tensor,
    noise: torch.Tensor,
    z_t: torch.Tensor,
    z0: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    mask: torch.Tensor,
    prediction_type: str = "epsilon",
    threshold: int = PHASE_THRESHOLD,
    hair_mask: torch.Tensor | None = None,
    hair_weight: float = 0.1,
    vae_scaling_factor: float = SD_VAE_SCALING_FACTOR,
) -> torch.Tensor:
    """StableIdentity's masked two-phase diffusion loss (scalar).

    All latents are the UNet's: z0 = VAE latent * vae_scaling_factor, z_t = add_noise(z0, noise, t).
    Per sample, with M the face mask (B, 1, h, w):
      t > threshold:  MSE(M * out, M * target), target the model's own (eps, or v for v-models), as
                      StableIdentity's code does;
      t <= threshold: MSE(M * x0_hat, M * z0) / vae_scaling_factor^2, i.e. compared in the unscaled VAE
                      latent space as StableIdentity's code does (it divides both by the factor), which
                      weighs this branch ~30x more than the UNet-space MSE would.
    With ``hair_mask``, ``hair_weight`` times the same loss under the hair mask is added in both
    branches (as the code does). Each MSE is the mean over the whole (C, h, w) tensor, zeros outside the
    mask included. The batch loss is the mean of the per-sample losses; at StableIdentity's batch of 1
    this equals its code, which instead sums the two branches' means.
    """
    _check_prediction_type(prediction_type)
    out, noise, z_t, z0 = model_output.float(), noise.float(), z_t.float(), z0.float()
    ab = _per_sample(alphas_cumprod[timesteps], out)
    target = _native_target(noise, z0, ab, prediction_type)
    _, x0_hat = split_prediction(out, z_t, alphas_cumprod[timesteps], prediction_type)
    x0_hat, z0_unscaled = x0_hat / vae_scaling_factor, z0 / vae_scaling_factor
    masks = [(mask.float(), 1.0)] + ([(hair_mask.float(), hair_weight)] if hair_mask is not None else [])
    noise_part = sum(w * masked_mse(m, out, target) for m, w in masks)  # (B,)
    x0_part = sum(w * masked_mse(m, x0_hat, z0_unscaled) for m, w in masks)  # (B,)
    return torch.where(timesteps.to(out.device) > threshold, noise_part, x0_part).mean()


def noise_loss(
    model_output: torch.Tensor,
    noise: torch.Tensor,
    z_t: torch.Tensor,
    z0: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """Celeb Basis's plain diffusion loss: MSE between the output and the model's own target (scalar).

    The target is eps for epsilon models (Celeb Basis's SD 1.4), v = sqrt(ab) * eps - sqrt(1 - ab) * z0
    for v-prediction models and z0 for sample models: the loss each model was trained with, as
    diffusers' training scripts do. For a v-model this is MSE(eps_hat, eps) / ab per sample.
    ``z_t`` is accepted for a signature parallel to ``two_phase_loss``; the target does not need it.
    """
    _check_prediction_type(prediction_type)
    out = model_output.float()
    ab = _per_sample(alphas_cumprod[timesteps], out)
    return F.mse_loss(out, _native_target(noise.float(), z0.float(), ab, prediction_type))


# -- recipes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """A method's training defaults; ``{}`` in a template is where the two-vector name goes."""

    method: str
    steps: int  # per identity: joint learning of N identities runs N times as many
    batch_size: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    grad_clip: float | None  # max gradient norm, None: no clipping
    templates: tuple[str, ...]
    model: str  # base model preset the paper used (its family)
    ema: float | None = None  # momentum of the stored moving average of coefficients, None: last output


# Textual Inversion's imagenet_templates_small, which both papers' datasets use: 27 photo templates,
# then the same with "a photo of" read as "an illustration of" and "a depiction of" (81 in all, some
# repeated, so a uniform draw weights them as the papers' code does).
PHOTO_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)
IMAGENET_TEMPLATES = tuple(
    t.replace("a photo of", kind)
    for kind in ("a photo of", "an illustration of", "a depiction of")
    for t in PHOTO_TEMPLATES
)
# StableIdentity formats "* person" into them and writes its two vectors over "*" and "person".
STABLEIDENTITY_TEMPLATES = IMAGENET_TEMPLATES
# Celeb Basis formats "face of sks person" and inserts its two vectors in place of "sks".
CELEBBASIS_TEMPLATES = tuple(t.format("face of {} person") for t in IMAGENET_TEMPLATES)

RECIPES: dict[str, Recipe] = {
    # StableIdentity's train.py on SD 2.1: max_train_steps 451 at batch 1 (its "-450" checkpoint is
    # saved after the 451st update), AdamW 5e-5 (0.9, 0.999), wd 1e-2, clip 1.0.
    "stableidentity": Recipe(
        "stableidentity", 451, 1, 5e-5, (0.9, 0.999), 1e-2, 1.0, STABLEIDENTITY_TEMPLATES, model="sd21"
    ),
    # Celeb Basis on SD 1.4: max_steps 800 for its 2 joint identities, base lr 5e-3 scaled by batch 2;
    # torch AdamW defaults (wd 1e-2), Lightning without clipping; stores the 0.99 average of coefficients.
    "celebbasis": Recipe(
        "celebbasis", 400, 2, 1e-2, (0.9, 0.999), 1e-2, None, CELEBBASIS_TEMPLATES, model="sd15", ema=0.99
    ),
}
