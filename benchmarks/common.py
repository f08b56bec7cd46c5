"""Shared pieces of the benchmarks: models built from configs, device names, peak memory, JSON output.

Full-size models are built from the published architectures with random weights (a random UNet
times exactly like a trained one), saved once with ``save_pretrained`` to a cache folder and then
loaded back through ``--model FOLDER``, the code path users hit. Full-size models are built in a
child process so that the benchmark's own peak memory only counts what sid itself loads.

Run ``python -m benchmarks.common build ARCH`` to build (or find) a model folder and print its path.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SID_TEST_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BUNDLE = REPO / ".gpu-bundle"  # what ``python -m benchmarks.bundle`` prepares for a GPU machine (git-ignored)
SHARED_PHOTO, SHARED_FACES = SHARED / "faces" / "obama_1.jpg", SHARED / "models" / "facepack"
# ../shared where it exists (this machine), else the bundle's copy (a GPU machine, where ../shared is absent)
DEFAULT_PHOTO = SHARED_PHOTO if SHARED_PHOTO.is_file() else BUNDLE / "photo.jpg"
DEFAULT_FACE_MODELS = SHARED_FACES if SHARED_FACES.is_dir() else BUNDLE / "facepack"
ARCHS = ("tiny", "sd15", "sd21", "sdxl")  # image models a benchmark's --arch names
VIDEO_ARCHS = ("tiny-t2v", "ms")  # text-to-video pipelines: tiny, and ModelScope's 1.7b layout
MODELS = (*ARCHS, "tiny-sdxl", *VIDEO_ARCHS)  # everything model_folder builds

# -- full-size architectures (the published diffusers configs, minus weights) -------------------------
_SD_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "center_input_sample": False,
}
SD15_UNET = {**_SD_UNET, "cross_attention_dim": 768, "attention_head_dim": 8}
SD21_UNET = {  # stable-diffusion-2-1-base
    **_SD_UNET,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}
SDXL_UNET = {  # stable-diffusion-xl-base-1.0
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
_CLIP_TEXT = {
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "layer_norm_eps": 1e-5,
}
CLIP_VIT_L = {
    **_CLIP_TEXT,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
OPENCLIP_VIT_H = {
    **_CLIP_TEXT,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,  # 23 of ViT-H's 24 layers, as diffusers ships SD2's text encoder
    "hidden_act": "gelu",
    "projection_dim": 512,
}
OPENCLIP_VIT_BIGG = {
    **_CLIP_TEXT,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
SD_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
MS_UNET = {  # text-to-video-ms-1.7b's UNet3DConditionModel (about 1.4B parameters)
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
    "up_block_types": ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1024,
    "attention_head_dim": 64,
}
SDXL_VAE = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
SD_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "prediction_type": "epsilon",
}
SDXL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

FULL_SIZE: dict[str, dict[str, Any]] = {
    "sd15": {"unet": SD15_UNET, "text_encoder": CLIP_VIT_L, "vae": SD_VAE, "scheduler": SD_SCHEDULER},
    "sd21": {"unet": SD21_UNET, "text_encoder": OPENCLIP_VIT_H, "vae": SD_VAE, "scheduler": SD_SCHEDULER},
    "ms": {"unet": MS_UNET, "text_encoder": OPENCLIP_VIT_H, "vae": SD_VAE, "scheduler": SD_SCHEDULER},
    "sdxl": {
        "unet": SDXL_UNET,
        "text_encoder": CLIP_VIT_L,
        "text_encoder_2": OPENCLIP_VIT_BIGG,
        "vae": SDXL_VAE,
        "scheduler": SDXL_SCHEDULER,
    },
}


def build_pipeline(arch: str, seed: int = 0) -> Any:
    """A diffusers pipeline of ``arch`` with random weights and the real CLIP tokenizer."""
    import torch

    from sid.testing import clip_tokenizer, tiny_sd_pipeline, tiny_sdxl_pipeline, tiny_t2v_pipeline

    tiny = {
        "tiny": lambda: tiny_sd_pipeline(text_width=32, seed=seed),
        "tiny-sdxl": lambda: tiny_sdxl_pipeline(seed=seed),
        "tiny-t2v": lambda: tiny_t2v_pipeline(text_width=64, seed=seed),
    }
    if arch in tiny:
        return tiny[arch]()
    if arch not in FULL_SIZE:
        raise ValueError(f"unknown arch {arch!r}; use one of {', '.join(MODELS)}")
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        TextToVideoSDPipeline,
        UNet2DConditionModel,
        UNet3DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = FULL_SIZE[arch]
    torch.manual_seed(seed)
    unet = (UNet3DConditionModel if arch == "ms" else UNet2DConditionModel)(**spec["unet"])
    vae = AutoencoderKL(**spec["vae"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text_encoder"])).eval()
    if arch == "ms":
        ddim = {k: v for k, v in spec["scheduler"].items() if k != "skip_prk_steps"}
        scheduler = DDIMScheduler(**ddim, clip_sample=False)  # as ModelScope's scheduler config
        return TextToVideoSDPipeline(
            unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), scheduler=scheduler
        )
    if arch == "sdxl":
        return StableDiffusionXLPipeline(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**spec["text_encoder_2"])).eval(),
            tokenizer=clip_tokenizer(),
            tokenizer_2=clip_tokenizer(),
            scheduler=EulerDiscreteScheduler(**spec["scheduler"]),
        )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        scheduler=PNDMScheduler(**spec["scheduler"]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def cache_root() -> Path:
    return Path(os.environ.get("SID_BENCH_CACHE") or Path(tempfile.gettempdir()) / "sid-bench-models")


def _cache_key(arch: str) -> str:
    import diffusers
    import transformers

    spec = FULL_SIZE.get(arch, "tiny")
    blob = json.dumps([spec, diffusers.__version__, transformers.__version__], sort_keys=True, default=str)
    return f"{arch}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def model_folder(arch: str) -> Path:
    """A saved diffusers folder of ``arch`` (random weights), built once into the cache.

    Full-size models are built in a child process (several GB of fp32 weights), tiny ones in-process.
    """
    if arch not in MODELS:
        raise SystemExit(f"unknown --arch {arch!r}; use one of {', '.join(MODELS)}")
    folder = cache_root() / _cache_key(arch)
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{arch}-", dir=folder.parent))
    if arch not in FULL_SIZE:
        build_pipeline(arch).save_pretrained(str(staging))
    else:
        log(f"building a random-weight {arch} pipeline into {folder} (once) ...")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        subprocess.run(
            [sys.executable, "-m", "benchmarks.common", "save", arch, str(staging)],
            check=True,
            cwd=REPO,
            env=env,
            stdout=sys.stderr,
        )
    try:
        staging.rename(folder)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return folder


# -- face encoder and face parser (random weights) ------------------------------------------------------
VIT_BASE: dict[str, Any] = {}  # ViTConfig's defaults are ViT-B/16 at 224², the paper's face encoder's size
SEGFORMER_B5 = {  # jonathandinu/face-parsing is a SegFormer-b5 (nvidia/mit-b5 encoder)
    "depths": [3, 6, 40, 3],
    "hidden_sizes": [64, 128, 320, 512],
    "num_attention_heads": [1, 2, 5, 8],
    "decoder_hidden_size": 768,
}


def face_model_folders(arch: str) -> tuple[Path, Path]:
    """(ViT face encoder, face parser) folders: tiny ones for tiny models, else full size; built once."""
    import transformers

    size = "tiny" if arch.startswith("tiny") else "full"
    folder = cache_root() / f"faces-{size}-{transformers.__version__}"
    if not (folder / "parser" / "preprocessor_config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".faces-{size}-", dir=folder.parent))
        log(f"building random-weight {size} face encoder and parser into {folder} (once) ...")
        save_face_models(size == "tiny", staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return folder / "vit", folder / "parser"


def save_face_models(tiny: bool, folder: Path) -> None:
    """A ViT face encoder and a SegFormer face parser (CelebAMask-HQ labels) with random weights."""
    from sid.testing import FACE_PARSING_LABELS, save_tiny_face_parser, save_tiny_vit

    if tiny:
        save_tiny_vit(folder / "vit")
        save_tiny_face_parser(folder / "parser")
        return
    import torch
    from transformers import (
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    torch.manual_seed(0)
    ViTModel(ViTConfig(**VIT_BASE)).eval().save_pretrained(folder / "vit")
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder / "vit")
    labels = dict(enumerate(FACE_PARSING_LABELS))
    config = SegformerConfig(**SEGFORMER_B5, id2label=labels, label2id={v: k for k, v in labels.items()})
    SegformerForSemanticSegmentation(config).eval().save_pretrained(folder / "parser")
    SegformerImageProcessor(size={"height": 512, "width": 512}).save_pretrained(folder / "parser")


# -- machine, timing, memory ---------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """``torch.cuda.get_device_name()`` on CUDA, else the CPU model and its core count."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    if device.startswith("mps"):
        return f"Apple MPS ({platform.processor() or platform.machine()})"
    return f"{cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
    elif device.startswith("mps"):
        torch.mps.synchronize()


def reset_peak_memory(device: str) -> None:
    """Start a new peak: CUDA's allocator statistics, or the kernel's RSS high-water mark on CPU."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def peak_memory_gb(device: str) -> tuple[float, str]:
    """(GB, what was measured): CUDA max allocated, else the process's peak RSS."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 1e9, "torch.cuda.max_memory_allocated"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):  # peak RSS since the last reset_peak_memory
                return int(line.split()[1]) * 1024 / 1e9, "process peak RSS (VmHWM, reset before the run)"
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb * 1024 / 1e9, "process max RSS (getrusage, since process start)"


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


class Clock:
    """perf_counter stamps with a device sync before each one."""

    def __init__(self, device: str) -> None:
        self.device = device

    def now(self) -> float:
        sync(self.device)
        return time.perf_counter()


class StepTimer:
    """A progress callback that stamps every call (after a device sync): per-step times of a loop."""

    def __init__(self, device: str) -> None:
        self.clock = Clock(device)
        self.stamps: list[float] = []

    def __call__(self, *_: object) -> None:
        self.stamps.append(self.clock.now())

    def step_ms(self, start: float, warmup: int) -> list[float]:
        """Milliseconds of each step after the first ``warmup`` ones; ``start`` stamps the loop's start."""
        marks = [start, *self.stamps]
        return [(b - a) * 1e3 for a, b in zip(marks[:-1], marks[1:], strict=True)][warmup:]


class LoadMeter:
    """How many cores other processes kept busy, on average, while the block ran (Linux; else None).

    CPU timings on a shared machine are only worth reading when this is near 0: with torch's threads
    competing for cores, steps can slow down many times over.
    """

    other_cores: float | None = None

    @staticmethod
    def _busy_s() -> float:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def __enter__(self) -> LoadMeter:
        try:
            self._start = (time.perf_counter(), self._busy_s(), self._own_s())
        except (OSError, ValueError, IndexError):
            self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        t0, busy0, own0 = self._start
        wall = time.perf_counter() - t0
        other = (self._busy_s() - busy0) - (self._own_s() - own0)
        self.other_cores = round(max(0.0, other) / wall, 3) if wall > 0 else None


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cuda": str(torch.version.cuda),
    }


def today() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- inputs and output ---------------------------------------------------------------------------------
def require_faces(photo: Path, face_models: Path) -> tuple[Path, Path]:
    """The photo and face-model pack, or a clear exit when they are missing."""
    if not Path(photo).is_file():
        raise SystemExit(
            f"benchmark photo {photo} not found: pass --photo, or put the test data at {SHARED} "
            "(see ../shared/README.md)"
        )
    if not any(Path(face_models).glob("*.onnx")):
        raise SystemExit(
            f"no face models (.onnx) in {face_models}: pass --face-models, or put the test data "
            f"at {SHARED} (see ../shared/README.md)"
        )
    return Path(photo), Path(face_models)


def add_common_args(
    parser: argparse.ArgumentParser, arch: str = "tiny", archs: tuple[str, ...] = ARCHS
) -> None:
    parser.add_argument("--arch", default=arch, choices=archs, help="model architecture (random weights)")
    parser.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for the one JSON object: anything else printed goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def emit(result: dict[str, Any], out: Path | None) -> dict[str, Any]:
    text = json.dumps(result, indent=2, sort_keys=False, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    return result


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.common")
    sub = parser.add_subparsers(dest="command", required=True)
    save = sub.add_parser("save", help="build ARCH with random weights and save it to FOLDER")
    save.add_argument("arch", choices=MODELS)
    save.add_argument("folder", type=Path)
    build = sub.add_parser("build", help="build ARCH into the cache (once) and print its folder")
    build.add_argument("arch", choices=MODELS)
    args = parser.parse_args(argv)
    if args.command == "save":
        import torch

        # random initialisation of ~1B parameters takes seconds on a GPU, minutes on a CPU
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            pipe = build_pipeline(args.arch)
        pipe.to("cpu").save_pretrained(str(args.folder))
    else:
        print(model_folder(args.arch))


if __name__ == "__main__":
    _main()
