"""The settings of one ``sid eval`` run: the runner executes them, the report records them.

Its own module so that ``report`` and ``runner`` both read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sid.eval.clip import DEFAULT_CLIP_MODEL
from sid.eval.prompts import BUILTIN, DEFAULT_PER_PROMPT, DEFAULT_SEED
from sid.render import RenderConfig


@dataclass
class EvalConfig:
    names: list[str]
    prompts: str = BUILTIN  # "builtin" or a file
    per_prompt: int = DEFAULT_PER_PROMPT
    seed: int | None = DEFAULT_SEED  # image j of every prompt uses seed + j, for every identity
    steps: int | None = None  # None: the model family's default, as sid render
    guidance: float | None = None
    size: str | None = None  # "WxH"; None: the model's native size
    scheduler: str | None = None
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    clip_model: str | None = DEFAULT_CLIP_MODEL  # None or "none": skip the CLIP score
    face_models: str | None = None
    photos: list[Path] = field(default_factory=list)  # none, one for all names, or one per name
    out_dir: str | Path | None = None  # default: sid-eval/NAME (or sid-eval/A+B for several)
    force: bool = False  # overwrite the files of an earlier run in out_dir

    def output_folder(self) -> Path:
        return Path(self.out_dir) if self.out_dir is not None else Path("sid-eval") / "+".join(self.names)

    def render_config(self, prompt: str, seed: int | None = None, model: str | None = None) -> RenderConfig:
        """``sid render``'s settings for one prompt of this run (``seed``, ``model``: as resolved)."""
        return RenderConfig(
            prompt=prompt,
            count=self.per_prompt,
            seed=seed,
            steps=self.steps,
            guidance=self.guidance,
            size=self.size,
            scheduler=self.scheduler,
            model=model,
            device=self.device,
            dtype=self.dtype,
            out_dir=self.output_folder(),
        )
