"""The one place ferlab changes a process-wide setting: how many threads OpenCV and PyTorch use.

Their thread pools belong to the process, not to an object, so a `threads=N` argument
(`EmotionRecognizer(threads=2)`, `load_classifier(..., threads=2)`, the server's and the
sweep's worker processes) can only be honoured by setting them for the whole process.
ferlab does that here and nowhere else, and only when a caller passes `threads`; without
it nothing global is touched. ONNX Runtime's threads are a per-session option
(`classifier.OnnxClassifier`), YuNet's OpenMP pool is limited per call inside its
detector, and warning filters are only ever changed inside `warnings.catch_warnings()`.

Depends on nothing at import; OpenCV and PyTorch are set when the caller uses them.
"""

from __future__ import annotations

import sys


def set_process_threads(threads: int | None, *, torch: bool = False) -> None:
    """Cap OpenCV's threads (and with `torch`, PyTorch's intra-op threads) for this whole
    process at `threads`; None or 0 leaves everything as it is."""
    if not threads:
        return
    if "cv2" in sys.modules or not torch:
        import cv2

        cv2.setNumThreads(threads)
    if torch:
        import torch as _torch

        _torch.set_num_threads(threads)
