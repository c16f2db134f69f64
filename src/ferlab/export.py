"""ONNX export with a dynamic batch axis; class names, preprocessing and TTA travel as metadata.

`quantize_onnx` turns an exported model into int8 (ONNX Runtime static quantization,
QDQ format, per-channel weights), calibrated on real faces: on CPUs with VNNI
(AVX-512 or AVX-VNNI) that runs the convolutions on int8 units, 2-3x faster.
Quantization changes the outputs slightly; score the result with
`ferlab evaluate model-int8.onnx --data ...` before relying on it.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
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


def quantize_onnx(fp32_path: str | Path, out: str | Path, faces: np.ndarray,
                  batch_size: int = 64) -> Path:
    """int8 copy of a ferlab ONNX model; `faces` (N, 48, 48) uint8 calibrate the activations."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .preprocess import Preprocessing, preprocess

    proto = onnx.load(str(fp32_path))
    entries = {e.key: e.value for e in proto.metadata_props}
    if METADATA_KEY not in entries:
        raise ValueError(f"{fp32_path}: not exported by ferlab (no '{METADATA_KEY}' metadata)")
    meta = json.loads(entries[METADATA_KEY])
    if len(faces) == 0:
        raise ValueError("int8 calibration needs at least one face image")
    pp = Preprocessing.from_dict(meta["preprocessing"])
    x = preprocess(torch.from_numpy(np.ascontiguousarray(faces)), pp).numpy()
    input_name = proto.graph.input[0].name

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(x[i : i + batch_size] for i in range(0, len(x), batch_size))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as target:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))  # shape inference + graph folding
        quantize_static(str(prepared), str(target), Batches(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
        q = onnx.load(str(target))
        meta["quantization"] = f"int8 static (QDQ, per-channel), calibrated on {len(faces)} faces"
        del q.metadata_props[:]
        entry = q.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        onnx.save(q, str(target))
    return out
