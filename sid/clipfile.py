"""Video files: frames written as mp4 (h264), webm (vp9) or an animated gif, whole or not at all.

The one writer of ``sid video``'s clips and ``sid 3d``'s turntables: ffmpeg through the binary that
imageio-ffmpeg ships, gifs with Pillow (one palette for all frames), each into a temporary file
renamed into place (``sid.files.atomic_path``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sid.errors import BadInput, WriteError, first_line
from sid.files import atomic_path

FORMATS = ("mp4", "gif", "webm")


def write_video(frames: Sequence[Any], path: Path, fps: float, fmt: str, comment: str = "") -> None:
    """Write (H, W, 3) uint8 frames as mp4, webm or gif; the file appears whole or not at all.

    The one video writer: ``sid video``'s clips and ``sid 3d``'s turntables."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown video format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    with atomic_path(path) as tmp:
        try:
            if fmt == "gif":
                _write_gif(frames, tmp, fps, comment)
            else:
                _write_ffmpeg(frames, tmp, fps, fmt, comment)
        except RuntimeError as e:  # ffmpeg's own failures; OSError (full disk) becomes WriteError
            raise WriteError(
                f"could not write {path}: {first_line(e)}", "check the folder and free space"
            ) from e


def _write_ffmpeg(frames: Any, path: Path, fps: float, fmt: str, comment: str) -> None:
    import numpy as np
    from imageio_ffmpeg import write_frames

    height, width = np.asarray(frames[0]).shape[:2]
    if fmt == "mp4":  # h264 in yuv420p plays everywhere; it needs even sizes (ours are multiples of 8)
        codec, params = "libx264", ["-crf", "18", "-preset", "medium", "-movflags", "+faststart"]
    else:  # webm: vp9 at constant quality
        codec, params = "libvpx-vp9", ["-crf", "30", "-b:v", "0", "-row-mt", "1"]
    if comment:
        params += ["-metadata", f"comment={comment}"]
    writer = write_frames(
        str(path),
        (int(width), int(height)),
        fps=float(fps),
        codec=codec,
        pix_fmt_out="yuv420p",
        quality=None,
        macro_block_size=2,
        ffmpeg_log_level="error",
        output_params=params,
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def _write_gif(frames: Any, path: Path, fps: float, comment: str) -> None:
    """An animated gif with one palette for all frames (per-frame palettes flicker)."""
    import numpy as np
    from PIL import Image

    sample = frames[:: max(1, len(frames) // 16)]  # the palette comes from up to ~16 frames
    palette = Image.fromarray(np.concatenate(list(sample), axis=0)).quantize(colors=256)
    images = [Image.fromarray(frame).quantize(palette=palette) for frame in frames]
    extra = {"comment": comment.encode("utf-8")} if comment else {}
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(int(round(1000 / fps)), 10),  # milliseconds per frame (gif keeps 1/100 s)
        loop=0,
        **extra,
    )
