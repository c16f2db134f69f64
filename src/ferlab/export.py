"""ONNX export with a dynamic batch axis; class names, preprocessing and TTA travel as metadata."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .checkpoint import LoadedModel
from .files import atomic_path

METADATA_KEY = "ferlab"


def export_onnx(loaded: LoadedModel, out: str | Path, opset: int = 17) -> Path:
    """Write `loaded` as ONNX: input (batch, 1, 48, 48) preprocessed floats -> logits."""
    import onnx

    model = loaded.model.to("cpu").float().eval()
    size = loaded.preprocessing.image_size
    example = torch.zeros(1, 1, size, size)
    out = Path(out)
    with atomic_path(out) as tmp:
        # The TorchScript-based exporter handles these plain CNNs; torch.export is not needed.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        meta = {
            "class_names": list(loaded.class_names),
            "preprocessing": loaded.preprocessing.to_dict(),
            "tta": loaded.meta.get("tta", "none"),
            "model": loaded.meta.get("model", {}).get("name"),
            "source": str(loaded.path),
        }
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return out
