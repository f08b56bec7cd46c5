"""`sid render` on tiny pipelines: exact injection, several identities, errors, ControlNet, metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sid.cli import app
from sid.errors import BadInput
from sid.store import IdentityStore
from tests.test_store import make_identity

runner = CliRunner()


def render(tiny: Path | None, out: Path, prompt: str, *extra: str):
    """``sid render`` on the tiny model (``tiny=None``: no --model, the identities' own is used)."""
    args = [
        "render",
        prompt,
        *(["--model", str(tiny)] if tiny else []),
        "--device",
        "cpu",
        "--steps",
        "2",
        *(
            "--scheduler",
            "dpm++",
            "--guidance",
            "8.5",
        ),  # what plain_diffusers draws with, whatever the method
        "--seed",
        "1",
        "--size",
        "64x64",
        "-o",
        str(out),
        "--json",
        *extra,
    ]
    return runner.invoke(app, args)


def pixels(result) -> list[np.ndarray]:
    assert result.exit_code == 0, result.output
    return [np.asarray(Image.open(row["path"])) for row in json.loads(result.stdout)]


def parse_a1111(text: str) -> dict[str, str]:
    """AUTOMATIC1111's `parameters` layout: prompt lines, 'Negative prompt:' lines, then 'Key: value, ...'."""
    *head, last = text.strip().split("\n")
    fields = {
        m.group(1): m.group(2).strip('"') for m in re.finditer(r'([\w ]+): ("[^"]*"|[^,]*)(?:, |$)', last)
    }
    negative = next((i for i, line in enumerate(head) if line.startswith("Negative prompt: ")), len(head))
    fields["Prompt"] = "\n".join(head[:negative])
    if negative < len(head):
        fields["Negative prompt"] = "\n".join(head[negative:])[len("Negative prompt: ") :]
    return fields


def plain_diffusers(pipe, prompt: str) -> np.ndarray:
    """The image plain diffusers draws with ``render``'s settings (2 steps, guidance 8.5, 64², seed 1)."""
    import torch

    generator = torch.Generator("cpu").manual_seed(1)
    image = pipe(prompt, num_inference_steps=2, guidance_scale=8.5, width=64, height=64, generator=generator)
    return np.asarray(image.images[0])


@pytest.fixture
def alice() -> None:
    IdentityStore().save(make_identity("alice", width=32, seed=1))


def test_identity_changes_image_and_matches_plain_diffusers(tiny_model: Path, tmp_path: Path, alice) -> None:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    (with_id,) = pixels(render(tiny_model, tmp_path / "a", "alice as a knight"))
    (without,) = pixels(render(tiny_model, tmp_path / "b", "a person as a knight"))
    assert not np.array_equal(with_id, without)
    again = pixels(render(tiny_model, tmp_path / "c", "Alice as a knight"))[0]  # case-insensitive name
    np.testing.assert_array_equal(with_id, again)

    exported = tmp_path / "alice.safetensors"
    assert (
        runner.invoke(app, ["export", "alice", "--format", "diffusers", "-o", str(exported)]).exit_code == 0
    )
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model))
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.load_textual_inversion(str(exported))
    np.testing.assert_array_equal(with_id, plain_diffusers(pipe, "<alice> as a knight"))


def test_two_identities_in_one_prompt(tiny_model: Path, tmp_path: Path, alice) -> None:
    IdentityStore().save(make_identity("bob", width=32, seed=2))
    (both,) = pixels(render(tiny_model, tmp_path / "a", "alice and bob having dinner"))
    (one,) = pixels(render(tiny_model, tmp_path / "b", "alice and a man having dinner"))
    assert not np.array_equal(both, one)
    meta = Image.open(next((tmp_path / "a").glob("*.png"))).text
    assert set(json.loads(meta["sid"])["identities"]) == {"alice", "bob"}


def test_unknown_at_name_and_incompatible_width(tiny_model: Path, tmp_path: Path, alice) -> None:
    unknown = render(tiny_model, tmp_path, "@carol on a horse")
    assert unknown.exit_code == 1 and "@carol names no stored identity (known: alice)" in unknown.output
    IdentityStore().save(make_identity("wide", width=1024))
    wrong = render(tiny_model, tmp_path, "wide on a horse")
    assert wrong.exit_code == 1 and "SD 2.x (OpenCLIP ViT-H, 1024-d)" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.png"))


def test_prompt_without_identity_warns(tiny_model: Path, tmp_path: Path) -> None:
    result = render(tiny_model, tmp_path, "a castle")
    assert result.exit_code == 0 and "names no stored identity" in result.stderr


def test_batch_seeds_reproduce_one_by_one(tiny_model: Path, tmp_path: Path, alice) -> None:
    four = pixels(render(tiny_model, tmp_path / "a", "alice", "-n", "2"))
    second = pixels(render(tiny_model, tmp_path / "b", "alice", "--seed", "2"))[0]
    np.testing.assert_array_equal(four[1], second)
    assert not np.array_equal(four[0], four[1])


def test_png_metadata_in_a1111_layout(tiny_model: Path, tmp_path: Path, alice) -> None:
    result = render(tiny_model, tmp_path, "alice as a knight", "--negative", "blurry, lowres")
    path = Path(json.loads(result.stdout)[0]["path"])
    assert path.name == "alice-as-a-knight-00-1.png"
    text = Image.open(path).text
    fields = parse_a1111(text["parameters"])
    assert fields["Prompt"] == "alice as a knight" and fields["Negative prompt"] == "blurry, lowres"
    assert (fields["Steps"], fields["Sampler"], fields["CFG scale"], fields["Seed"], fields["Size"]) == (
        "2",
        "DPM++ 2M",
        "8.5",
        "1",
        "64x64",
    )
    assert fields["Model"] == str(tiny_model) and fields["TI hashes"].startswith("alice: ")
    sid = json.loads(text["sid"])
    assert sid["settings"]["seed"] == 1 and sid["identities"]["alice"] == fields["TI hashes"].split(": ")[1]


@pytest.mark.parametrize(
    "bad,needle",
    [
        (["--size", "65x64"], "each side must be a multiple of 8 between 64 and 2048"),
        (["--scheduler", "magic"], "unknown scheduler"),
        (["-n", "0"], "-n must be between 1 and 10000, not 0"),
        (["--control", "missing.png"], "control image missing.png not found"),
    ],
)
def test_bad_options(tiny_model: Path, tmp_path: Path, bad: list[str], needle: str) -> None:
    result = render(tiny_model, tmp_path, "a castle", *bad)
    assert result.exit_code == 1 and needle in result.output


@pytest.fixture(scope="module")
def tiny_controlnet_dir(tiny_model: Path, tmp_path_factory) -> Path:
    from diffusers import StableDiffusionPipeline

    from sid.testing import tiny_controlnet

    folder = tmp_path_factory.mktemp("cn") / "controlnet"
    tiny_controlnet(StableDiffusionPipeline.from_pretrained(str(tiny_model))).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("control_type,extra", [("canny", []), ("pose", ["--control-is-map"])])
def test_controlnet(
    tiny_model: Path, tiny_controlnet_dir: Path, tmp_path: Path, alice, control_type, extra
) -> None:
    from skimage import data

    control = tmp_path / "control.png"
    Image.fromarray(data.astronaut()).resize((64, 64)).save(control)
    args = [
        "--control",
        str(control),
        "--control-type",
        control_type,
        "--controlnet",
        str(tiny_controlnet_dir),
        *extra,
    ]
    (guided,) = pixels(render(tiny_model, tmp_path / "a", "alice dancing", *args))
    (plain,) = pixels(render(tiny_model, tmp_path / "b", "alice dancing"))
    assert guided.shape == (64, 64, 3) and not np.array_equal(guided, plain)
    meta = parse_a1111(Image.open(next((tmp_path / "a").glob("*.png"))).text["parameters"])
    assert meta["ControlNet"].startswith(control_type)


def test_canny_edges_of_a_square() -> None:
    from sid.control import canny

    square = np.zeros((64, 64, 3), np.uint8)
    square[16:48, 16:48] = 255
    edges = np.asarray(canny(Image.fromarray(square)))[..., 0]
    assert edges[16:48, 15:18].any() and not edges[24:40, 24:40].any() and not edges[:8, :8].any()


def test_fingerprint_mismatch_only_warns(tiny_model: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    from sid.prompts import fingerprint

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model))
    real = fingerprint(pipe.text_encoder, pipe.tokenizer.vocab_size)
    for name, print_ in (("same", real), ("other", "32:0123456789abcdef")):
        identity = make_identity(name, width=32)
        identity.fingerprints = {"te32": print_}
        IdentityStore().save(identity)
    quiet = render(tiny_model, tmp_path / "a", "same and same again")
    assert quiet.exit_code == 0 and "learned on another" not in quiet.stderr
    both = render(tiny_model, tmp_path / "b", "same meets other")  # the first load must not alter the check
    assert both.exit_code == 0
    assert both.stderr.count("learned on another") == 1 and "other was learned" in both.stderr


def test_without_model_the_identitys_own_model_renders(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    from dataclasses import replace

    alice = replace(make_identity("alice", width=32, seed=1), base_model=str(tiny_model))
    IdentityStore().save(alice)
    (own,) = pixels(render(None, tmp_path / "own", "alice as a knight"))  # sd21 is not cached here
    (explicit,) = pixels(render(tiny_model, tmp_path / "explicit", "alice as a knight"))
    assert np.array_equal(own, explicit)
    meta = json.loads(Image.open(next((tmp_path / "own").glob("*.png"))).text["sid"])
    assert meta["model"] == str(tiny_model)

    # learned on a folder that is gone: a note, then the configured default
    IdentityStore().save(replace(alice, name="ghost", base_model=str(tmp_path / "gone")))
    monkeypatch.setenv("SID_MODEL", str(tiny_model))
    result = render(None, tmp_path / "ghost", "ghost as a knight")
    assert result.exit_code == 0, result.output
    assert (
        f"ghost records its base model {tmp_path / 'gone'} is not found; using the default model"
        in result.stderr
    )
    # with alice in the prompt too, her model is the one used for both
    both = render(None, tmp_path / "both", "ghost and alice")
    assert both.exit_code == 0 and f"using {tiny_model}" in both.stderr


def test_without_model_identities_of_two_families_are_refused(
    tiny_model: Path, tmp_path: Path, alice
) -> None:
    IdentityStore().save(make_identity("wide", width=1024))  # learned on sd21
    result = render(None, tmp_path, "alice meets wide")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "mixes identities learned for different text encoders" in result.output
    assert (
        "alice (" in result.output
        and "wide (SD 2.x (OpenCLIP ViT-H, 1024-d), learned on sd21)" in result.output
    )
    assert not tmp_path.exists() or not list(tmp_path.glob("*.png"))


# -- the papers' render recipes ---------------------------------------------------------------------
def test_celebbasis_identity_renders_with_its_papers_recipe(tiny_model: Path, tmp_path: Path) -> None:
    """No sampling flag: DDIM, 50 steps, eta 0, guidance 10 ran (pixels equal plain diffusers with
    exactly that) and the PNG says so."""
    from dataclasses import replace

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    IdentityStore().save(replace(make_identity("carol", width=32, seed=3), method="celebbasis"))
    args = ["render", "carol smiling", "--model", str(tiny_model), "--device", "cpu", "--seed", "1"]
    result = runner.invoke(app, [*args, "--size", "64x64", "-o", str(tmp_path / "a"), "--json"])
    (image,) = pixels(result)
    fields = parse_a1111(Image.open(json.loads(result.stdout)[0]["path"]).text["parameters"])
    assert (fields["Steps"], fields["Sampler"], fields["CFG scale"]) == ("50", "DDIM", "10.0")

    exported = tmp_path / "carol.safetensors"
    assert (
        runner.invoke(app, ["export", "carol", "--format", "diffusers", "-o", str(exported)]).exit_code == 0
    )
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.load_textual_inversion(str(exported))
    import torch

    generator = torch.Generator("cpu").manual_seed(1)
    plain = pipe(
        "<carol> smiling",
        num_inference_steps=50,
        guidance_scale=10.0,
        eta=0.0,
        width=64,
        height=64,
        generator=generator,
    ).images[0]
    np.testing.assert_array_equal(image, np.asarray(plain))


def test_recipe_follows_the_identities_methods_and_yields_to_config_and_flags(
    tmp_path: Path, isolated_home: Path
) -> None:
    from dataclasses import replace

    from sid.config import RENDER_RECIPES
    from sid.render import RenderConfig, settings_for

    store = IdentityStore()
    store.save(make_identity("alice", width=32, seed=1))  # stableidentity
    store.save(replace(make_identity("carol", width=32, seed=3), method="celebbasis"))
    store.save(replace(make_identity("dave", width=32, seed=4), method=""))  # imported: no method

    def chosen(prompt: str, **flags) -> tuple:
        cfg = settings_for(RenderConfig(prompt=prompt, **flags), store)
        return cfg.scheduler, cfg.steps, cfg.guidance

    assert chosen("alice") == ("dpm++", 50, 8.5)
    assert chosen("carol at the beach") == ("ddim", 50, 10.0)
    default = RENDER_RECIPES["default"]
    for mixed in ("alice and carol", "a castle", "dave", "carol and dave"):
        assert chosen(mixed) == (default.scheduler, default.steps, default.guidance)
    assert chosen("carol", steps=7, scheduler="euler") == ("euler", 7, 10.0)  # flags win, one by one

    (isolated_home / "config.toml").write_text("[render]\nsteps = 20\nguidance = 6\n", encoding="utf-8")
    assert chosen("carol") == ("ddim", 20, 6.0)  # the config wins over the recipe
    assert chosen("carol", steps=3) == ("ddim", 3, 6.0)  # and the flag over the config
    (isolated_home / "config.toml").write_text('[render]\nsteps = "many"\n', encoding="utf-8")
    with pytest.raises(BadInput, match="render.steps"):
        chosen("carol")
