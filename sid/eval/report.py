"""What ``sid eval`` writes besides the renders: the JSON report and the contact sheet.

Both go through ``sid.files``' atomic writers; the report is written last, so an ``eval.json`` on
disk always belongs to a finished run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sid.eval.metrics import ImageScore, aggregate, clipscore_100, summarize
from sid.eval.prompts import NEUTRAL, EvalPrompt

if TYPE_CHECKING:
    from PIL import Image

    from sid.eval.config import EvalConfig
    from sid.eval.reference import Reference

REPORT, SHEET = "eval.json", "contact_sheet.png"  # in the output folder, beside images/NAME/
CELL = 192  # contact-sheet thumbnail width in pixels

Scores = dict[str, list[list[ImageScore]]]  # identity -> one list of image scores per prompt


# ---------------------------------------------------------------- JSON report


def build_report(
    cfg: EvalConfig,
    prompts: list[EvalPrompt],
    names: list[str],
    refs: dict[str, Reference],
    scores: Scores,
    *,
    seed: int,
    size: tuple[int, int],
    model: str,
    clip_model: str | None,
    face_models: str,
) -> dict[str, Any]:
    """The JSON report (NaN as null); the keywords are what the run resolved from ``cfg``."""
    identities: dict[str, Any] = {}
    for name in names:
        groups = scores[name]
        categories: dict[str, list[list[ImageScore]]] = {}
        for prompt, group in zip(prompts, groups, strict=True):
            categories.setdefault(prompt.category or "uncategorised", []).append(group)
        identities[name] = {
            "reference": {"source": refs[name].source, "path": refs[name].path},
            "overall": aggregate(groups),
            "categories": {c: aggregate(g) for c, g in categories.items()},
            "prompts": [
                _prompt_entry(prompt, name, group) for prompt, group in zip(prompts, groups, strict=True)
            ],
        }
    settings = {
        "prompts": str(cfg.prompts),
        "per_prompt": cfg.per_prompt,
        "seed": seed,
        "seeds": [seed + j for j in range(cfg.per_prompt)],
        "steps": cfg.steps,
        "guidance": cfg.guidance,
        "size": list(size),
        "scheduler": cfg.scheduler,
        "model": model,
        "clip_model": clip_model,
        "clip_text": f"the prompt with {{}} replaced by {NEUTRAL!r}",
        "face_models": face_models,
    }
    report = {
        "settings": settings,
        "prompts": [
            {"template": p.template, "category": p.category, "clip_text": p.clip_text} for p in prompts
        ],
        "identities": identities,
    }
    return _json_safe(report)


def _prompt_entry(prompt: EvalPrompt, name: str, group: list[ImageScore]) -> dict[str, Any]:
    per_image = [
        {
            "path": s.path,
            "seed": s.seed,
            "faces": s.faces,
            "identity_similarity": s.identity,
            "clip_cosine": s.clip,
            "clip_score": None if s.clip is None else clipscore_100(s.clip),
        }
        for s in group
    ]
    return {
        "template": prompt.template,
        "category": prompt.category,
        "prompt": prompt.for_identity(name),
        **summarize(group),
        "per_image": per_image,
    }


def _json_safe(value: Any) -> Any:
    """NaN and infinities -> None, numpy scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_outputs(folder: Path, report: dict[str, Any], sheet: Image.Image) -> dict[str, Any]:
    """Write the contact sheet, then the report naming both files; returns that report."""
    from sid.files import atomic_path

    with atomic_path(folder / SHEET) as tmp:
        sheet.save(tmp)
    report = {**report, "contact_sheet": str(folder / SHEET), "json": str(folder / REPORT)}
    write_report(folder, report)
    return report


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """``eval.json`` in ``folder``, whole or not at all."""
    from sid.files import atomic_write

    atomic_write(folder / REPORT, (json.dumps(report, indent=2) + "\n").encode("utf-8"))


# ---------------------------------------------------------------- contact sheet


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def sheet_thumbnail(image: Image.Image, score: ImageScore, width: int = CELL) -> Image.Image:
    """The render at ``width`` px, the scored face outlined (kept instead of the full render)."""
    from PIL import Image, ImageDraw

    scale = width / image.width
    height = max(1, round(image.height * scale))
    thumb = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    if score.face_box is not None:
        x1, y1, x2, y2 = (v * scale for v in score.face_box)
        ImageDraw.Draw(thumb).rectangle((x1, y1, x2, y2), outline=(0, 220, 0), width=2)
    return thumb


def _caption(score: ImageScore) -> str:
    ident = "no face" if score.identity is None else f"ID {score.identity:.2f}"
    if score.faces > 1:
        ident += f" ({score.faces} faces)"
    clip = "" if score.clip is None else f"  CLIP {clipscore_100(score.clip):.1f}"
    return ident + clip


def contact_sheet(
    prompts: list[EvalPrompt],
    names: list[str],
    scores: Scores,
    thumbs: dict[str, list[list[Image.Image]]],
) -> Image.Image:
    """One row per prompt; one block of columns per identity; scores written under each image."""
    from PIL import Image, ImageDraw

    font, small = _font(14), _font(12)
    per = max(len(row) for n in names for row in thumbs[n])
    cell_w = CELL
    cell_h = max(t.height for n in names for row in thumbs[n] for t in row)
    label_w, caption_h, header_h, gap = 220, 22, 28, 12
    block_w = per * cell_w
    width = label_w + len(names) * block_w + (len(names) - 1) * gap
    height = header_h + len(prompts) * (cell_h + caption_h + 6)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(names):
        x0 = label_w + k * (block_w + gap)
        draw.text((x0 + 4, 6), name, fill=(0, 0, 0), font=font)
    for p_index, prompt in enumerate(prompts):
        y = header_h + p_index * (cell_h + caption_h + 6)
        _wrap(draw, prompt.template, (6, y + 4), label_w - 12, font)
        for k, name in enumerate(names):
            x0 = label_w + k * (block_w + gap)
            for j, (thumb, score) in enumerate(
                zip(thumbs[name][p_index], scores[name][p_index], strict=True)
            ):
                sheet.paste(thumb, (x0 + j * cell_w, y))
                colour = (170, 0, 0) if score.identity is None else (0, 0, 0)
                draw.text((x0 + j * cell_w + 3, y + cell_h + 4), _caption(score), fill=colour, font=small)
    return sheet


def _wrap(draw: Any, text: str, at: tuple[int, int], width: int, font: Any) -> None:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    draw.multiline_text(at, "\n".join(lines), fill=(0, 0, 0), font=font, spacing=3)
