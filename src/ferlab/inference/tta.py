"""Test-time augmentation (TTA), the one implementation: modes, views and their average.

Training's validation, `evaluate`, `predict`, the server, an ensemble's members and the
ONNX Runtime path all take their views from `tta_views` and average them with
`mean_over_views`. Both work on numpy arrays (ONNX Runtime: a prediction with an
exported model never imports PyTorch) and on torch tensors (torch is only touched when
the caller hands one over). The crops' resize is the same bilinear map either way
(OpenCV's INTER_LINEAR and PyTorch's align_corners=False both sample at pixel centres);
a test holds the two within 1e-4 on unit-variance inputs.

Depends on: errors; numpy, OpenCV (numpy crops), torch (tensor crops, only when given one).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import ConfigError

TTA_MODES = ("none", "flip", "tencrop")
VIEW_COUNT = {"none": 1, "flip": 2, "tencrop": 10}  # forward passes per face
TENCROP_FRACTION = 0.9  # crop side as a share of the image; each crop is resized back
# Inference batches are counted in views (faces x TTA views x an ensemble's own views), not
# faces: 1,024 faces of a ten-crop ensemble were 20,480 views at once, 5-9 GB of activations
# in `ferlab evaluate`. 256 views keep a batch's activations to a few hundred MB.
VIEWS_PER_BATCH = 256


def faces_per_batch(views_per_face: int, views: int = VIEWS_PER_BATCH) -> int:
    """How many faces one forward pass takes when each costs `views_per_face` views."""
    return max(1, views // max(1, views_per_face))


def check_tta(mode: str | None, name: str = "tta") -> str | None:
    """The one check of a TTA setting; `name` is the field or option named in the error."""
    if mode is not None and mode not in TTA_MODES:
        raise ConfigError(f"{name} must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    return mode


def tencrop_boxes(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the five crops: four corners and the centre."""
    ch, cw = round(h * TENCROP_FRACTION), round(w * TENCROP_FRACTION)
    tops, lefts = (0, 0, h - ch, h - ch, (h - ch) // 2), (0, w - cw, 0, w - cw, (w - cw) // 2)
    return [(t, lft, ch, cw) for t, lft in zip(tops, lefts)]


def _is_numpy(x) -> bool:
    return isinstance(x, np.ndarray)


def _flip(x):
    return x[..., ::-1] if _is_numpy(x) else x.flip(-1)


def _resize(x, h: int, w: int):
    """(N, C, h', w') float -> (N, C, h, w), bilinear at pixel centres."""
    if not _is_numpy(x):
        import torch.nn.functional as F

        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    import cv2

    n, c = x.shape[:2]
    planes = np.ascontiguousarray(x.reshape(n * c, *x.shape[2:]).transpose(1, 2, 0))
    # cv2.resize takes at most 512 channels at once.
    out = [cv2.resize(planes[..., i : i + 512], (w, h), interpolation=cv2.INTER_LINEAR)
           for i in range(0, n * c, 512)]
    out = np.concatenate([o.reshape(h, w, -1) for o in out], -1)
    return out.transpose(2, 0, 1).reshape(n, c, h, w)


def tta_views(x, mode: str) -> list:
    """Views of a preprocessed batch (N, C, H, W), numpy or torch, whose predictions are
    averaged: none -> [x]; flip -> x and its mirror; tencrop -> four corner crops and the
    centre crop at TENCROP_FRACTION of the side, each resized back, and their mirrors."""
    check_tta(mode)
    if mode == "flip":
        return [x, _flip(x)]
    if mode == "tencrop":
        # int(): under ONNX tracing sizes are tensors; the face size is fixed, so constants.
        h, w = int(x.shape[-2]), int(x.shape[-1])
        crops = [_resize(x[..., t : t + ch, lft : lft + cw], h, w) for t, lft, ch, cw in tencrop_boxes(h, w)]
        return crops + [_flip(c) for c in crops]
    return [x]


def _softmax(z):
    if _is_numpy(z):
        z = z - z.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)
    return z.softmax(-1)


def mean_over_views(forward, x, mode: str, *, one_call_rows: int | None = None):
    """(mean logits, mean probabilities) of `forward` over the TTA views of a preprocessed
    batch, in float32, numpy or torch as `x` is. The views go to `forward` as one batch
    where they hold at most `one_call_rows` rows (None: always; on a CPU ten small calls
    cost far more than one of ten), else one call a view (bounded memory)."""
    views = tta_views(x, mode)
    n, numpy = x.shape[0], _is_numpy(x)
    if len(views) > 1 and (one_call_rows is None or n * len(views) <= one_call_rows):
        out = forward(np.concatenate(views) if numpy else _torch_cat(views))
        logits = out.reshape(len(views), n, -1)
    else:
        outs = [forward(v) for v in views]
        logits = np.stack(outs) if numpy else _torch_stack(outs)
    logits = logits.astype(np.float32) if numpy else logits.float()
    return logits.mean(0), _softmax(logits).mean(0)


def _torch_cat(views):
    import torch

    return torch.cat(views)


def _torch_stack(outs):
    import torch

    return torch.stack(outs)
