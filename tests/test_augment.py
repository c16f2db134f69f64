from __future__ import annotations

import dataclasses

import torch

from ferlab.augment import AugmentConfig, augment_batch

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
