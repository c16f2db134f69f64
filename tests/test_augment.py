from __future__ import annotations

import dataclasses

import torch

from ferlab.training.augment import AugmentConfig, augment_batch

SEED_AUG = AugmentConfig(enabled=True)
NONE = AugmentConfig(enabled=True, rotation=0, zoom=0, width_shift=0, height_shift=0, shear=0,
                     horizontal_flip=False)


def batch(n=16):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 48, 48, generator=g)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_disabled_and_zero_ranges_are_identity():
    x = batch()
    assert augment_batch(x, AugmentConfig(enabled=False), gen()) is x
    assert torch.allclose(augment_batch(x, NONE, gen()), x, atol=1e-5)


def test_flip_only_mirrors_about_half():
    x = batch(64)
    out = augment_batch(x, dataclasses.replace(NONE, horizontal_flip=True), gen())
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x)]
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 16 < sum(flipped) < 48


def test_shift_moves_content():
    x = torch.zeros(1, 1, 48, 48)
    x[..., 20:28, 20:28] = 1.0
    cfg = dataclasses.replace(NONE, width_shift=0.1)
    out = augment_batch(x.repeat(32, 1, 1, 1), cfg, gen())
    centres = (out[:, 0].sum(1) * torch.arange(48)).sum(1) / out[:, 0].sum((1, 2))
    assert centres.min() < 23.5 - 1 and centres.max() > 23.5 + 1
    assert (centres - 23.5).abs().max() <= 4.8 + 0.5  # at most 10% of 48 px


def test_seed_augmentation_is_reproducible_and_keeps_range():
    x = batch()
    a = augment_batch(x, SEED_AUG, gen(3))
    b = augment_batch(x, SEED_AUG, gen(3))
    c = augment_batch(x, SEED_AUG, gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1  # 'nearest' fill adds no new values


def test_random_erasing_zeroes_rectangles():
    x = torch.ones(200, 1, 48, 48)
    cfg = dataclasses.replace(NONE, random_erasing=0.5)
    out = augment_batch(x, cfg, gen())
    erased = (out == 0).flatten(1).any(1)
    assert 60 < int(erased.sum()) < 140
    share = (out[erased] == 0).float().mean()
    assert 0.01 < share < 0.3


PHOTO = dataclasses.replace(NONE, crop_area=0.7, brightness=0.2, contrast=0.3, gamma=0.3, blur=0.5,
                            noise=0.05, jpeg=0.5, low_resolution=0.3)


def test_photometric_degradations_stay_in_range_and_are_reproducible():
    x = (batch(64) - 0.5) / 0.25  # preprocessed
    a, b = augment_batch(x, PHOTO, gen(3)), augment_batch(x, PHOTO, gen(3))
    assert torch.equal(a, b) and not torch.allclose(a, x)
    pixels = a * 0.25 + 0.5
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_jpeg_like_matches_a_real_jpeg_encoder():
    import io

    import numpy as np
    from PIL import Image

    from ferlab.training.augment import jpeg_like

    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(0, 1, (48, 48)), 0), 1)
    img = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
    for quality in (20, 60):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=0)
        real = np.asarray(Image.open(buf), dtype=np.float32) / 255
        pixels = torch.from_numpy(img / 255.0).float()[None, None]
        ours = jpeg_like(pixels, torch.tensor([float(quality)]))[0, 0]
        # PIL rounds differently in places; the two decodings agree to within a grey level or two.
        assert np.abs(ours.numpy() - real).mean() < 2.5 / 255, quality
    assert torch.allclose(jpeg_like(torch.full((1, 1, 16, 16), 0.5), torch.tensor([50.0])),
                          torch.full((1, 1, 16, 16), 0.5), atol=1 / 255)


def test_photometric_ranges_are_checked():
    import pytest

    from ferlab.core.config import ConfigError, check_ranges, load_config

    for bad in ("augment.blur=1.5", "augment.jpeg_quality=[80,20]", "augment.crop_area=0",
                "augment.low_resolution_px=[2,8]"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            check_ranges(load_config(None, [bad]))
