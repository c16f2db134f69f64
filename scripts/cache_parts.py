"""Split a ferlab cache (.npz) into parts by rows, or join the parts back into one cache.

The lent GPU machine takes at most 64 MiB of files per call, and the FER2013 cache is
71 MB, so it travels in two calls (ignored files carried by one call stay on the warm
machine for the next; `.device/` is git-ignored, so a call carries only the part it names):

    python scripts/cache_parts.py split /work/cache/fer.npz .device/fer 2
    # call 1 carries .device/fer.part0.npz; call 2 carries .device/fer.part1.npz and runs
    python3 scripts/cache_parts.py join .device/fer fer.npz && scripts/train_ensemble.sh fer.npz ...

Parts are interleaved rows (every class and split in each), each an ordinary cache;
`join` restores the original row order exactly and refuses parts that do not fit
together. Needs numpy only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

META = ("format_version", "class_names")  # the same in every part; everything else is per row


def split(cache: str, prefix: str, parts: int) -> None:
    data = dict(np.load(cache, allow_pickle=False))
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    for k in range(parts):
        part = {key: v if key in META else v[k::parts] for key, v in data.items()}
        part["part"] = np.array([k, parts])
        path = f"{prefix}.part{k}.npz"
        np.savez_compressed(f"{path}.tmp.npz", **part)  # whole or absent: temp file, then rename
        Path(f"{path}.tmp.npz").replace(path)
        print(f"wrote {path} ({Path(path).stat().st_size / 1e6:.1f} MB, {len(part['labels'])} images)")


def join(prefix: str, out: str) -> None:
    files = sorted(Path(prefix).parent.glob(Path(prefix).name + ".part*.npz"))
    parts = [dict(np.load(f, allow_pickle=False)) for f in files]
    if not parts:
        sys.exit(f"error: no {prefix}.partN.npz files")
    total = int(parts[0]["part"][1])
    if sorted(int(p["part"][0]) for p in parts) != list(range(total)):
        sys.exit(f"error: {prefix}: found parts {[str(f) for f in files]}, need all {total}")
    parts.sort(key=lambda p: int(p["part"][0]))
    n = sum(len(p["labels"]) for p in parts)
    joined = {}
    for key, v in parts[0].items():
        if key == "part":
            continue
        if key in META:
            joined[key] = v
            continue
        rows = np.empty((n, *v.shape[1:]), dtype=np.result_type(*(p[key].dtype for p in parts)))
        for k, p in enumerate(parts):
            rows[k::total] = p[key]
        joined[key] = rows
    tmp = f"{out}.tmp.npz"
    np.savez_compressed(tmp, **joined)
    Path(tmp).replace(out)
    print(f"wrote {out} ({n} images from {total} parts)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "split":
        split(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) == 4 and sys.argv[1] == "join":
        join(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
