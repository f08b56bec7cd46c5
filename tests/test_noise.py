"""Training noise comes from the model's DDPM schedule, whatever sampler its folder ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sid.methods import noise_loss, two_phase_loss
from sid.render import SCHEDULERS, set_scheduler
from sid.train import describe_schedule, training_scheduler


def _alpha_bar_from_betas(config: dict) -> np.ndarray:
    """ab_t = prod(1 - beta) from the config's betas, computed here without diffusers (float64)."""
    n, lo, hi = config["num_train_timesteps"], config["beta_start"], config["beta_end"]
    if config["beta_schedule"] == "scaled_linear":
        betas = np.linspace(lo**0.5, hi**0.5, n, dtype=np.float64) ** 2
    else:
        assert config["beta_schedule"] == "linear"
        betas = np.linspace(lo, hi, n, dtype=np.float64)
    return np.cumprod(1.0 - betas)


@pytest.fixture(scope="module")
def saved_with_every_scheduler(tmp_path_factory) -> dict[str, Path]:
    """One tiny pipeline saved once per sampler sid offers, as a model folder or mirror would ship it."""
    from sid.testing import find_bpe_vocab, save_tiny, tiny_sd_pipeline

    if find_bpe_vocab() is None:
        pytest.skip("CLIP BPE vocabulary missing: pip install --no-deps open-clip-torch")
    pipe = tiny_sd_pipeline(text_width=32)
    root = tmp_path_factory.mktemp("schedulers")
    folders = {}
    for name in SCHEDULERS:
        set_scheduler(pipe, name)
        folders[name] = save_tiny(pipe, root / name)
    return folders


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_training_noise_is_ddpm_for_every_sampler(saved_with_every_scheduler, name: str) -> None:
    from sid.pipelines import load_pipeline

    pipe, _ = load_pipeline(str(saved_with_every_scheduler[name]), device="cpu", dtype="fp32")
    assert type(pipe.scheduler).__name__ == SCHEDULERS[name][0]  # the folder really ships that sampler
    scheduler = training_scheduler(pipe.scheduler.config)
    ab = torch.from_numpy(_alpha_bar_from_betas(dict(pipe.scheduler.config)))
    torch.manual_seed(0)
    z0, eps = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    t = torch.tensor([0, 300, 700, 999])
    z_t = scheduler.add_noise(z0, eps, t)
    a, s = ab[t].sqrt().view(-1, 1, 1, 1), (1 - ab[t]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(z_t.double(), a * z0.double() + s * eps.double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), ab, atol=1e-6, rtol=1e-5)
    assert scheduler.config.prediction_type == pipe.scheduler.config.prediction_type
    record = describe_schedule(scheduler, pipe.scheduler)
    assert record["class"] == "DDPMScheduler" and record["from"] == SCHEDULERS[name][0]
    assert record["beta_schedule"] == "scaled_linear" and record["num_train_timesteps"] == 1000


def test_the_sampler_itself_would_scale_wrongly() -> None:
    """Why this matters: Euler's add_noise at t=700 keeps x0 at coefficient 1, DDPM's is sqrt(ab) ~ 0.29."""
    from diffusers import EulerDiscreteScheduler

    from sid.testing import tiny_scheduler

    euler = EulerDiscreteScheduler.from_config(tiny_scheduler().config)
    euler.set_timesteps(1000)
    z0, zero = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    t = torch.tensor([700])
    assert euler.add_noise(z0, zero, t).item() == pytest.approx(1.0)
    ddpm = training_scheduler(euler.config).add_noise(z0, zero, t).item()
    assert ddpm == pytest.approx(float(np.sqrt(_alpha_bar_from_betas(dict(euler.config))[700])), rel=1e-5)
    assert ddpm < 0.3


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_zero_terminal_snr_keeps_the_loss_and_gradient_finite(prediction_type: str) -> None:
    from sid.testing import tiny_scheduler

    config = {k: v for k, v in tiny_scheduler(prediction_type).config.items() if not k.startswith("_")}
    config["rescale_betas_zero_snr"] = True  # as a model folder's scheduler_config.json would set it
    scheduler = training_scheduler(config)
    ab = scheduler.alphas_cumprod
    assert ab[-1].item() == 0.0  # the last step is pure noise: sqrt(ab) = 0 would divide x0
    torch.manual_seed(0)
    z0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([999, 999])
    z_t = scheduler.add_noise(z0, eps, t)
    out = torch.randn(2, 4, 8, 8, requires_grad=True)
    mask = torch.ones(2, 1, 8, 8)
    for threshold in (600, 1000):  # noise branch, and the x0 branch forced at t = T-1
        loss = two_phase_loss(out, eps, z_t, z0, t, ab, mask, prediction_type, threshold=threshold)
        (grad,) = torch.autograd.grad(loss, out)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), (threshold, loss)
    loss = noise_loss(out, eps, z_t, z0, t, ab, prediction_type)
    assert torch.isfinite(loss)
