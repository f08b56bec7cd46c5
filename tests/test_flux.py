"""FLUX.1 identities on a tiny random FluxPipeline: the family, rendering, export/import, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sid.cli import app
from sid.store import Identity, IdentityStore
from sid.testing import T5_WIDTH
from tests.helpers import one_error
from tests.test_render import pixels

runner = CliRunner()
SLOTS = {"clip_l": 32, "t5": T5_WIDTH}  # the tiny FLUX's encoders, under FLUX's own slot names


def store_flux_identity(name: str = "fl", seed: int = 0, model: str = "flux-dev") -> Identity:
    rng = np.random.default_rng(seed)
    vectors = {slot: rng.standard_normal((2, w)).astype(np.float32) for slot, w in SLOTS.items()}
    identity = Identity(name=name, vectors=vectors, method="stableidentity", base_model=model)
    IdentityStore().save(identity)
    return identity


def flux_render(model: Path, out: Path, prompt: str, *extra: str):
    """``sid render`` on the tiny FLUX: 2 steps, seed 1, 64², the family's own sampler and guidance."""
    args = ["render", prompt, "--model", str(model), "--device", "cpu", "--steps", "2", "--seed", "1"]
    return runner.invoke(app, [*args, "--size", "64x64", "-o", str(out), "--json", *extra])


def test_a_flux_pipeline_is_the_flux_family_at_any_widths(
    tiny_flux_model: Path, tiny_sdxl_model: Path
) -> None:
    from sid.families import FLUX, family_by_widths, family_of_identity, family_of_pipeline
    from sid.pipelines import load_pipeline, native_size

    pipe, _ = load_pipeline(str(tiny_flux_model), device="cpu", dtype="fp32")
    family = family_of_pipeline(pipe)
    assert family.key == "flux" and family.slots == ("clip_l", "t5") and family.widths == (32, T5_WIDTH)
    assert family_of_identity(SLOTS) == family and family_of_identity({"t5": 4096, "clip_l": 768}) is FLUX
    assert family_by_widths((32, T5_WIDTH)).denoiser is None  # a UNet model of these widths is not FLUX
    assert native_size(pipe) == (1024, 1024)  # FluxPipeline's default size
    store_flux_identity()
    rows = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)["identities"]
    assert [(r["name"], r["family"]) for r in rows] == [("fl", "flux")]
    assert json.loads(runner.invoke(app, ["show", "fl", "--json"]).stdout)["family"] == "flux"


def test_flux_and_sd_identities_are_refused_on_each_others_models(
    tiny_flux_model: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """One-line errors naming both families, nothing written; a UNet identity of the same widths as the
    tiny FLUX's encoders is refused too (the denoiser tells the families apart)."""
    store_flux_identity()
    line = one_error(flux_render(tiny_model, tmp_path / "a", "fl as a knight"), "FLUX.1")
    assert "not for a model with a 32-d text encoder" in line
    rng = np.random.default_rng(0)
    twin = {f"te{w}": rng.standard_normal((2, w)).astype(np.float32) for w in SLOTS.values()}
    IdentityStore().save(Identity(name="twin", vectors=twin, method="stableidentity", base_model="x"))
    line = one_error(flux_render(tiny_flux_model, tmp_path / "b", "twin as a knight"), "twin")
    assert "a model with 32-d + 48-d text encoders, not for a FLUX.1-layout model" in line
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_flux_render_defaults_and_scheduler_refusal(tiny_flux_model: Path, tmp_path: Path) -> None:
    """No --steps: FLUX.1-dev's 28 at guidance 3.5 (a schnell-like model: below); its own sampler."""
    from sid.pipelines import PRESETS

    args = ["render", "a person", "--model", str(tiny_flux_model), "--device", "cpu", "--seed", "1"]
    result = runner.invoke(app, [*args, "--size", "64x64", "-o", str(tmp_path), "--json"])
    (row,) = json.loads(result.stdout)
    settings = json.loads(Image.open(row["path"]).text["sid"])["settings"]
    assert (settings["steps"], settings["guidance"], settings["scheduler"]) == (28, 3.5, None)
    assert PRESETS["flux-schnell"].licence == "Apache-2.0"
    assert "Non-Commercial" in PRESETS["flux-dev"].licence
    one_error(
        flux_render(tiny_flux_model, tmp_path / "s", "a person", "--scheduler", "ddim"), "flow-matching"
    )
    line = one_error(
        flux_render(tiny_flux_model, tmp_path / "m", "a person", "--size", "72x64"), "multiples of 16"
    )
    assert "try 64x64" in line and not (tmp_path / "m").exists()
    # FluxPipeline reads negative_prompt only with true_cfg_scale > 1: refused, not recorded as used;
    # before loading when an identity names the family, once loaded otherwise
    store_flux_identity()
    for prompt, out in (("fl as a knight", "n1"), ("a person", "n2")):
        line = one_error(
            flux_render(tiny_flux_model, tmp_path / out, prompt, "--negative", "blur"), "ignores"
        )
        assert line.startswith("error: --negative: FLUX.1") and not (tmp_path / out).exists()


def test_a_schnell_like_flux_gets_4_steps_without_guidance_whatever_names_it(tmp_path: Path) -> None:
    """A folder (or hub id) whose transformer has no guidance input samples as FLUX.1-schnell: 4 steps,
    guidance 0, not dev's 28 at 3.5; --steps still wins."""
    from sid.testing import save_tiny, tiny_flux_pipeline

    model = save_tiny(tiny_flux_pipeline(guided=False), tmp_path / "schnell")
    args = ["render", "a person", "--model", str(model), "--device", "cpu", "--seed", "1", "--size", "64x64"]
    for extra, expected in (([], (4, 0.0)), (["--steps", "2"], (2, 0.0))):
        out = tmp_path / f"o{len(extra)}"
        result = runner.invoke(app, [*args, "-o", str(out), "--json", *extra])
        assert result.exit_code == 0, result.output
        (row,) = json.loads(result.stdout)
        settings = json.loads(Image.open(row["path"]).text["sid"])["settings"]
        assert (settings["steps"], settings["guidance"]) == expected


def test_a_long_prompt_is_cut_where_flux_t5_stops_not_at_clips_77(tiny_flux_model: Path) -> None:
    """FLUX's T5 carries the prompt's sequence and reads 512 tokens (its end token included): a prompt
    past CLIP's 77 is no warning, one past 511 says the T5's numbers, counting an identity's vectors."""
    from sid.pipelines import load_pipeline
    from sid.prompts import load_identities
    from sid.render import warn_if_cut

    pipe, _ = load_pipeline(str(tiny_flux_model), device="cpu", dtype="fp32")
    load_identities(pipe, [store_flux_identity()])
    notes: list[str] = []
    warn_if_cut(pipe, " ".join(["person"] * 100), notes.append)  # 300 T5 tokens, 100 CLIP tokens
    assert notes == []
    warn_if_cut(pipe, "<sid-fl> " + " ".join(["person"] * 170), notes.append)  # 2 + 510 T5 tokens
    assert notes == ["the prompt is 512 tokens long: the text encoder reads the first 511, the rest is cut"]


def test_flux_identity_renders_and_its_diffusers_export_gives_the_same_image(
    tiny_flux_model: Path, tmp_path: Path
) -> None:
    """The identity changes the render; diffusers, loading the export's clip_l and t5 tensors the way
    its FLUX textual-inversion docs do and pooling CLIP at the end token, draws the very same image;
    ComfyUI's file (clip_l, t5xxl) imports back to the same render; A1111 (no FLUX) is refused."""
    import torch
    from diffusers import FluxPipeline
    from safetensors.torch import load_file

    store_flux_identity()
    (with_id,) = pixels(flux_render(tiny_flux_model, tmp_path / "a", "fl as a knight"))
    (without,) = pixels(flux_render(tiny_flux_model, tmp_path / "b", "a person as a knight"))
    assert not np.array_equal(with_id, without)

    exported = tmp_path / "fl.safetensors"
    result = runner.invoke(app, ["export", "fl", "--format", "diffusers", "-o", str(exported)])
    assert result.exit_code == 0, result.output
    state_dict = load_file(str(exported))
    assert {k: tuple(v.shape) for k, v in state_dict.items()} == {k: (2, w) for k, w in SLOTS.items()}
    pipe = FluxPipeline.from_pretrained(str(tiny_flux_model))
    tokens = ["<s0>", "<s1>"]  # diffusers' docs: one token per vector, in both encoders
    pipe.load_textual_inversion(
        state_dict["clip_l"], token=tokens, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        state_dict["t5"], token=tokens, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )

    def draw() -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(1)
        image = pipe(
            "<s0><s1> as a knight",
            num_inference_steps=2,
            guidance_scale=3.5,
            width=64,
            height=64,
            generator=generator,
        )
        return np.asarray(image.images[0])

    # the config's legacy eos_token_id 2 pools the pooled CLIP vector at the identity's token: not sid's image
    clip = getattr(pipe.text_encoder, "text_model", pipe.text_encoder)  # transformers 4 / 5
    assert clip.eos_token_id == 2 and not np.array_equal(with_id, draw())
    clip.eos_token_id = pipe.tokenizer.eos_token_id  # docs/formats.md's line
    np.testing.assert_array_equal(with_id, draw())

    comfy = tmp_path / "comfy" / "fl.safetensors"
    comfy.parent.mkdir()
    assert runner.invoke(app, ["export", "fl", "--format", "comfyui", "-o", str(comfy)]).exit_code == 0
    assert set(load_file(str(comfy))) == {"clip_l", "t5xxl"}
    result = runner.invoke(app, ["import", str(comfy), "--name", "fl_comfy"])
    assert result.exit_code == 0, result.output
    (again,) = pixels(flux_render(tiny_flux_model, tmp_path / "c", "fl_comfy as a knight"))
    np.testing.assert_array_equal(with_id, again)
    one_error(
        runner.invoke(app, ["export", "fl", "--format", "a1111", "-o", str(tmp_path / "x.safetensors")]),
        "a1111",
    )
    assert not (tmp_path / "x.safetensors").exists()


def test_flux_render_with_a_union_controlnet(tiny_flux_model: Path, tmp_path: Path) -> None:
    """A FLUX ControlNet loads as FluxControlNetModel; a union one is told the control type's mode."""
    import torch
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(str(tiny_flux_model / "transformer"))
    torch.manual_seed(0)
    union = FluxControlNetModel.from_transformer(
        transformer, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2
    )
    union.register_to_config(num_mode=10)
    union.controlnet_mode_embedder = torch.nn.Embedding(10, 32)
    for block in [*union.controlnet_blocks, union.controlnet_x_embedder]:
        torch.nn.init.normal_(block.weight, std=0.1)
    union.save_pretrained(str(tmp_path / "union"))
    control = tmp_path / "edges.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(control)
    extra = ["--control", str(control), "--controlnet", str(tmp_path / "union")]
    (plain,) = pixels(flux_render(tiny_flux_model, tmp_path / "p", "a person"))
    images = {
        t: pixels(
            flux_render(
                tiny_flux_model, tmp_path / t, "a person", *extra, "--control-type", t, "--control-is-map"
            )
        )[0]
        for t in ("canny", "pose")
    }
    assert not np.array_equal(images["canny"], plain)
    assert not np.array_equal(images["canny"], images["pose"])  # another mode, another image


@pytest.mark.parametrize("command", ["3d"])
def test_sid_3d_refuses_a_flux_identity_before_loading(command: str, tmp_path: Path) -> None:
    store_flux_identity()
    one_error(runner.invoke(app, [command, "fl as a statue", "-o", str(tmp_path / "x")]), "FLUX.1")


# -- learning -----------------------------------------------------------------------------------------
@pytest.fixture
def flux_config(tiny_flux_model: Path, facepack: Path, tiny_vit: Path, tiny_parser: Path):
    """LearnConfig(**knobs) on the tiny FLUX at 64², CPU, the real face pack, the tiny ViT and parser."""
    from sid.train import LearnConfig

    def make(**knobs):
        models = {"vit_model": str(tiny_vit), "face_parser": str(tiny_parser)}
        return LearnConfig(
            model=str(tiny_flux_model),
            device="cpu",
            face_models=str(facepack),
            resolution=64,
            **models,
            **knobs,
        )

    return make


@pytest.mark.parametrize("method,lr", [("stableidentity", 1e-3), ("celebbasis", 1e-2)])
def test_flux_loss_falls_and_both_slots_are_stored(
    face_photos: Path, flux_config, method: str, lr: float
) -> None:
    from sid.priors import WORD_PIECES
    from sid.train import learn

    cfg = flux_config(method=method, steps=30, lr=lr, batch_size=1, bank_size=1, overfit=True, seed=1)
    result = learn([face_photos / "obama_1.jpg"], [f"f_{method[:2]}"], cfg)
    losses = np.array(result.losses)
    assert len(losses) == 30 and losses[-10:].mean() < losses[:10].mean(), losses
    (identity,) = result.identities
    assert identity.widths == SLOTS and all(v.shape == (2, SLOTS[s]) for s, v in identity.vectors.items())
    assert set(identity.fingerprints) == set(SLOTS)
    settings = identity.settings
    assert settings["prediction_type"] == "flow" and settings["noise_schedule"]["use_dynamic_shifting"]
    assert settings["priors"]["t5"]["pieces"] == WORD_PIECES and settings["priors"]["clip_l"]["names"] > 300
    stored = IdentityStore().get(f"f_{method[:2]}")
    assert stored.widths == SLOTS


@pytest.mark.parametrize("low_vram", [False, True])
def test_flux_step_gives_gradients_to_the_mapper_only(flux_config, low_vram: bool) -> None:
    """Both encoders see the vectors (CLIP through its pooled output); nothing frozen gets a gradient;
    the bank's latents are the VAE's (sample - shift) * scale. --low-vram: the transformer's and T5's
    layers rest in float8 and the gradient still reaches the mapper through both (backward through
    the recomputed, up-cast layers)."""
    import torch

    from sid.adapters import Sample
    from sid.methods import RECIPES, build_mapper
    from sid.priors import build_prior
    from sid.prompts import add_placeholder_tokens, inject_vectors
    from sid.train import load_frozen

    model = load_frozen(flux_config(low_vram=low_vram), "cpu")
    stored = {p.dtype for m in (model.denoiser, model.encoders[1][1]) for p in m.parameters()}
    assert (torch.float8_e4m3fn in stored) == low_vram
    priors = [build_prior(tok, enc, "stableidentity") for tok, enc in model.encoders]
    mapper = build_mapper("stableidentity", 16, priors)
    placeholders = [(enc, add_placeholder_tokens(tok, enc, "<p>", 2)) for tok, enc in model.encoders]
    ids = model.prompt_ids(RECIPES["stableidentity"].templates[:3], "<p>")
    assert ids.shape == (3, 2, 512) and (ids[:, 0, 77:] == model.encoders[0][0].pad_token_id).all()
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, 4, 8, 8, generator=gen)
    draw = (z0, torch.ones(1, 1, 8, 8), None, torch.zeros(1))
    sample: Sample = model.noised(draw, torch.randn(2, 16, generator=gen), ids, gen)
    assert 0 < sample.t.item() <= 1  # a σ, not a timestep
    with inject_vectors(placeholders) as slot:
        vectors = mapper(sample.face)  # (1, 2, 32 + 48)
        vectors.retain_grad()
        pred = model.predictor(slot)(vectors, sample.ids, sample.z_t, sample.t)
        loss = model.loss(pred, sample, "stableidentity")
    assert pred.shape == z0.shape
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mapper.parameters())
    frozen = [model.denoiser, model.vae, *(enc for _, enc in model.encoders)]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())
    assert vectors.grad[..., :32].abs().sum() > 0 and vectors.grad[..., 32:].abs().sum() > 0


def test_low_vram_stores_float8_weights_and_learns_close_vectors(face_photos: Path, flux_config) -> None:
    """--low-vram (gradient checkpointing of the transformer, its and T5's weights at rest in float8)
    learns: the loss is finite and falls, the vectors are near the default run's but not equal (the
    weights are rounded to float8), and the identity records what it did. Its memory saving is
    measured on a GPU only (benchmarks.gpu)."""
    from sid.train import learn

    photo = [face_photos / "obama_1.jpg"]
    knobs = {"steps": 30, "lr": 1e-3, "batch_size": 1, "bank_size": 1, "overfit": True, "seed": 1}
    plain = learn(photo, ["plain"], flux_config(**knobs))
    low = learn(photo, ["low"], flux_config(**knobs, low_vram=True))
    losses = np.array(low.losses)
    assert np.isfinite(losses).all() and losses[-10:].mean() < losses[:10].mean(), losses
    both = ["transformer", "text_encoder_2"]
    memory = {"gradient_checkpointing": both, "float8_e4m3fn": both}
    (ours,), (theirs,) = low.identities, plain.identities
    assert ours.settings["memory"] == memory and ours.settings["low_vram"]
    assert theirs.settings["memory"] == {}
    for slot in SLOTS:
        a, b = ours.vectors[slot].ravel(), theirs.vectors[slot].ravel()
        gap, cosine = np.linalg.norm(a - b) / np.linalg.norm(b), a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        assert 0 < gap < 0.3 and cosine > 0.95, (slot, gap, cosine)


def test_low_vram_forward_holds_less_for_the_backward(flux_config) -> None:
    """What the step's forward keeps for the backward (activations, up-cast float8 weights): far less
    with --low-vram, whose transformer and T5 recompute each block; the vectors still get a gradient."""
    import torch

    from sid.methods import RECIPES
    from sid.prompts import add_placeholder_tokens, inject_vectors
    from sid.train import load_frozen

    def held(low_vram: bool) -> int:
        model = load_frozen(flux_config(low_vram=low_vram), "cpu")
        placeholders = [(enc, add_placeholder_tokens(tok, enc, "<p>", 2)) for tok, enc in model.encoders]
        ids = model.prompt_ids(RECIPES["stableidentity"].templates[:1], "<p>")
        saved: dict[int, int] = {}

        def pack(x: torch.Tensor) -> torch.Tensor:
            saved[x.data_ptr()] = x.numel() * x.element_size()
            return x

        vectors = torch.randn(1, 2, sum(SLOTS.values()), requires_grad=True)
        with (
            inject_vectors(placeholders) as slot,
            torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x),
        ):
            pred = model.predictor(slot)(vectors, ids, torch.randn(1, 4, 8, 8), torch.tensor([0.5]))
        pred.square().mean().backward()
        assert vectors.grad.abs().sum() > 0
        return sum(saved.values())

    assert held(True) < held(False) / 4


def test_flux_eval_and_a_prompt_with_two_identities(
    tiny_flux_model: Path, facepack: Path, face_photos: Path, tmp_path: Path
) -> None:
    """`sid eval` renders and scores a FLUX identity with FLUX's render defaults (guidance 3.5, its own
    sampler); a prompt naming two FLUX identities renders each."""
    store_flux_identity("fl")
    store_flux_identity("fm", seed=1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# style\n{} as an oil painting\n")
    args = ["eval", "fl", "--prompts", str(prompts), "-n", "1", "--size", "64x64", "--steps", "1"]
    args += ["--model", str(tiny_flux_model), "--clip-model", "none", "--face-models", str(facepack)]
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
    report = json.loads(result.stdout)
    assert report["identities"]["fl"]["overall"]["images"] == 1
    assert report["settings"]["guidance"] == 3.5 and report["settings"]["scheduler"] is None
    (both,) = pixels(flux_render(tiny_flux_model, tmp_path / "a", "fl and fm at dinner"))
    (one,) = pixels(flux_render(tiny_flux_model, tmp_path / "b", "fl and a person at dinner"))
    assert not np.array_equal(both, one)


def test_sid_video_puts_a_flux_identitys_t5_half_into_ltx_video(tmp_path: Path) -> None:
    """LTX-Video with the tiny FLUX's T5: the identity changes the clip; an LTX-Video whose T5 has
    another fingerprint is refused in one line, before any frame is made."""
    from sid.prompts import fingerprint
    from sid.testing import save_tiny, t5_tokenizer, tiny_ltx_pipeline, tiny_t5_encoder

    same = save_tiny(tiny_ltx_pipeline(), tmp_path / "ltx")
    other = save_tiny(tiny_ltx_pipeline(t5_seed=5), tmp_path / "ltx-other")
    identity = store_flux_identity()
    t5_print = fingerprint(tiny_t5_encoder(T5_WIDTH, 1), t5_tokenizer().vocab_size)
    identity.fingerprints = {"t5": t5_print}  # as learning on the tiny FLUX records it
    IdentityStore().save(identity, overwrite=True)

    def video(model: Path, prompt: str, out: str):
        args = ["video", prompt, "--video-model", str(model), "--frames", "9", "--steps", "2", "--seed", "1"]
        return runner.invoke(
            app, [*args, "--size", "64x64", "--device", "cpu", "-o", str(tmp_path / out), "--json"]
        )

    with_id, without = video(same, "fl dancing", "a.gif"), video(same, "a person dancing", "b.gif")
    assert with_id.exit_code == 0 and without.exit_code == 0, with_id.output + without.output
    assert json.loads(with_id.stdout)["backend"] == "ltx-video"
    frames = [np.asarray(Image.open(tmp_path / f).convert("RGB")) for f in ("a.gif", "b.gif")]
    assert not np.array_equal(*frames)
    line = one_error(video(other, "fl dancing", "c.gif"), "T5")
    assert "not the one fl was learned with" in line and not (tmp_path / "c.gif").exists()


def test_sid_video_on_a_flux_base_without_identity_is_ltx_video_not_animatediff(
    tiny_flux_model: Path, tmp_path: Path
) -> None:
    """--model flux-dev alone plans FLUX's own video model; AnimateDiff on a FLUX base (a preset before
    loading, a folder once its denoiser shows) is one line naming both, nothing written."""
    from sid.errors import BadInput
    from sid.video import VideoConfig, plan_video

    notes: list[str] = []
    plan = plan_video(VideoConfig("a person dancing", model="flux-dev"), [], notes.append)
    assert plan.backend == "ltx-video" and plan.base is None and "used as a whole" in notes[0]
    with pytest.raises(BadInput, match="AnimateDiff animates UNet base models, and flux-dev is FLUX.1"):
        plan_video(VideoConfig("a person", model="flux-dev", video_model="animatediff"), [])
    args = ["video", "a person", "--model", str(tiny_flux_model), "--video-model", "animatediff"]
    out = tmp_path / "v.gif"
    line = one_error(runner.invoke(app, [*args, "--device", "cpu", "-o", str(out)]), "is FLUX.1")
    assert "AnimateDiff animates UNet base models" in line and not out.exists()


def test_doctor_says_flux_dev_is_gated_and_non_commercial() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    licences = json.loads(result.stdout)["licences"]
    assert "Non-Commercial" in licences["flux-dev"] and "gated" in licences["flux-dev"]
    assert licences["flux-schnell"] == "Apache-2.0"
