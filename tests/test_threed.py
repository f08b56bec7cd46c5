"""``sid 3d``: cameras, volume rendering, the SDS gradient, identity conditioning, export and resume.

Everything runs on the CPU with the tiny random-weight pipeline; the end-to-end runs use few
samples per ray and few turntable frames so the whole file stays fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sid.cli import app
from sid.errors import BadInput
from sid.store import IdentityStore
from sid.threed.cameras import OrbitRanges, camera_rays, make_cameras, sample_cameras, view_label
from sid.threed.field import FieldConfig, GridField
from sid.threed.render import ray_box, render
from sid.threed.sds import (
    ddim_invert,
    encode_views,
    gradient_loss,
    ism_gradient,
    sds_gradient,
    view_prompts,
)
from tests.test_store import make_identity

runner = CliRunner()
FAST = ("--samples", "8", "--frames", "4", "--mesh-resolution", "32")  # light enough for a CPU


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def alice() -> None:
    IdentityStore().save(make_identity("alice", width=32))


# -- cameras -----------------------------------------------------------------------------------------
def test_cameras_look_at_the_origin_within_ranges() -> None:
    ranges = OrbitRanges(elevation=(-10.0, 45.0), radius=(2.0, 3.0), fov=(30.0, 45.0))
    cams = sample_cameras(256, torch.Generator().manual_seed(1), ranges)
    eye = cams.eye
    radius = eye.norm(dim=-1)
    forward = -cams.c2w[:, :3, 2]  # cameras look down their -z axis
    assert torch.allclose(forward, -eye / radius[:, None], atol=1e-5)
    assert torch.allclose(radius, cams.radius, atol=1e-5)
    assert radius.min() >= 2.0 - 1e-5 and radius.max() <= 3.0 + 1e-5
    elevation = torch.rad2deg(torch.asin(eye[:, 1] / radius))
    assert elevation.min() >= -10.0 - 1e-3 and elevation.max() <= 45.0 + 1e-3
    assert elevation.min() < 0 < elevation.max()  # the range is actually used
    assert cams.fov.min() >= 30.0 and cams.fov.max() <= 45.0
    # rotation part is orthonormal, camera y points up-ish (no roll)
    rot = cams.c2w[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand_as(rot), atol=1e-5)
    assert (cams.c2w[:, 1, 1] > 0).all()
    # labels follow the azimuth seen from the eye position (face looks along +z)
    azimuth = torch.rad2deg(torch.atan2(eye[:, 0], eye[:, 2]))
    expected = ["front" if abs(a) < 45 else "back" if abs(a) > 135 else "side" for a in azimuth.tolist()]
    assert cams.labels == expected
    assert set(cams.labels) == {"front", "side", "back"}


def test_view_labels_and_rays() -> None:
    assert [view_label(a) for a in (0, 30, -44, 60, -90, 120, 170, -180, 200, 390)] == [
        "front",
        "front",
        "front",
        "side",
        "side",
        "side",
        "back",
        "back",
        "back",
        "front",
    ]
    cams = make_cameras(torch.tensor([30.0]), torch.tensor([20.0]), torch.tensor([2.5]), torch.tensor([40.0]))
    origins, dirs = camera_rays(cams, 9)
    assert origins.shape == dirs.shape == (1, 81, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(1, 81), atol=1e-5)
    centre = dirs[0, 40]  # the middle pixel of an odd-sized image looks straight at the origin
    assert torch.allclose(centre, -cams.eye[0] / 2.5, atol=1e-5)
    top_left = dirs[0, 0]
    assert (top_left @ cams.c2w[0, :3, 1]) > 0 and (top_left @ cams.c2w[0, :3, 0]) < 0  # up and left


# -- rendering ---------------------------------------------------------------------------------------
class Sphere(torch.nn.Module):
    """Constant density inside a ball, zero outside, red everywhere."""

    def __init__(self, sigma: float, radius: float) -> None:
        super().__init__()
        self.sigma, self.radius = sigma, radius

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = (points.norm(dim=-1) < self.radius).float()
        return self.sigma * inside, torch.tensor([1.0, 0.0, 0.0]).expand(points.shape[0], 3)


def test_renderer_matches_beer_lambert_through_a_sphere() -> None:
    sigma, radius, size = 2.0, 0.5, 33
    cams = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([3.0]), torch.tensor([40.0]))
    out = render(Sphere(sigma, radius), cams, size, 512, torch.tensor([0.0, 0.0, 1.0]), bound=1.0)
    opacity = out.opacity[0, 0]
    centre = opacity[size // 2, size // 2]
    assert abs(float(centre) - (1 - math.exp(-sigma * 2 * radius))) < 0.01
    assert float(opacity[0, 0]) < 1e-6  # corner rays miss the ball
    # every pixel: 1 - exp(-sigma * chord), chord from the ray's distance to the centre
    origins, dirs = camera_rays(cams, size)
    dist = torch.linalg.cross(origins[0], dirs[0]).norm(dim=-1)
    chord = 2 * (radius**2 - dist**2).clamp(min=0).sqrt()
    expected = (1 - torch.exp(-sigma * chord)).view(size, size)
    assert (opacity - expected).abs().max() < 0.03
    # colour: red where opaque, blue background elsewhere
    image = out.image[0]
    assert torch.allclose(image[0], opacity, atol=1e-5) and torch.allclose(image[2], 1 - opacity, atol=1e-5)
    # depth: the mean hit distance, an exponential truncated to the chord, from 2.5 (entry) on
    rate, chord = sigma, 2 * radius
    mean_hit = 2.5 + 1 / rate - chord * math.exp(-rate * chord) / (1 - math.exp(-rate * chord))
    assert abs(float(out.depth[0, 0, size // 2, size // 2]) / float(centre) - mean_hit) < 0.01


def test_ray_box_and_head_prior_gives_a_visible_head() -> None:
    near, far = ray_box(
        torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]] * 2), 1.0
    )
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))
    assert far[1] == near[1]  # a ray that misses the cube has no length inside it
    field = GridField(FieldConfig(levels=(8, 16)), torch.Generator().manual_seed(0))
    cams = make_cameras(
        torch.tensor([0.0, 90.0, 180.0]), torch.zeros(3), torch.full((3,), 2.5), torch.full((3,), 40.0)
    )
    with torch.no_grad():
        out = render(field, cams, 17, 64, torch.ones(3))
    assert (out.opacity[:, 0, 8, 8] > 0.99).all()  # an untrained field is already a head from every side
    assert (out.opacity[:, 0, 0, 0] < 0.01).all()  # and not fog
    # shaded renders are finite and differentiable
    out = render(
        field,
        cams,
        9,
        16,
        torch.ones(3),
        shading="textureless",
        generator=torch.Generator().manual_seed(0),
        light=torch.tensor([[0.0, 0.0, 1.0]] * 3),
    )
    (out.image.mean() + out.orientation).backward()
    assert torch.isfinite(out.image).all() and field.grids[-1].grad.abs().sum() > 0
    with pytest.raises(BadInput, match="unknown shading 'phong'.*albedo, lambertian, textureless"):
        render(field, cams, 9, 16, torch.ones(3), shading="phong")  # once treated as lambertian


# -- score distillation ------------------------------------------------------------------------------
def stub_predictor(x_t: torch.Tensor, t: torch.Tensor, guidance: float | None) -> torch.Tensor:
    """A fake UNet: unconditional 0.3 x_t, conditional 0.5 x_t + t/1000."""
    uncond = 0.3 * x_t
    if guidance is None:
        return uncond
    cond = 0.5 * x_t + t.view(-1, 1, 1, 1) / 1000
    return uncond + guidance * (cond - uncond)


def test_sds_surrogate_gradient_is_exactly_w_times_eps_difference() -> None:
    gen = torch.Generator().manual_seed(0)
    alphas = torch.linspace(0.9999, 0.01, 1000)
    latents = torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([100, 900])
    grad = sds_gradient(latents, noise, t, alphas, stub_predictor, 7.5)
    # by hand
    a = alphas[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * latents.detach() + (1 - a).sqrt() * noise
    eps_hat = 0.3 * x_t + 7.5 * (0.5 * x_t + t.view(-1, 1, 1, 1) / 1000 - 0.3 * x_t)
    assert torch.allclose(grad, (1 - a) * (eps_hat - noise), atol=1e-6)
    # the surrogate loss injects exactly that gradient, and its value is 0.5 |g|^2
    loss = gradient_loss(latents, grad)
    loss.backward()
    assert torch.equal(latents.grad, grad)
    assert torch.allclose(loss.detach(), 0.5 * (grad**2).sum())
    # ... also through a differentiable producer of the latents (what the renderer + VAE are)
    source = torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)
    produced = 3.0 * source
    gradient_loss(produced, grad).backward()
    assert torch.equal(source.grad, 3.0 * grad)


def test_ism_inverts_deterministically_and_injects_its_gradient() -> None:
    alphas = torch.linspace(0.9999, 0.01, 1000)
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    # one inversion step, by hand
    x, _ = ddim_invert(x0, torch.tensor([0]), torch.tensor([150]), alphas, stub_predictor, 200)
    a, b = alphas[0], alphas[150]
    eps = 0.3 * x0
    assert torch.allclose(
        x, b.sqrt() * (x0 - (1 - a).sqrt() * eps) / a.sqrt() + (1 - b).sqrt() * eps, atol=1e-6
    )
    latents = x0.clone().requires_grad_(True)
    grad = ism_gradient(latents, torch.tensor([700]), alphas, stub_predictor, 7.5)
    assert grad.shape == x0.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.equal(
        grad, ism_gradient(latents, torch.tensor([700]), alphas, stub_predictor, 7.5)
    )  # no noise
    gradient_loss(latents, grad).backward()
    assert torch.equal(latents.grad, grad)


def test_view_prompts_fight_the_janus_problem() -> None:
    table = view_prompts("<sid-alice> bust", "blurry")
    assert table["front"] == ("<sid-alice> bust, front view", "blurry")
    assert table["side"][0].endswith("side view") and "two faces" in table["side"][1]
    assert "multiple faces" in table["back"][1] and table["back"][1].startswith("blurry")


def test_guidance_embedding_carries_the_identity_tokens(tiny_model: Path, alice: None) -> None:
    from diffusers import DiffusionPipeline

    from sid.prompts import identity_token
    from sid.render import prepare

    pipe = DiffusionPipeline.from_pretrained(str(tiny_model))
    parsed, identities = prepare("alice bust", IdentityStore(), pipe)
    assert parsed.text == "<sid-alice> bust" and [i.name for i in identities] == ["alice"]
    token = identity_token("alice")
    ids = pipe.tokenizer.convert_tokens_to_ids([token, f"{token}_1"])
    rows = pipe.text_encoder.get_input_embeddings().weight[ids].detach().numpy()
    np.testing.assert_allclose(rows, IdentityStore().get("alice").vectors["te32"], rtol=0, atol=1e-6)

    with_identity = encode_views(pipe, parsed.text)
    without = encode_views(pipe, "alice bust")
    for view in ("front", "side", "back"):
        assert with_identity[view].shape == (2, 77, 32)
        assert torch.equal(with_identity[view][0], without[view][0])  # same negatives
        assert not torch.allclose(
            with_identity[view][1], without[view][1]
        )  # the identity changes the condition
    # the identity's vectors really are what the encoder reads: perturbing them changes the embedding
    weight = pipe.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids[0]] += 1.0
    assert not torch.allclose(encode_views(pipe, parsed.text)["front"][1], with_identity["front"][1])


# -- end to end --------------------------------------------------------------------------------------
def test_sid_3d_writes_a_mesh_and_a_turntable(tiny_model: Path, alice: None, tmp_path: Path) -> None:
    import imageio.v3 as iio
    import trimesh

    mesh_path = tmp_path / "bust.glb"
    result = invoke(
        "3d",
        "alice bust",
        "--model",
        str(tiny_model),
        "--iters",
        "20",
        "--resolution",
        "32",
        "-o",
        str(mesh_path),
        *FAST,
        "--json",
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (
        info["mesh"] == str(mesh_path)
        and info["identities"] == ["alice"]
        and info["prompt"] == "<sid-alice> bust"
    )
    assert info["iterations"] == 20 and info["start_iteration"] == 0 and math.isfinite(info["final_loss"])
    mesh = trimesh.load(mesh_path, force="mesh")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    assert np.isfinite(mesh.vertices).all() and np.abs(mesh.vertices).max() <= 1.0 + 1e-4
    assert mesh.visual.kind == "vertex"  # coloured by the field
    video = Path(info["turntable"])
    assert video == mesh_path.with_suffix(".mp4")
    frames = iio.imread(video)
    assert frames.shape[0] == 4 and frames.shape[1:] == (128, 128, 3)
    assert not (tmp_path / "bust.partial.safetensors").exists()


def test_other_formats_and_turntable_path(tiny_model: Path, tmp_path: Path) -> None:
    import trimesh

    video = tmp_path / "spin.mp4"
    result = invoke(
        "3d",
        "a marble bust",
        "--model",
        str(tiny_model),
        "--iters",
        "2",
        "--resolution",
        "16",
        "-o",
        str(tmp_path / "bust"),
        "--format",
        "ply",
        "--turntable",
        str(video),
        *FAST,
    )
    assert result.exit_code == 0, result.output
    assert "names no stored identity" in result.output
    assert len(trimesh.load(tmp_path / "bust.ply", force="mesh").vertices) > 0 and video.is_file()
    result = invoke(
        "3d",
        "a marble bust",
        "--model",
        str(tiny_model),
        "--iters",
        "1",
        "--resolution",
        "16",
        "-o",
        str(tmp_path / "bust.obj"),
        "--no-turntable",
        "--method",
        "ism",
        *FAST,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert len(trimesh.load(tmp_path / "bust.obj", force="mesh").vertices) > 0
    assert not (tmp_path / "bust.mp4").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--iters", "0"), "--iters must be between 1 and 100000, not 0"),
        (("--resolution", "20"), "a multiple of 8 between 16 and 1024, not 20"),
        (("--resolution", "8"), "between 16 and 1024, not 8"),
        (("--format", "stl"), "unknown mesh format 'stl'"),
        (("-o", "nowhere/bust.glb"), "does not exist"),
        (("-o", "bust.glb", "--format", "obj"), "does not end in .obj"),
        (("--turntable", "spin.gif"), "not an .mp4"),
        (("--method", "vsd"), "unknown method"),
        (("--lr", "0"), "--lr must be between 1e-08 and 1"),
        (("--dtype", "fp8"), "unknown dtype 'fp8'"),
    ],
)
def test_bad_options_fail_before_loading(
    args: tuple[str, ...], message: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("3d", "alice bust", "--model", "no-such-owner/no-such-model", *args)
    assert result.exit_code == 1
    assert result.output.strip().startswith("error:") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_interrupted_run_resumes_from_its_checkpoint(
    tiny_model: Path, alice: None, tmp_path: Path, monkeypatch
) -> None:
    import trimesh

    import sid.threed.generate as generate

    common = (
        "3d",
        "alice bust",
        "--model",
        str(tiny_model),
        "--iters",
        "8",
        "--resolution",
        "16",
        "--checkpoint-every",
        "3",
        "--no-turntable",
        *FAST,
        "--json",
    )
    # reference: one uninterrupted run
    done = invoke(*common, "-o", str(tmp_path / "ref.glb"))
    assert done.exit_code == 0, done.output

    # the same run, stopped (as by Ctrl-C) in its last step: the checkpoint of step 6 is left
    real, calls = generate.gradient_loss, []

    def interrupting(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real(latents, grad)

    monkeypatch.setattr(generate, "gradient_loss", interrupting)
    stopped = invoke(*common, "-o", str(tmp_path / "bust.glb"))
    assert stopped.exit_code == 130 and "--resume" in stopped.output
    checkpoint = tmp_path / "bust.partial.safetensors"
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        assert f.metadata()["step"] == "6" and not any("pickle" in k for k in f.keys())
    assert not (tmp_path / "bust.glb").exists()
    monkeypatch.setattr(generate, "gradient_loss", real)

    # other settings refuse the checkpoint
    other = invoke(*common[:-1], "--seed", "5", "-o", str(tmp_path / "bust.glb"), "--resume")
    assert other.exit_code == 1 and "other settings" in other.output

    # --resume continues at step 6 and ends where the uninterrupted run ended
    resumed = invoke(*common, "-o", str(tmp_path / "bust.glb"), "--resume")
    assert resumed.exit_code == 0, resumed.output
    info = json.loads(resumed.stdout)
    assert info["start_iteration"] == 6 and info["iterations"] == 8
    assert not checkpoint.exists()
    a = trimesh.load(tmp_path / "ref.glb", force="mesh")
    b = trimesh.load(tmp_path / "bust.glb", force="mesh")
    assert a.vertices.shape == b.vertices.shape and np.allclose(a.vertices, b.vertices, atol=1e-5)
