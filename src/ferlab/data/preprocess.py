"""The one preprocessing path shared by training, evaluation, prediction, export and serving.

Two steps, kept apart because they run in different places:

* `to_gray48` turns any image (path, PIL image, numpy array; any size, any colour)
  into the stored form: a 48x48 uint8 grayscale array. Data ingest and prediction
  both call it, so a face crop is resized exactly as training data was.
* `preprocess` turns stored uint8 pixels into the float tensor the network sees.
  Training calls it on the device after augmentation; the parameters travel in
  every checkpoint so inference can never drift from training.

`decode_image` is the one decoder of image files and uploads. Depends on errors, PIL and
numpy only (torch is imported only when given a tensor).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..core.errors import InputError, UserError

IMAGE_SIZE = 48


@dataclass(frozen=True)
class Preprocessing:
    image_size: int = IMAGE_SIZE
    # Roughly FER2013's pixel statistics (mean 0.508, std 0.255 after /255),
    # rounded so the numbers are easy to reproduce in any runtime.
    mean: float = 0.5
    std: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __post_init__(self):
        # A checkpoint from elsewhere can carry any numbers: a zero std divides by zero.
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) \
                or not 8 <= self.image_size <= 1024:
            raise InputError(f"image_size must be a whole number from 8 to 1024, got {self.image_size!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}")
        if not self.std > 0:
            raise InputError(f"std must be positive, got {self.std!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        if not isinstance(d, dict):
            raise InputError(f"must be a mapping of image_size, mean and std, got {type(d).__name__}")
        unknown = sorted(set(d) - {"image_size", "mean", "std"})
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(map(str, unknown))}")
        return cls(**d)


class ImageError(UserError, ValueError):
    """An image that cannot be used: undecodable, or larger than the pixel cap."""


# Decoding cap, in pixels: a small PNG can inflate to 12000x12000 (~430 MB as RGB).
# Override per call, or for a whole process with FERLAB_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 40_000_000


def max_pixels_setting() -> int:
    """The pixel cap: FERLAB_MAX_PIXELS where set (read at each call), else the default."""
    text = os.environ.get("FERLAB_MAX_PIXELS", "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ImageError(f"FERLAB_MAX_PIXELS must be a positive whole number of pixels, got {text!r}")
    return int(text)


def jpeg_scale(pixels: int, limit: int) -> int:
    """The power of two (libjpeg decodes at 1/2, 1/4, 1/8) that brings `pixels` under
    `limit`; libjpeg's draft mode keeps the size at or above what is asked, so asking for
    1/3 would decode at 1/2, still over the limit."""
    return 2 ** math.ceil(math.log2(math.sqrt(pixels / limit)))


def decode_image(source: str | Path | bytes, max_pixels: int | None = None,
                 gray: bool = False) -> Image.Image:
    """Open an image file or in-memory bytes (an upload), honour its EXIF orientation,
    and decode it fully now. `gray`: the caller needs gray only, so a JPEG decodes its
    luma alone (libjpeg skips the colour conversion: 640x480 in ~2 ms instead of ~5.5,
    benchmarks/everyday.py --only decode).

    The one image decoder: ingest, prediction and the server all come through here.
    The size is checked from the header, before any pixel is decoded: a JPEG over
    `max_pixels` is decoded at a reduced scale (libjpeg's draft mode), anything else
    over it is refused. Decoding here (not lazily) makes truncated files fail at this
    call, where the caller can still name the file.
    """
    limit = max_pixels_setting() if max_pixels is None else max_pixels
    raw = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(raw) as im:
            w, h = im.size
            # Not CMYK: its luma is not one stored channel.
            mode = "L" if gray and im.mode in ("RGB", "L") else im.mode
            if w * h > limit and im.format == "JPEG":
                scale = jpeg_scale(w * h, limit)
                im.draft(mode, (w // scale, h // scale))  # decodes at 1/2, 1/4 or 1/8 scale
            elif mode != im.mode and im.format == "JPEG":
                im.draft(mode, (w, h))
            if im.size[0] * im.size[1] > limit:
                raise ImageError(f"image of {w}x{h} pixels is over the limit of {limit:,} pixels "
                                 "(FERLAB_MAX_PIXELS)")
            im = ImageOps.exif_transpose(im)
            im.load()
            return im.copy()
    except Image.DecompressionBombError as e:
        raise ImageError(str(e)) from e
    except (ImageError, FileNotFoundError):
        raise
    except Exception as e:  # PIL raises many types for a broken file (OSError, SyntaxError, ...)
        raise ImageError(f"unreadable or truncated image ({e})") from e


load_image = decode_image  # the name ingest and older callers use for files

# Peak bytes per pixel of decoding an image through `as_rgb_array(..., gray=True)` and
# `faces.to_gray`, measured with VmHWM on 16 MP images (rounded up): gray (an L PNG, a JPEG's luma) 3,
# RGB 13.5, 16-bit gray 15, palette 16, RGBA 19 (the copies: decode, alpha over white, RGB,
# array, gray). Everything not stored as one 8-bit gray channel counts as the worst.
GRAY_BYTES_PER_PIXEL, OTHER_BYTES_PER_PIXEL = 4, 20


def decode_cost(source: bytes, max_pixels: int | None = None, gray: bool = True) -> int:
    """Bytes that decoding `source` (an upload) to gray will take at its peak, read from the
    header alone; what the server reserves from its decode budget before decoding."""
    limit = max_pixels_setting() if max_pixels is None else max_pixels
    try:
        with Image.open(io.BytesIO(source)) as im:
            w, h = im.size
            if w * h > limit and im.format == "JPEG":  # decoded at a reduced scale (decode_image)
                scale = jpeg_scale(w * h, limit)
                w, h = -(-w // scale), -(-h // scale)
            elif w * h > limit:  # what decode_image would refuse, refused the same way
                raise ImageError(f"image of {w}x{h} pixels is over the limit of {limit:,} pixels "
                                 "(FERLAB_MAX_PIXELS)")
            single = im.mode == "L" or (gray and im.format == "JPEG" and im.mode == "RGB")
    except Image.DecompressionBombError as e:
        raise ImageError(str(e)) from e
    return w * h * (GRAY_BYTES_PER_PIXEL if single else OTHER_BYTES_PER_PIXEL)


def to_uint8_image(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit gray (PNG, TIFF) scaled to 8 bits instead of clipped to white;
    every other mode unchanged."""
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return image
    full = 65535.0 if image.mode.startswith("I;16") else None  # a 16-bit mode says its range
    return Image.fromarray(float_to_uint8(np.asarray(image), full), "L")


def as_rgb_array(image: Any, max_pixels: int | None = None, gray: bool = False) -> np.ndarray:
    """A path, bytes, PIL image or numpy array -> uint8 RGB (or gray for gray sources) array.

    Palette, alpha (over white), CMYK, 16-bit and EXIF-rotated images all arrive as
    what a viewer shows. `gray=True` (detection and classification need no colour): a
    JPEG file or upload may come back gray, decoded faster (see decode_image)."""
    if isinstance(image, (str, Path, bytes, bytearray)):
        image = decode_image(image, max_pixels, gray=gray)
    if isinstance(image, Image.Image):
        image = to_uint8_image(image)
        if image.mode in ("RGBA", "LA", "PA", "P") or "transparency" in image.info:
            image = _over_white(image)
        image = np.asarray(image if image.mode == "L" else image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        image = float_to_uint8(image)
    return image


def _over_white(image: Image.Image) -> Image.Image:
    """Transparent pixels shown over white, as a viewer shows them; RGB out."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_gray48(image: Any, size: int = IMAGE_SIZE) -> np.ndarray:
    """Any image -> (size, size) uint8 grayscale. Returns the array unchanged if already so."""
    if isinstance(image, (str, Path)):
        image = load_image(image)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.dtype != np.uint8:
            arr = float_to_uint8(arr)
        if arr.shape == (size, size):
            return arr
        image = Image.fromarray(arr)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
    image = to_uint8_image(image)
    if image.mode != "L":
        # Alpha over white, then ITU-R 601 luma: what PIL and OpenCV both use for gray.
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            image = _over_white(image)
        image = image.convert("L")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(image, dtype=np.uint8)


def float_to_uint8(arr: np.ndarray, full_scale: float | None = None) -> np.ndarray:
    """Numeric pixels -> uint8. `full_scale` is the value that means white; by default
    1.0 for data within 0-1, 65535 for data above 255 (16-bit), else 255."""
    arr = np.asarray(arr, dtype=np.float32)
    if full_scale is None:
        top = float(np.nanmax(arr)) if arr.size else 0.0
        full_scale = 1.0 if top <= 1.0 else 65535.0 if top > 255.0 else 255.0
    return np.clip(np.rint(arr * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def preprocess(images: Any, pp: Preprocessing = Preprocessing()) -> Any:
    """uint8 pixels (N,H,W) or (N,1,H,W) -> normalised float32 (N,1,H,W).

    Accepts a torch tensor (stays on its device) or a numpy array (returns
    numpy, for ONNX Runtime). Float input is taken as already in 0-255.
    """
    scale = 1.0 / (255.0 * pp.std)
    shift = pp.mean / pp.std
    if isinstance(images, np.ndarray):
        x = images.astype(np.float32)
        if x.ndim == 3:
            x = x[:, None]
        return x * scale - shift
    # A torch tensor (whoever made it imported torch): stays on its device.
    x = images.float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x * scale - shift
