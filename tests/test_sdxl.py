"""Learning on SDXL (two text encoders) on a tiny random SDXL pipeline, and what the identity does after."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sid.cli import app
from sid.store import IdentityStore
from tests.test_render import pixels, plain_diffusers, render

runner = CliRunner()
SLOTS = {"te32": 32, "te64": 64}  # the tiny SDXL's two text encoders, one slot each


@pytest.fixture
def sdxl_config(tiny_sdxl_model: Path, facepack: Path, tiny_vit: Path, tiny_parser: Path):
    """LearnConfig(**knobs) on the tiny SDXL model, CPU, the real face pack and the tiny ViT and parser."""
    from sid.train import LearnConfig

    def make(**knobs):
        models = {"vit_model": str(tiny_vit), "face_parser": str(tiny_parser)}
        return LearnConfig(
            model=str(tiny_sdxl_model), device="cpu", face_models=str(facepack), **models, **knobs
        )

    return make


@pytest.mark.parametrize("method,lr", [("stableidentity", 1e-3), ("celebbasis", 1e-2)])
def test_sdxl_loss_falls_in_the_deterministic_setting(face_photos: Path, sdxl_config, method, lr) -> None:
    from sid.train import learn

    cfg = sdxl_config(method=method, steps=30, lr=lr, batch_size=1, bank_size=1, overfit=True, seed=1)
    result = learn([face_photos / "obama_1.jpg"], [f"x_{method[:2]}"], cfg)
    losses = np.array(result.losses)
    assert len(losses) == 30 and losses[-10:].mean() < losses[:10].mean(), losses
    (identity,) = result.identities
    assert identity.widths == SLOTS and all(v.shape == (2, SLOTS[s]) for s, v in identity.vectors.items())
    assert set(identity.fingerprints) == set(SLOTS)


def test_sdxl_step_gives_gradients_to_the_mapper_only(sdxl_config) -> None:
    """Both encoders see the vectors, the UNet gets text_embeds and time_ids; nothing frozen gets a grad."""
    import torch

    from sid.methods import RECIPES, build_mapper
    from sid.priors import build_prior
    from sid.prompts import add_placeholder_tokens, inject_vectors
    from sid.train import Bank, load_frozen, tokenize_templates

    model = load_frozen(sdxl_config(), "cpu")
    assert model.time_ids.tolist() == [[64, 64, 0, 0, 64, 64]]  # the tiny SDXL's native size
    priors = [build_prior(tok, enc, "stableidentity") for tok, enc in model.encoders]
    mapper = build_mapper("stableidentity", 16, priors)
    placeholders = [(enc, add_placeholder_tokens(tok, enc, "<p>", 2)) for tok, enc in model.encoders]
    templates = RECIPES["stableidentity"].templates
    ids = torch.stack(
        [tokenize_templates(model.pipe, tok, templates, "<p>") for tok, _ in model.encoders], dim=1
    )
    assert ids.shape[1:] == (2, 77)
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, 4, 8, 8, generator=gen)
    bank = Bank(z0, torch.ones(1, 1, 8, 8), None, torch.zeros(1))
    sample = model.noised(bank.sample(1, 0), torch.randn(1, 16, generator=gen), ids, gen)
    with inject_vectors(placeholders) as slot:
        vectors = mapper(sample.face)  # (1, 2, 32 + 64)
        vectors.retain_grad()
        pred = model.predictor(slot)(vectors, sample.ids, sample.z_t, sample.t)
        loss = model.loss(pred, sample, "stableidentity")
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mapper.parameters())
    frozen = [model.unet, model.vae, *(enc for _, enc in model.encoders)]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())
    assert vectors.grad[..., :32].abs().sum() > 0 and vectors.grad[..., 32:].abs().sum() > 0  # both encoders


def test_sdxl_loss_uses_the_vae_configs_scaling_factor(sdxl_config) -> None:
    """The two-phase loss's x0 branch compares unscaled latents: on SDXL with 0.13025, not SD's 0.18215."""
    import dataclasses

    import torch

    from sid.methods import two_phase_loss
    from sid.testing import SDXL_VAE_SCALING_FACTOR
    from sid.train import Bank, load_frozen

    model = load_frozen(sdxl_config(), "cpu")
    assert model.vae.config.scaling_factor == SDXL_VAE_SCALING_FACTOR
    gen = torch.Generator().manual_seed(0)
    bank = Bank(torch.randn(1, 4, 8, 8, generator=gen), torch.ones(1, 1, 8, 8), None, torch.zeros(1))
    sample = model.noised(bank.sample(1, 0), torch.randn(1, 16), torch.zeros(1, 2, 77, dtype=torch.long), gen)
    sample = dataclasses.replace(sample, t=torch.tensor([100]))  # t <= 600: the x0 branch
    pred = torch.randn(1, 4, 8, 8, generator=gen)
    args = (pred, sample.noise, sample.z_t, sample.z0, sample.t, model.alphas_cumprod, sample.mask)
    loss = model.loss(pred, sample, "stableidentity")
    torch.testing.assert_close(loss, two_phase_loss(*args, vae_scaling_factor=SDXL_VAE_SCALING_FACTOR))
    assert not torch.allclose(loss, two_phase_loss(*args))  # SD's default factor gives another loss


def test_sdxl_identity_renders_and_its_diffusers_export_loads_into_both_encoders(
    face_photos: Path, tiny_sdxl_model: Path, facepack: Path, tmp_path: Path
) -> None:
    """`sid learn` on SDXL stores one slot per encoder; the identity changes the render, and diffusers,
    given the export's two tensors with ``load_textual_inversion``, draws the very same image."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline
    from safetensors.torch import load_file

    args = ["--model", str(tiny_sdxl_model), "--face-models", str(facepack), "--device", "cpu"]
    photo = str(face_photos / "obama_1.jpg")
    learned = runner.invoke(
        app, ["learn", photo, "--name", "xl", "--method", "celebbasis", "--steps", "4", "--json", *args]
    )
    assert learned.exit_code == 0, learned.output
    (info,) = json.loads(learned.stdout)
    assert info["slots"] == SLOTS and info["family"] == "te32+te64"
    shown = json.loads(runner.invoke(app, ["show", "xl", "--json"]).stdout)
    assert shown["family"] == "te32+te64"

    (with_id,) = pixels(render(tiny_sdxl_model, tmp_path / "a", "xl as a knight"))
    (without,) = pixels(render(tiny_sdxl_model, tmp_path / "b", "a person as a knight"))
    assert not np.array_equal(with_id, without)

    exported = tmp_path / "xl.safetensors"
    result = runner.invoke(app, ["export", "xl", "--format", "diffusers", "-o", str(exported)])
    assert result.exit_code == 0, result.output
    tensors = load_file(str(exported))
    assert {k: v.shape[-1] for k, v in tensors.items()} == SLOTS
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_model))
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.load_textual_inversion(
        tensors["te32"], token="<xl>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        tensors["te64"], token="<xl>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )
    stored = IdentityStore().get("xl").vectors
    rows = pipe.text_encoder_2.get_input_embeddings().weight[
        pipe.tokenizer_2.convert_tokens_to_ids(["<xl>", "<xl>_1"])
    ]
    np.testing.assert_array_equal(rows.detach().numpy(), stored["te64"])
    # SDXL's configs carry the legacy eos_token_id 2: plain diffusers pools at the identity token...
    assert not np.array_equal(with_id, plain_diffusers(pipe, "<xl> as a knight"))
    # ...and with the one line of docs/formats.md's SDXL recipe, at the end token as sid (and ComfyUI)
    pipe.text_encoder_2.text_model.eos_token_id = pipe.tokenizer_2.eos_token_id
    np.testing.assert_array_equal(with_id, plain_diffusers(pipe, "<xl> as a knight"))

    # A1111 and ComfyUI files hold the same two tensors; imported back, they render the same image
    for fmt in ("a1111", "comfyui"):
        path = tmp_path / fmt / "xl.safetensors"
        path.parent.mkdir()
        assert runner.invoke(app, ["export", "xl", "--format", fmt, "-o", str(path)]).exit_code == 0
        assert {k: v.tolist() for k, v in load_file(str(path)).items()} == {
            k: v.tolist() for k, v in tensors.items()
        }
        name = f"xl_{fmt}"
        result = runner.invoke(app, ["import", str(path), "--name", name])
        assert result.exit_code == 0, result.output
        (again,) = pixels(render(tiny_sdxl_model, tmp_path / f"{fmt}-render", f"{name} as a knight"))
        np.testing.assert_array_equal(with_id, again)


def store_sdxl_identity(name: str = "xl", seed: int = 0) -> None:
    """An identity of the tiny SDXL's family (te32 + te64), as `sid learn` stores one."""
    from sid.store import Identity

    rng = np.random.default_rng(seed)
    vectors = {slot: rng.standard_normal((2, width)).astype(np.float32) for slot, width in SLOTS.items()}
    IdentityStore().save(
        Identity(name=name, vectors=vectors, method="stableidentity", base_model="tiny-sdxl")
    )


@pytest.mark.parametrize("control_type", ["canny", "depth", "pose"])
def test_sdxl_render_with_a_controlnet(tiny_sdxl_model: Path, tmp_path: Path, control_type: str) -> None:
    """An SDXL ControlNet (shaped for the tiny SDXL UNet) guides an SDXL identity's render."""
    from diffusers import StableDiffusionXLPipeline
    from PIL import Image
    from skimage import data

    from sid.testing import tiny_controlnet

    store_sdxl_identity()
    controlnet = tmp_path / "controlnet"
    tiny_controlnet(StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_model))).save_pretrained(
        str(controlnet)
    )
    control = tmp_path / "control.png"
    Image.fromarray(data.astronaut()).resize((64, 64)).save(control)
    args = ["--control", str(control), "--control-type", control_type, "--controlnet", str(controlnet)]
    args += [] if control_type == "canny" else ["--control-is-map"]
    (guided,) = pixels(render(tiny_sdxl_model, tmp_path / "a", "xl dancing", *args))
    (plain,) = pixels(render(tiny_sdxl_model, tmp_path / "b", "xl dancing"))
    assert guided.shape == (64, 64, 3) and not np.array_equal(guided, plain)


def test_sdxl_presets_name_an_sdxl_controlnet_for_each_control_type() -> None:
    from sid.pipelines import presets

    controlnets = presets()["sdxl"].controlnets
    assert set(controlnets) == {"canny", "depth", "pose"} and all("xl" in c for c in controlnets.values())


def test_sdxl_eval(tiny_sdxl_model: Path, facepack: Path, face_photos: Path, tmp_path: Path) -> None:
    store_sdxl_identity()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# style\n{} as an oil painting\n")
    args = ["eval", "xl", "--prompts", str(prompts), "-n", "1", "--size", "64x64", "--steps", "1"]
    args += ["--model", str(tiny_sdxl_model), "--clip-model", "none", "--face-models", str(facepack)]
    args += [
        "--photo",
        str(face_photos / "obama_1.jpg"),
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "e"),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    overall = json.loads(result.stdout)["identities"]["xl"]["overall"]
    assert overall["images"] == 1 and overall["miss_rate"] == 1.0  # a random tiny model draws no face


@pytest.mark.parametrize(
    "widths,slots",
    [((32, 32), ("te32", "te32_2")), ((64, 32), ("te64", "te32"))],
    ids=["one-width", "wide-first"],
)
def test_other_two_encoder_models_learn_a_slot_per_encoder_that_loads_back(
    face_photos: Path, facepack: Path, tiny_vit: Path, tiny_parser: Path, tmp_path: Path, widths, slots
) -> None:
    """Two-encoder models of no built-in family: encoders of one width keep a slot each, and slots
    stored in name order (te32 before te64) still reach their own encoders when the identity loads."""
    import torch

    from sid.pipelines import load_pipeline
    from sid.render import prepare
    from sid.testing import save_tiny, tiny_sdxl_pipeline

    model = save_tiny(tiny_sdxl_pipeline(widths=widths), tmp_path / "model")
    args = ["--model", str(model), "--face-models", str(facepack), "--device", "cpu", "--steps", "2"]
    args += ["--vit-model", str(tiny_vit), "--face-parser", str(tiny_parser), "--json"]
    learned = runner.invoke(app, ["learn", str(face_photos / "obama_1.jpg"), "--name", "duo", *args])
    assert learned.exit_code == 0, learned.output
    (info,) = json.loads(learned.stdout)
    assert info["slots"] == dict(zip(slots, widths, strict=True))
    stored = IdentityStore().get("duo").vectors
    assert not np.array_equal(stored[slots[0]][:, :32], stored[slots[1]][:, :32])  # each its own part

    pipe, _ = load_pipeline(str(model), device="cpu", dtype="fp32")
    prepare("duo as a knight", IdentityStore(), pipe)
    encoders = ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
    for (tokenizer, encoder), slot in zip(encoders, slots, strict=True):
        ids = tokenizer.convert_tokens_to_ids(["<sid-duo>", "<sid-duo>_1"])
        rows = encoder.get_input_embeddings().weight[ids].detach()
        assert torch.equal(rows, torch.from_numpy(stored[slot]))


def test_sdxl_conditioning_pools_at_the_end_token_as_comfyui_and_a1111(
    tiny_sdxl_model: Path, tmp_path: Path
) -> None:
    """SDXL's text-encoder configs carry the legacy ``eos_token_id`` 2 (the tiny model's too). sid's
    conditioning for a prompt naming an identity (``sid render``'s pipeline, and learning's encoders)
    equals an encoding done the way ComfyUI and AUTOMATIC1111 do it: the exported vectors in the
    token-embedding rows at the identity's two positions, pooled at the prompt's end token."""
    import torch
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from sid.render import RenderConfig, load_render_pipeline, prepare

    store_sdxl_identity("xl")
    exported = tmp_path / "xl.safetensors"
    assert runner.invoke(app, ["export", "xl", "--format", "comfyui", "-o", str(exported)]).exit_code == 0
    tensors = load_file(str(exported))  # one (2, d) tensor per encoder

    cfg = RenderConfig("xl as a knight", model=str(tiny_sdxl_model), device="cpu", scheduler="dpm++")
    pipe, _, _ = load_render_pipeline(cfg)
    parsed, _ = prepare(cfg.prompt, IdentityStore(), pipe)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(
            parsed.text, device="cpu", do_classifier_free_guidance=False
        )

    # the reference: the model as saved, two ordinary words ("x y") whose rows hold the vectors
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_sdxl_model / "tokenizer"))
    ids = tokenizer("x y as a knight", padding="max_length", max_length=77, return_tensors="pt").input_ids
    hidden, ref_pooled = [], None
    for sub, cls, slot in (
        ("text_encoder", CLIPTextModel, "te32"),
        ("text_encoder_2", CLIPTextModelWithProjection, "te64"),
    ):
        encoder = cls.from_pretrained(str(tiny_sdxl_model / sub)).eval()
        assert encoder.config.eos_token_id == 2  # as SDXL's own configs
        with torch.no_grad():
            encoder.get_input_embeddings().weight[ids[0, 1:3]] = tensors[slot]
            out = encoder(ids, output_hidden_states=True)  # pools at argmax(ids): the end token here
        hidden.append(out.hidden_states[-2])
        ref_pooled = out[0]
    torch.testing.assert_close(embeds, torch.cat(hidden, dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-5, rtol=1e-5)

    from sid.train import LearnConfig, load_frozen  # learning loads the encoders the same way

    frozen = load_frozen(LearnConfig(model=str(tiny_sdxl_model), device="cpu"), "cpu")
    assert [getattr(enc, "text_model", enc).eos_token_id for _, enc in frozen.encoders] == [49407, 49407]
