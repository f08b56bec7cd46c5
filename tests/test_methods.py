"""The methods' math: equalized-lr layers, both mappers, the prediction split, both losses and the recipes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sid.errors import BadInput
from sid.methods import (
    RECIPES,
    CelebBasisMapper,
    EqualLinear,
    StableIdentityMapper,
    build_mapper,
    noise_loss,
    split_prediction,
    split_widths,
    two_phase_loss,
)
from sid.priors import CelebPrior, celeb_basis


def _prior(n: int = 50, d: int = 64, seed: int = 0) -> CelebPrior:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, 2, d, generator=g) * 0.02 + torch.linspace(-0.01, 0.01, d)
    return CelebPrior("synthetic", [f"name{i} surname{i}" for i in range(n)], [emb[:, 0], emb[:, 1]])


# -- EqualLinear ------------------------------------------------------------------------------------
def test_equal_linear_stores_n002_and_runs_at_lr_mul_times_that():
    torch.manual_seed(0)
    layer = EqualLinear(512, 1024)  # lr_mul 0.1, stored N(0, 0.02) as StableIdentity's init
    assert abs(layer.weight.std().item() - 0.02) < 3e-4
    assert abs(layer.effective_weight.std().item() - 0.002) < 3e-5
    assert torch.all(layer.bias == 0)
    x = torch.randn(3, 512)
    torch.testing.assert_close(layer(x), x @ (0.1 * layer.weight).T + 0.1 * layer.bias)


def _grad_wrt_effective(layer: EqualLinear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w_eff = layer.effective_weight.detach().requires_grad_(True)
    F.mse_loss(F.linear(x, w_eff, layer.effective_bias.detach()), y).backward()
    return w_eff.grad


def test_equal_linear_sgd_step_moves_the_effective_weight_by_lr_times_lr_mul_squared():
    torch.manual_seed(1)
    layer = EqualLinear(8, 4, lr_mul=0.1)
    x, y = torch.randn(16, 8), torch.randn(16, 4)
    g_eff = _grad_wrt_effective(layer, x, y)
    before = layer.effective_weight.detach().clone()
    lr = 0.5
    opt = torch.optim.SGD(layer.parameters(), lr=lr)
    F.mse_loss(layer(x), y).backward()
    opt.step()
    torch.testing.assert_close(layer.effective_weight.detach() - before, -lr * 0.1**2 * g_eff)


def test_equal_linear_adam_step_moves_the_effective_weight_by_lr_times_lr_mul():
    torch.manual_seed(2)
    layer = EqualLinear(8, 4, lr_mul=0.1)
    x, y = torch.randn(16, 8), torch.randn(16, 4)
    g_eff = _grad_wrt_effective(layer, x, y)
    before = layer.effective_weight.detach().clone()
    lr = 5e-5
    opt = torch.optim.Adam(layer.parameters(), lr=lr, eps=1e-12)
    F.mse_loss(layer(x), y).backward()
    opt.step()  # Adam's first step is lr * sign(grad) per entry, whatever the gradient's scale
    moved = layer.effective_weight.detach() - before
    torch.testing.assert_close(moved, -lr * 0.1 * g_eff.sign(), rtol=1e-4, atol=1e-12)


# -- StableIdentity mapper ----------------------------------------------------------------------------
def test_stableidentity_mapper_shape_and_buffers():
    prior = _prior()
    mapper = StableIdentityMapper(512, 64, prior.mean, prior.std)
    out = mapper(torch.randn(3, 512))
    assert out.shape == (3, 2, 64) and torch.isfinite(out).all()
    assert {n for n, _ in mapper.named_buffers()} == {"mean", "std"}
    assert all(p.requires_grad for p in mapper.parameters())
    with pytest.raises(ValueError):
        StableIdentityMapper(512, 32, prior.mean, prior.std)


def test_stableidentity_landing_matches_celeb_stats_over_a_batch():
    """AdaIN after a per-sample LayerNorm: what holds at init over 256 random faces.

    Exact: the standardised vectors (v - mean) / std have mean square var / (var + eps) over samples
    and all K*d dims, var being each sample's variance entering the final LayerNorm. Approximate (a
    per-sample normalisation cannot promise more): per-dimension batch means near 0 (sampling noise
    alone is 1/sqrt(256) ~ 0.06) and per-dimension batch stds near 1, per slot too.
    """
    torch.manual_seed(0)
    prior = _prior(d=64)
    mapper = StableIdentityMapper(512, 64, prior.mean, prior.std)
    faces = torch.randn(256, 512)  # O(1) entries, like StableIdentity's ViT CLS features
    with torch.no_grad():
        z = (mapper(faces) - prior.mean) / prior.std  # (B, 2, d)
        pre = mapper.net(faces)  # (B, 2*d), what enters the final LayerNorm
    var = pre.var(dim=-1, unbiased=False)
    expected = (var / (var + mapper.norms[0].eps)).mean()
    torch.testing.assert_close(z.square().mean(), expected, atol=1e-4, rtol=0)
    assert expected > 0.95
    per_slot = z.square().mean(dim=(0, 2))
    assert torch.all((per_slot - 1).abs() < 0.1), per_slot
    batch_mean, batch_std = z.mean(dim=0), z.std(dim=0)  # (2, d) each
    assert batch_mean.abs().mean() < 0.1 and batch_mean.abs().max() < 0.35
    assert (batch_std.mean() - 1).abs() < 0.05
    assert batch_std.min() > 0.6 and batch_std.max() < 1.4


# -- Celeb Basis mapper -------------------------------------------------------------------------------
def test_celebbasis_mapper_is_the_mean_plus_unit_coefficients_over_the_directions():
    torch.manual_seed(0)
    prior = _prior(n=50, d=64)
    basis = prior.basis  # (2, 65, 64): 64 directions, 49 of them principal, as the official full SVD
    mapper = CelebBasisMapper(512, basis)
    faces = torch.randn(8, 512)
    out = mapper(faces)
    assert out.shape == (8, 2, 64) and torch.isfinite(out).all()
    c = mapper.coefficients(faces)
    assert c.shape == (8, 2, 512)
    torch.testing.assert_close(c.norm(dim=-1), torch.ones(8, 2))
    directions = basis[:, 1:]  # (2, 64, d), orthonormal rows
    torch.testing.assert_close(out - basis[:, 0], torch.einsum("bkp,kpd->bkd", c[..., :64], directions))


def test_celebbasis_mapper_starts_like_celeb_basis():
    mapper = CelebBasisMapper(512, celeb_basis([torch.randn(20, 16), torch.randn(20, 16)]))
    assert abs(mapper.linear.weight.std().item() - 1.0) < 0.01 and torch.all(mapper.linear.bias == 0)
    with pytest.raises(ValueError):
        CelebBasisMapper(512, celeb_basis([torch.randn(20, 16), torch.randn(20, 16)]), hidden=8)


def test_celebbasis_average_is_the_papers_momentum_update_per_sample():
    torch.manual_seed(3)
    mapper = CelebBasisMapper(
        16, celeb_basis([torch.randn(20, 8), torch.randn(30, 8)]), hidden=32, identities=2
    )
    faces = [torch.randn(2, 16) for _ in range(3)]
    expected = None
    for face in faces:  # identity 1 only; the average follows each sample of each batch in order
        mapper.update_average(1, face)
        for c in mapper.coefficients(face):
            expected = c.clone() if expected is None else 0.99 * expected + 0.01 * c
    torch.testing.assert_close(mapper.average[1], expected)
    assert mapper.updates.tolist() == [0, 6] and torch.all(mapper.average[0] == 0)
    torch.testing.assert_close(mapper.averaged_vectors(1), mapper.vectors(expected[None])[0])
    assert "average" in mapper.state_dict()  # checkpoints carry it, so a resumed run averages on


def test_build_mapper_by_method():
    prior = _prior()
    assert isinstance(build_mapper("stableidentity", 512, [prior]), StableIdentityMapper)
    assert isinstance(build_mapper("celebbasis", 512, [prior]), CelebBasisMapper)
    with pytest.raises(BadInput, match="unknown method"):
        build_mapper("dreambooth", 512, [prior])


@pytest.mark.parametrize("method", ["stableidentity", "celebbasis"])
def test_two_encoder_mapper_lands_each_part_on_its_own_encoders_prior(method):
    """SDXL-like (16, 24): one output (B, K, 40), each encoder's part in its own prior's terms."""
    torch.manual_seed(0)
    priors = [_prior(n=50, d=16, seed=1), _prior(n=40, d=24, seed=2)]
    mapper = build_mapper(method, 32, priors)
    faces = torch.randn(64, 32)
    with torch.no_grad():
        out = mapper(faces)
    assert out.shape == (64, 2, 40)
    parts = split_widths(out, (16, 24))
    assert [p.shape[-1] for p in parts] == [16, 24]
    for part, prior in zip(parts, priors, strict=True):
        if method == "stableidentity":  # AdaIN with this encoder's statistics: standardised ~ N(0, 1)
            z = (part - prior.mean) / prior.std
            assert (z.square().mean() - 1).abs() < 0.1
        else:  # in this encoder's celebrity span, nowhere else
            basis = prior.basis
            offset = part - basis[:, 0]
            coords = torch.einsum("bkd,kpd->bkp", offset, basis[:, 1:])
            back = torch.einsum("bkp,kpd->bkd", coords, basis[:, 1:])
            assert (offset - back).abs().max() < 1e-5 and offset.abs().max() > 1e-3
    if method == "celebbasis":  # unit coefficients per (encoder, slot) row
        torch.testing.assert_close(mapper.coefficients(faces).norm(dim=-1), torch.ones(64, 4))


def test_stableidentity_two_encoder_parts_are_normalised_separately():
    """Scaling one encoder's pre-norm part leaves the other's output alone: a LayerNorm per part."""
    torch.manual_seed(0)
    mapper = build_mapper("stableidentity", 32, [_prior(d=16, seed=1), _prior(d=24, seed=2)])
    faces = torch.randn(4, 32)
    with torch.no_grad():
        before = mapper(faces)
        mapper.net[-1].weight[: 2 * 16] *= 5.0  # the first encoder's rows of the last linear
        after = mapper(faces)
    torch.testing.assert_close(after[..., 16:], before[..., 16:])
    assert len(mapper.norms) == 2 and mapper.mean.shape == (2, 40)


# -- prediction split against the scheduler ---------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_matches_the_schedulers_own_step(prediction_type):
    from sid.testing import tiny_scheduler

    scheduler = tiny_scheduler(prediction_type)
    scheduler.set_timesteps(50)
    torch.manual_seed(0)
    for t in scheduler.timesteps[[0, 10, 25, 49]]:
        z_t, out = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
        expected = scheduler.step(out, t, z_t).pred_original_sample
        eps, x0 = split_prediction(out, z_t, scheduler.alphas_cumprod[t].reshape(1), prediction_type)
        torch.testing.assert_close(x0, expected, atol=1e-5, rtol=1e-5)
        ab = scheduler.alphas_cumprod[t]
        torch.testing.assert_close(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, z_t, atol=1e-5, rtol=1e-5)


def test_split_prediction_inverts_the_forward_process_for_every_type():
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    ab = torch.tensor([0.9, 0.5, 0.05])
    a, s = ab.sqrt().view(3, 1, 1, 1), (1 - ab).sqrt().view(3, 1, 1, 1)
    z_t = a * x0 + s * eps
    outputs = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}
    for prediction_type, out in outputs.items():
        eps_hat, x0_hat = split_prediction(out, z_t, ab, prediction_type)
        torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
    with pytest.raises(BadInput, match="prediction_type"):
        split_prediction(eps, z_t, ab, "flow")


# -- two-phase loss -----------------------------------------------------------------------------------
AB = torch.full((1000,), 0.64)  # sqrt(ab) = 0.8, sqrt(1 - ab) = 0.6 at every t: easy hand arithmetic


def _t(*values: int) -> torch.Tensor:
    return torch.tensor(values)


def _img(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).view(1, 1, 2, 2)


# t > 600: M * (out - eps) with eps = 0 is (1, 0, 3, 4): 26 / 4
NOISE_CASE = dict(
    model_output=_img([[1, 2], [3, 4]]),
    noise=torch.zeros(1, 1, 2, 2),
    z_t=torch.zeros(1, 1, 2, 2),
    z0=torch.zeros(1, 1, 2, 2),
    mask=_img([[1, 0], [1, 1]]),
)
# t <= 600: x0_hat = (z_t - 0.6 out) / 0.8 = [[1, 2], [-0.75, 0.75]]; minus z0: [[0, 1], [-0.75, 0.75]]
X0_CASE = dict(
    model_output=_img([[0, 0], [1, -1]]),
    noise=torch.zeros(1, 1, 2, 2),
    z_t=_img([[0.8, 1.6], [0, 0]]),
    z0=_img([[1, 1], [0, 0]]),
    mask=torch.ones(1, 1, 2, 2),
)


def _loss(case: dict, t: torch.Tensor, **kw) -> torch.Tensor:
    c = case
    return two_phase_loss(c["model_output"], c["noise"], c["z_t"], c["z0"], t, AB, c["mask"], **kw)


def test_noise_branch_by_hand():
    assert _loss(NOISE_CASE, _t(700), vae_scaling_factor=0.5).item() == pytest.approx(26 / 4)
    hair = _img([[0, 1], [0, 0]])  # + 0.1 * 2^2 / 4
    assert _loss(NOISE_CASE, _t(700), hair_mask=hair).item() == pytest.approx(26 / 4 + 0.1)


def test_x0_branch_by_hand_in_unscaled_latents():
    by_hand = (0 + 1 + 0.5625 + 0.5625) / 4  # 0.53125 in the UNet's latent space
    assert _loss(X0_CASE, _t(600), vae_scaling_factor=1.0).item() == pytest.approx(by_hand)
    assert _loss(X0_CASE, _t(100), vae_scaling_factor=0.5).item() == pytest.approx(by_hand / 0.25)
    assert _loss(X0_CASE, _t(100)).item() == pytest.approx(by_hand / 0.18215**2)  # SD's factor by default
    hair = _img([[0, 1], [0, 0]])  # hair term in this branch too: + 0.1 * 1^2 / 4
    with_hair = _loss(X0_CASE, _t(100), vae_scaling_factor=1.0, hair_mask=hair)
    assert with_hair.item() == pytest.approx(by_hand + 0.025)


def test_mixed_batch_averages_the_per_sample_losses():
    batch = {k: torch.cat([NOISE_CASE[k], X0_CASE[k]]) for k in NOISE_CASE}
    loss = _loss(batch, _t(900, 200), vae_scaling_factor=0.5)
    assert loss.item() == pytest.approx((26 / 4 + 0.53125 / 0.25) / 2)
    swapped = _loss(batch, _t(200, 900), vae_scaling_factor=0.5)  # each sample now in the other branch
    assert swapped.item() != pytest.approx(loss.item())


def test_pixels_outside_the_mask_do_not_count_but_stay_in_the_mean():
    torch.manual_seed(0)
    out, noise = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    mask = _img([[1, 0], [0, 0]])
    z = torch.zeros(1, 4, 2, 2)
    base = two_phase_loss(out, noise, z, z, _t(800), AB, mask)
    changed = out.clone()
    changed[..., 1, :] += 100.0  # only masked-out pixels change
    assert two_phase_loss(changed, noise, z, z, _t(800), AB, mask).item() == pytest.approx(base.item())
    by_hand = (out - noise)[..., 0, 0].square().sum() / 16  # 4 channels x 4 pixels in the mean
    assert base.item() == pytest.approx(by_hand.item())


def test_x0_branch_equals_stableidentity_formula_on_random_latents():
    torch.manual_seed(0)
    scheduler_ab = torch.linspace(0.999, 0.005, 1000)
    out, noise, z0 = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    mask = (torch.rand(1, 1, 8, 8) > 0.5).float()
    t = _t(300)
    a, s = scheduler_ab[t].sqrt(), (1 - scheduler_ab[t]).sqrt()
    z_t = a * z0 + s * noise
    pred_z0 = (z_t - s * out) / a
    sf = 0.18215
    reference = F.mse_loss(mask * pred_z0 / sf, mask * z0 / sf)
    torch.testing.assert_close(two_phase_loss(out, noise, z_t, z0, t, scheduler_ab, mask), reference)


def test_v_prediction_noise_branch_targets_v():
    a, s = 0.8, 0.6
    noise, z0 = _img([[1, 0], [0, 0]]), _img([[0, 0], [0, 1]])  # v = a * eps - s * z0 = [[0.8, 0], [0, -0.6]]
    out = torch.zeros(1, 1, 2, 2)
    z_t, mask = a * z0 + s * noise, torch.ones(1, 1, 2, 2)
    loss = two_phase_loss(out, noise, z_t, z0, _t(999), AB, mask, "v_prediction")
    assert loss.item() == pytest.approx((0.8**2 + 0.6**2) / 4)  # not (eps_hat - eps)^2: ab times that


# -- noise loss ---------------------------------------------------------------------------------------
def test_noise_loss_uses_each_models_own_target():
    torch.manual_seed(0)
    out, noise, z0 = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    t = _t(10, 990)
    ab = torch.linspace(0.999, 0.005, 1000)
    a, s = ab[t].sqrt().view(2, 1, 1, 1), (1 - ab[t]).sqrt().view(2, 1, 1, 1)
    z_t = a * z0 + s * noise
    torch.testing.assert_close(noise_loss(out, noise, z_t, z0, t, ab, "epsilon"), F.mse_loss(out, noise))
    v_loss = noise_loss(out, noise, z_t, z0, t, ab, "v_prediction")
    torch.testing.assert_close(v_loss, F.mse_loss(out, a * noise - s * z0))
    eps_hat, _ = split_prediction(out, z_t, ab[t], "v_prediction")  # the same loss seen in eps space
    torch.testing.assert_close(v_loss, ((eps_hat - noise).square() / a.square()).mean())
    torch.testing.assert_close(noise_loss(out, noise, z_t, z0, t, ab, "sample"), F.mse_loss(out, z0))


# -- recipes ------------------------------------------------------------------------------------------
def test_recipes():
    si, cb = RECIPES["stableidentity"], RECIPES["celebbasis"]
    assert set(RECIPES) == {"stableidentity", "celebbasis"}
    assert (si.steps, si.batch_size, si.lr, si.betas, si.weight_decay, si.grad_clip) == (
        451,
        1,
        5e-5,
        (0.9, 0.999),
        1e-2,
        1.0,
    )
    assert (si.model, si.ema) == ("sd21", None)
    assert (cb.steps, cb.batch_size, cb.lr, cb.grad_clip, cb.model, cb.ema) == (
        400,
        2,
        1e-2,
        None,
        "sd15",
        0.99,
    )
    for recipe in (si, cb):
        assert recipe.method in RECIPES and len(recipe.templates) == 81  # the papers' list, repeats kept
        assert all(t.count("{}") == 1 for t in recipe.templates)
    assert si.templates[0] == "a photo of a {}" and si.templates[27] == "an illustration of a {}"
    assert si.templates.count("a rendering of a {}") == 3 and si.templates[-1] == "a depiction of a small {}"
    assert cb.templates[0] == "a photo of a face of {} person"
    with pytest.raises(AttributeError):
        si.steps = 1  # frozen


@pytest.mark.parametrize("method", ["stableidentity", "celebbasis"])
def test_mappers_run_in_fp32_inside_a_bf16_autocast(method: str) -> None:
    """The training loop calls the mapper under the UNet's autocast; the mapper stays fp32 (as the
    papers' fp32 runs): its output and gradient equal the ones outside autocast, bit for bit."""
    from sid.methods import build_mapper

    torch.manual_seed(0)
    mapper = build_mapper(method, 16, [_prior(n=80, d=64)])
    faces = torch.randn(3, 16)

    def run(autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
        mapper.zero_grad()
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            out = mapper(faces)
        out.square().sum().backward()
        grad = next(p for p in mapper.parameters() if p.grad is not None).grad.clone()
        return out.detach(), grad

    (plain, plain_grad), (cast, cast_grad) = run(False), run(True)
    assert cast.dtype == torch.float32
    torch.testing.assert_close(cast, plain, atol=0, rtol=0)
    torch.testing.assert_close(cast_grad, plain_grad, atol=0, rtol=0)
