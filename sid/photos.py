"""Reading a user's photo safely: EXIF orientation, colour modes, and clear errors for what is not one.

Every photo sid reads (learn, eval, ControlNet inputs) goes through ``load_photo``: it refuses
decompression bombs, truncated and non-image files with one-line errors, applies the EXIF rotation and
returns RGB (transparency over white, CMYK through its profile, 16-bit scaled, not clipped).
"""

from __future__ import annotations

import hashlib
import io
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sid.errors import BadInput, first_line
from sid.files import kind_of

if TYPE_CHECKING:
    from PIL import Image

MIN_SIDE = 32  # smaller photos cannot hold a usable face
MAX_ASPECT = 20  # a longer strip is no photo of a face: scaled for the detector, its short side vanishes
MAX_PIXELS = 120_000_000  # above every phone/DSLR photo sid needs; guards against decompression bombs
# The raster formats a photo comes in, as Pillow names them; HEIF (HEIC) only where a plugin such as
# pillow-heif registered it. Nothing else is ever opened: Pillow would run an EPS file through Ghostscript.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "HEIF")
FORMATS_HINT = "give a JPEG, PNG, WebP, BMP or TIFF photo"


def load_photo(path: str | Path) -> Image.Image:
    """The photo at ``path`` as an upright RGB image, or a BadInput that says what is wrong with it."""
    path = Path(path)
    return decode_photo(read_photo_file(path), path)


def check_photo_file(path: Path) -> None:
    """BadInput unless ``path`` is a regular file: a folder, a device (``/dev/null``) or a FIFO is called
    what it is (reading a FIFO would wait forever), a missing file "not found"."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BadInput(f"photo {path} not found", "check the path") from None
    except OSError as e:
        raise BadInput(f"could not read photo {path}: {first_line(e)}", "check the path") from e
    if not stat.S_ISREG(mode):
        raise BadInput(f"{path} is {kind_of(mode)}, not a photo", "give the path of one image file")


def read_photo_file(path: Path) -> bytes:
    check_photo_file(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"photo {path} not found", "check the path") from None
    except OSError as e:
        raise BadInput(f"could not read photo {path}: {first_line(e)}", "check the file's permissions") from e


def photo_sha256(data: bytes) -> str:
    """The photo fingerprint an identity records (``Identity.photo_sha256``): the file's bytes, hashed."""
    return hashlib.sha256(data).hexdigest()


def decode_photo(data: bytes, path: Path, formats: tuple[str, ...] = PHOTO_FORMATS) -> Image.Image:
    """Decode (only ``formats``), refuse bombs and damaged files, apply EXIF orientation, normalise to RGB."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadInput(f"photo {path} is empty (0 bytes)", FORMATS_HINT)
    Image.init()  # every plugin registered, so a HEIF one installed counts
    allowed = [f for f in formats if f in Image.OPEN]
    too_big = BadInput(
        f"photo {path} is too large (more than {MAX_PIXELS // 1_000_000} megapixels)",
        "downscale it, e.g. to 4000 px on the long side; a face needs far less",
    )
    try:
        with warnings.catch_warnings():
            # sid applies its own limit (MAX_PIXELS) below; Pillow's softer warning would only be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=allowed)
            if img.width * img.height > MAX_PIXELS:
                raise too_big
            img.load()
    except UnidentifiedImageError:
        found = _format_of(data)
        if found is not None:
            raise BadInput(f"{path} is in {found} format, which sid never opens", FORMATS_HINT) from None
        raise BadInput(f"{path} is not an image sid can read", FORMATS_HINT) from None
    except Image.DecompressionBombError:
        raise too_big from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadInput(
            f"photo {path} is damaged or truncated ({first_line(e)})", "re-export or re-download the photo"
        ) from e
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF metadata: the pixels are still a usable photo, as stored
        pass
    if min(img.size) < MIN_SIDE:
        raise BadInput(
            f"photo {path} is only {img.width}x{img.height} pixels",
            f"use a photo at least {MIN_SIDE} px on each side (a face of 256 px or more works best)",
        )
    if max(img.size) > MAX_ASPECT * min(img.size):
        raise BadInput(
            f"photo {path} is {img.width}x{img.height} pixels, a strip rather than a photo",
            f"crop it to the face (sides at most {MAX_ASPECT} times as long as each other)",
        )
    try:
        return _to_rgb(img)
    except (ValueError, OSError) as e:
        raise BadInput(
            f"photo {path} uses colour mode {img.mode}, which sid cannot convert ({first_line(e)})",
            "save it as an 8-bit RGB JPEG or PNG",
        ) from e


def _format_of(data: bytes) -> str | None:
    """The image format Pillow recognises by the file's first bytes, to name in an error; nothing is parsed
    (only each plugin's check of the signature runs)."""
    from PIL import Image

    prefix = data[:16]
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a plugin's signature check failing on odd bytes: not that format
            continue
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: 16-bit scaled (not clipped), transparency over white, CMYK via its profile."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        # Pillow's own convert() clips 16-bit values at 255, turning most of the photo white
        wide = np.asarray(img).astype(np.float32)
        return Image.fromarray(np.round(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode == "CMYK" and img.info.get("icc_profile"):
        return _cmyk_with_profile(img)
    return img.convert("RGB")


def _cmyk_with_profile(img: Image.Image) -> Image.Image:
    """CMYK through the photo's own ICC profile to sRGB; the plain formula when the profile is unusable."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        return ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img.convert("RGB")
