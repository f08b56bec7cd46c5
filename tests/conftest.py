"""Shared fixtures: an isolated store per test, tiny saved pipelines, and the real test data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One CPU thread in this process and every process a test starts (a server, torchrun ranks): results
# compared bit for bit across processes, or pinned, depend on the reduction order, which the thread
# count changes.
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SID_TEST_SHARED", ROOT.parent / "shared"))
FACEPACK = SHARED / "models" / "facepack"
FACES = SHARED / "faces"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own SID_HOME and config file, and never touches the network."""
    home = tmp_path_factory.mktemp("sid-home")
    monkeypatch.setenv("SID_HOME", str(home))
    monkeypatch.setenv("SID_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SID_MODEL", raising=False)
    for name in ("SID_FACE_MODELS", "SID_VIT_MODEL", "SID_FACE_PARSER"):
        monkeypatch.delenv(name, raising=False)
    return home


def _need_bpe() -> None:
    from sid.testing import find_bpe_vocab

    if find_bpe_vocab() is None:
        pytest.skip("CLIP BPE vocabulary missing: pip install --no-deps open-clip-torch")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A saved tiny SD pipeline (text width 32), loadable with --model PATH."""
    _need_bpe()
    from sid.testing import save_tiny, tiny_sd_pipeline

    return save_tiny(tiny_sd_pipeline(text_width=32), tmp_path_factory.mktemp("tiny") / "sd32")


@pytest.fixture(scope="session")
def tiny_model_wide(tmp_path_factory) -> Path:
    """A second tiny SD pipeline with a different text width (64), for compatibility checks."""
    _need_bpe()
    from sid.testing import save_tiny, tiny_sd_pipeline

    return save_tiny(tiny_sd_pipeline(text_width=64, seed=1), tmp_path_factory.mktemp("tiny") / "sd64")


@pytest.fixture(scope="session")
def tiny_sdxl_model(tmp_path_factory) -> Path:
    """A saved tiny SDXL pipeline (text encoders 32 + 64 wide), loadable with --model PATH."""
    _need_bpe()
    from sid.testing import save_tiny, tiny_sdxl_pipeline

    return save_tiny(tiny_sdxl_pipeline(), tmp_path_factory.mktemp("tiny") / "sdxl")


@pytest.fixture(scope="session")
def tiny_flux_model(tmp_path_factory) -> Path:
    """A saved tiny FluxPipeline (CLIP 32 + T5 48 wide, FLUX.1-dev's scheduler config), loadable with
    --model PATH."""
    _need_bpe()
    from sid.testing import save_tiny, tiny_flux_pipeline

    return save_tiny(tiny_flux_pipeline(), tmp_path_factory.mktemp("tiny") / "flux")


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A saved tiny random ViT face encoder (model + image processor), loadable with --vit-model PATH."""
    from sid.testing import save_tiny_vit

    return save_tiny_vit(tmp_path_factory.mktemp("tiny") / "vit")


@pytest.fixture(scope="session")
def tiny_parser(tmp_path_factory) -> Path:
    """A saved tiny random SegFormer face parser (CelebAMask-HQ labels), loadable with --face-parser PATH."""
    from sid.testing import save_tiny_face_parser

    return save_tiny_face_parser(tmp_path_factory.mktemp("tiny") / "parser")


@pytest.fixture(scope="session")
def facepack() -> Path:
    """The real SCRFD detector + a real recognizer from ../shared (skips when absent)."""
    if not (FACEPACK / "det_500m.onnx").is_file():
        pytest.skip(f"real face-model pack not found at {FACEPACK} (see ../shared/README.md)")
    return FACEPACK


@pytest.fixture(scope="session")
def face_photos() -> Path:
    """Real photos of two people from ../shared (skips when absent)."""
    if not (FACES / "obama_1.jpg").is_file():
        pytest.skip(f"real face photos not found at {FACES} (see ../shared/README.md)")
    return FACES


@pytest.fixture
def learn_args(tiny_model: Path, facepack: Path, tiny_vit: Path, tiny_parser: Path) -> list[str]:
    """`sid learn` options for a fully offline run: tiny SD pipeline, ViT and parser, real face pack."""
    return [
        *("--model", str(tiny_model), "--face-models", str(facepack), "--device", "cpu"),
        *("--vit-model", str(tiny_vit), "--face-parser", str(tiny_parser)),
    ]
