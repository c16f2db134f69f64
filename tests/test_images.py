"""Images wherever they enter (ingest, predict, serve) go through one decoder: every
mode PIL opens arrives as what a viewer shows, and oversize inputs are refused early."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from ferlab.data import DataError, load_dataset
from ferlab.data.preprocess import ImageError, as_rgb_array, decode_image, to_gray48


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def gradient16() -> np.ndarray:
    return np.tile(np.linspace(0, 65535, 48).astype(np.uint16), (48, 1))


def test_16_bit_png_keeps_its_grays_instead_of_turning_white():
    data = png_bytes(Image.fromarray(gradient16()))
    gray = as_rgb_array(data)
    assert gray.dtype == np.uint8 and gray.shape == (48, 48)
    assert gray[0, 0] == 0 and gray[0, -1] == 255
    assert 120 <= gray[0, 24] <= 135  # the middle of the ramp is mid-gray, not white
    assert np.array_equal(to_gray48(decode_image(data)), gray)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "CMYK", "1"])
def test_other_modes_decode_to_the_expected_gray(mode):
    base = Image.fromarray(np.full((48, 48, 3), (200, 40, 40), np.uint8))
    if mode == "P":  # an adaptive palette holds the colour exactly (the web palette would dither)
        image = base.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        image = base.convert(mode) if mode != "1" else Image.new("1", (48, 48), 1)
    gray = to_gray48(decode_image(png_bytes(image) if mode != "CMYK" else jpeg_bytes(image)))
    expected = {"1": 255}.get(mode, int(0.299 * 200 + 0.587 * 40 + 0.114 * 40))
    assert abs(int(np.median(gray)) - expected) <= 3, (mode, np.median(gray))


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def test_transparent_pixels_are_shown_over_white():
    rgba = np.zeros((48, 48, 4), np.uint8)  # black, fully transparent
    assert as_rgb_array(png_bytes(Image.fromarray(rgba, "RGBA"))).min() == 255


def test_exif_rotation_is_applied():
    wide = Image.new("L", (60, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    assert decode_image(jpeg_bytes(wide, exif=exif)).size == (30, 60)


def test_oversize_png_is_refused_before_decoding_and_names_the_limit():
    data = png_bytes(Image.new("L", (300, 200)))
    with pytest.raises(ImageError, match="300x200 pixels is over the limit of 10,000 pixels"):
        decode_image(data, max_pixels=10_000)
    assert decode_image(data, max_pixels=60_000).size == (300, 200)


def test_oversize_jpeg_is_decoded_at_a_reduced_scale():
    data = jpeg_bytes(Image.new("RGB", (800, 800), (90, 90, 90)))
    image = decode_image(data, max_pixels=50_000)
    assert image.size[0] * image.size[1] <= 50_000 and image.size[0] >= 100


def test_zip_member_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import ferlab.data

    monkeypatch.setattr(ferlab.data.fer2013, "MAX_MEMBER_BYTES", 1000)
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("train/happy/a.png", png_bytes(Image.new("L", (48, 48))))
        z.writestr("train/happy/big.bmp", b"BM" + bytes(5000))  # compresses to almost nothing
    with pytest.raises(DataError, match=r"big\.bmp.*over the 0 MB limit"):
        load_dataset(archive)
    data, report = load_dataset(archive, skip_bad=True)
    assert len(data) == 1 and report.skipped == 1


def test_16_bit_numpy_arrays_are_scaled_too():
    gray = as_rgb_array(gradient16())
    assert gray[0, 0] == 0 and gray[0, -1] == 255 and 120 <= gray[0, 24] <= 135


def test_a_bad_pixel_cap_setting_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("FERLAB_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="FERLAB_MAX_PIXELS must be a positive whole number"):
        decode_image(png_bytes(Image.new("L", (4, 4))))
    monkeypatch.setenv("FERLAB_MAX_PIXELS", "100")
    with pytest.raises(ImageError, match="over the limit of 100 pixels"):
        decode_image(png_bytes(Image.new("L", (20, 20))))


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_gray_decoding_of_a_jpeg_matches_the_colour_decode_turned_gray(mode):
    import cv2

    rng = np.random.default_rng(0)
    colour = Image.fromarray(cv2.GaussianBlur(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8), (0, 0), 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated for display: the gray path honours it too
    data = jpeg_bytes(colour.convert(mode), exif=exif, quality=95)
    fast = as_rgb_array(data, gray=True)
    full = as_rgb_array(data)
    assert fast.shape[:2] == full.shape[:2] == (120, 90)
    if mode == "RGB":
        assert fast.ndim == 2  # the luma alone was decoded
    reference = cv2.cvtColor(full, cv2.COLOR_RGB2GRAY)
    fast = fast if fast.ndim == 2 else cv2.cvtColor(fast, cv2.COLOR_RGB2GRAY)
    assert np.abs(fast.astype(int) - reference).max() <= 3


def test_decode_cost_is_read_from_the_header_and_bounds_the_real_peak():
    """What the server reserves before decoding: never below what decoding then takes
    (VmHWM of a fresh process), and a JPEG over the pixel cap decoded at the power-of-two
    scale that brings it under (asking libjpeg for 1/3 decoded at 1/2, still over)."""
    import io
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from ferlab.data.preprocess import decode_image

    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((1000, 1000, 3), np.uint8)).save(jpeg, "JPEG")
    assert decode_image(jpeg.getvalue(), max_pixels=200_000).size == (250, 250)
    code = ("import io, sys, numpy as np; from PIL import Image\n"
            "from ferlab.data.preprocess import as_rgb_array, decode_cost\n"
            "from ferlab.photos.faces import to_gray\n"
            "mode = sys.argv[1]; buf = io.BytesIO()\n"
            "shape = (2000, 2000, 4) if mode == 'RGBA' else (2000, 2000)\n"
            "Image.fromarray(np.zeros(shape, np.uint8)).convert(mode).save(buf, 'PNG')\n"
            "data = buf.getvalue()\n"
            "status = lambda: [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]\n"
            "hwm = lambda: int(status().split()[1])\n"
            "before = hwm(); to_gray(as_rgb_array(data, None, True))\n"
            "print((hwm() - before) * 1024, decode_cost(data))\n")
    for mode in ("L", "RGB", "RGBA", "P"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
        peak, cost = map(int, out.stdout.split())
        assert peak <= cost, (mode, peak, cost)
