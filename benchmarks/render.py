"""``sid.render.render`` against the plain diffusers pipeline: same model, scheduler, steps, seed and size.

    python -m benchmarks.render --arch tiny --device cpu
    python -m benchmarks.render --arch sd21 --device cuda --steps 30

Two comparisons, each the median of ``--runs`` interleaved runs after one warm-up of each:
- end to end (``sid_s_median`` / ``plain_s_median`` = ``ratio``): ``render()`` with a stored identity
  in the prompt (check, load the model, load the identity, generate, write a PNG with metadata) against
  ``DiffusionPipeline.from_pretrained`` + the same scheduler + ``pipe(...)`` + ``image.save``;
- generation only (``generate_ratio``): on already loaded pipelines, sid's ``generate`` with the
  identity's tokens in the prompt against ``pipe(...)`` with a plain word in its place, so the
  identity injection's own cost shows.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Clock,
    LoadMeter,
    add_common_args,
    device_name,
    emit,
    log,
    median,
    model_folder,
    set_threads,
    stdout_to_stderr,
    today,
    versions,
)

PROMPT = "a photo of {} as a knight"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.render", description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--steps", type=int, default=30, help="denoising steps (sid's default 30)")
    p.add_argument("--size", default=None, help="WxH (default: the model's native size)")
    p.add_argument("--runs", type=int, default=7, help="timed runs of each, after one warm-up")
    p.add_argument("--dtype", default="auto", help="auto | fp16 | bf16 | fp32 (as sid render --dtype)")
    p.add_argument("--scheduler", default="dpm++", help="a sid scheduler name (default dpm++)")
    return p


def store_identity(root: Path, folder: Path, name: str = "alice") -> Any:
    """An IdentityStore holding one identity with random vectors for each of the model's text encoders.

    The identity carries the encoders' real fingerprints, as a learned one does, so that rendering
    checks them (and warns about nothing) exactly as ``sid render`` does.
    """
    import numpy as np
    from transformers import CLIPTextModel

    from sid.families import slot_for_width
    from sid.prompts import fingerprint
    from sid.store import Identity, IdentityStore

    rng = np.random.default_rng(0)
    vectors, fingerprints = {}, {}
    for sub in ("text_encoder", "text_encoder_2"):
        if (folder / sub / "config.json").is_file():
            encoder = CLIPTextModel.from_pretrained(str(folder / sub))
            width = encoder.get_input_embeddings().weight.shape[-1]
            slot = slot_for_width(width)
            vectors[slot] = (rng.standard_normal((2, width)) * 0.01).astype(np.float32)
            fingerprints[slot] = fingerprint(encoder)
            del encoder
    store = IdentityStore(root / "identities")
    identity = Identity(
        name=name, vectors=vectors, method="stableidentity", base_model=str(folder), fingerprints=fingerprints
    )
    store.save(identity, overwrite=True)
    return store


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="sid-bench-render-") as tmp:
        import torch
        from diffusers import DiffusionPipeline

        from sid.config import RENDER_GUIDANCE
        from sid.pipelines import pick_device, pick_dtype
        from sid.render import (
            RenderConfig,
            generate,
            load_render_pipeline,
            native_size,
            parse_size,
            prepare,
            set_scheduler,
        )
        from sid.render import render as sid_render

        set_threads(args.threads)
        device = pick_device(args.device)
        folder = model_folder(args.arch)
        store = store_identity(Path(tmp), folder)
        cfg = RenderConfig(
            PROMPT.format("alice"),
            count=1,
            seed=0,
            steps=args.steps,
            guidance=RENDER_GUIDANCE,  # given, as steps and scheduler: both sides sample alike
            size=args.size,
            scheduler=args.scheduler,
            model=str(folder),
            device=device,
            dtype=args.dtype,
            out_dir=Path(tmp) / "sid",
            force=True,  # every timed run writes the same image again
        )
        torch_dtype = pick_dtype(device, args.dtype)
        plain_prompt = PROMPT.format("a man")  # a plain word where the identity goes: same 77-token length

        def plain_pipeline() -> Any:
            pipe = DiffusionPipeline.from_pretrained(str(folder), dtype=torch_dtype, local_files_only=True)
            pipe = pipe.to(device)
            set_scheduler(pipe, args.scheduler)  # the same diffusers scheduler class and config sid uses
            return pipe

        def plain_call(pipe: Any, size: tuple[int, int]) -> Any:
            generator = torch.Generator("cpu").manual_seed(0)
            return pipe(
                plain_prompt,
                num_inference_steps=args.steps,
                guidance_scale=cfg.guidance,
                width=size[0],
                height=size[1],
                generator=generator,
            ).images[0]

        def plain_end_to_end() -> None:
            pipe = plain_pipeline()
            plain_call(pipe, parse_size(args.size) or native_size(pipe)).save(Path(tmp) / "plain.png")

        clock = Clock(device)

        def timed(fn: Any) -> float:
            t0 = clock.now()
            fn()
            return clock.now() - t0

        def alternate(sid_fn: Any, plain_fn: Any) -> tuple[list[float], list[float]]:
            """Interleave the two, swapping which goes first each round, so that drifts and cache
            effects hit both alike; the first round is the warm-up."""
            sid_times, plain_times = [], []
            for i in range(args.runs + 1):
                if i % 2:
                    p, s = timed(plain_fn), timed(sid_fn)
                else:
                    s, p = timed(sid_fn), timed(plain_fn)
                if i:
                    sid_times.append(s)
                    plain_times.append(p)
            return sid_times, plain_times

        with LoadMeter() as load:
            log(f"render: end to end on {args.arch} ({device}), {args.steps} steps, {args.runs} runs each")
            warnings: list[str] = []  # sid render passes a warn callback: fingerprints get checked
            sid_times, plain_times = alternate(
                lambda: sid_render(cfg, store=store, warn=warnings.append), plain_end_to_end
            )

            log("render: generation only")
            sid_pipe, _, _ = load_render_pipeline(cfg)
            parsed, _ = prepare(cfg.prompt, store, sid_pipe, warnings.append)
            plain_pipe = plain_pipeline()
            size = parse_size(args.size) or native_size(sid_pipe)
            gen_sid, gen_plain = alternate(
                lambda: generate(sid_pipe, parsed.text, [0], args.steps, cfg.guidance, size=size),
                lambda: plain_call(plain_pipe, size),
            )
        result = {
            "benchmark": "render",
            "device": device_name(device),
            "arch": args.arch,
            "steps": args.steps,
            "size": f"{size[0]}x{size[1]}",
            "sid_s_median": median(sid_times),
            "plain_s_median": median(plain_times),
            "ratio": median(sid_times) / median(plain_times),
            "date": today(),
            "sid_generate_s_median": median(gen_sid),
            "plain_generate_s_median": median(gen_plain),
            "generate_ratio": median(gen_sid) / median(gen_plain),
            "timed_runs": args.runs,
            "sid_s_all": [round(x, 4) for x in sid_times],
            "plain_s_all": [round(x, 4) for x in plain_times],
            "warnings": sorted(set(warnings)),
            "scheduler": args.scheduler,
            "dtype": str(torch_dtype).replace("torch.", ""),
            "identity_tokens": parsed.text,
            "other_load_cores": load.other_cores,
            "versions": versions(),
        }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
