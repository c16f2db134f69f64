"""ONNX export with a dynamic batch axis; class names, preprocessing and TTA travel as metadata.

`quantize_onnx` turns an exported model into int8 (ONNX Runtime static quantization,
QDQ format, per-channel weights), calibrated on real faces: on CPUs with VNNI
(AVX-512 or AVX-VNNI) that runs the convolutions on int8 units, 2-3x faster.
Quantization changes the outputs slightly; score the result with
`ferlab evaluate model-int8.onnx --data ...` before relying on it.

`export_model` is what `ferlab export` runs: any PyTorch model reference to a slim
.pt, an ONNX file or an int8 ONNX file.

Depends on: errors, checkpoint, classifier, data (calibration faces), files, inference,
preprocess; onnx and onnxruntime's quantization tools.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..core.errors import CheckpointError, InputError
from ..core.files import atomic_path, check_writable, refuse_overwriting_inputs
from ..data import TRAIN_SPLIT, load_dataset, stratified_subset
from ..data.preprocess import Preprocessing, preprocess
from .checkpoint import LoadedModel, slim_checkpoint
from .classifier import ONNX_METADATA_KEY as METADATA_KEY
from .classifier import load_classifier, require_torch
from .shipped import portable_source
from .torch_proba import check_tta


def export_onnx(loaded: LoadedModel, out: str | Path, opset: int = 17) -> Path:
    """Write `loaded` as ONNX: input (batch, 1, 48, 48) preprocessed floats -> logits."""
    model = loaded.model.to("cpu").float().eval()
    size = loaded.preprocessing.image_size
    example = torch.zeros(1, 1, size, size)
    out = Path(out)
    with atomic_path(out) as tmp:
        # The TorchScript-based exporter handles these plain CNNs; torch.export is not needed.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # An ensemble member's TTA crops read the (fixed) face size as constants.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
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
            "source": portable_source(loaded.path),
        }
        members = getattr(loaded.model, "members", ())
        if members:  # an ensemble graph runs every member's views: inference batches count them
            from .tta import VIEW_COUNT

            meta["inner_views"] = sum(VIEW_COUNT[m.tta] for m in members)
        if loaded.meta.get("calibration"):  # the confidence temperature travels with the model
            meta["calibration"] = loaded.meta["calibration"]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return out


def quantize_onnx(fp32_path: str | Path, out: str | Path, faces: np.ndarray,
                  batch_size: int = 64) -> Path:
    """int8 copy of a ferlab ONNX model; `faces` (N, 48, 48) uint8 calibrate the activations."""
    meta = read_onnx_metadata(fp32_path)
    if len(faces) == 0:
        raise InputError("int8 calibration needs at least one face image")
    pp = Preprocessing.from_dict(meta["preprocessing"])
    x = preprocess(torch.from_numpy(np.ascontiguousarray(faces)), pp).numpy()
    input_name = onnx.load(str(fp32_path)).graph.input[0].name

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
        # reduce_range: 7-bit weights. CPUs without VNNI (AVX2, plain AVX-512) multiply
        # uint8 x int8 with VPMADDUBSW, whose int16 sums saturate on full-range weights:
        # the shipped fast model scored 64.4% instead of 66.3% on such a CPU. ONNX Runtime's
        # documented remedy costs ~0.2 points where VNNI would have been exact.
        quantize_static(str(prepared), str(target), Batches(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, reduce_range=True)
        q = onnx.load(str(target))
        meta["quantization"] = (f"int8 static (QDQ, per-channel, 7-bit weights), calibrated on "
                                f"{len(faces)} faces")
        del q.metadata_props[:]
        entry = q.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        onnx.save(q, str(target))
    return out


def read_onnx_metadata(path: str | Path) -> dict:
    """The ferlab metadata of an exported ONNX file."""
    proto = onnx.load(str(path))
    entries = {e.key: e.value for e in proto.metadata_props}
    if METADATA_KEY not in entries:
        raise CheckpointError(f"{path}: not exported by ferlab (no '{METADATA_KEY}' metadata)")
    return json.loads(entries[METADATA_KEY])


def update_onnx_metadata(path: str | Path, out: str | Path, update: dict) -> Path:
    """Copy a ferlab ONNX file to `out` (may be `path`) with its metadata updated; atomic."""
    proto = onnx.load(str(path))
    meta = read_onnx_metadata(path)
    meta.update(update)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = json.dumps(meta)
    out = Path(out)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return out


def calibration_faces(source: str, class_names: tuple[str, ...], n: int) -> np.ndarray:
    """A stratified random subset of `n` faces from a source's training split (all of it
    where there is none)."""
    data, _ = load_dataset(source, classes=class_names)
    part = data.split(TRAIN_SPLIT) if TRAIN_SPLIT in data.split_names else data
    return part.images[stratified_subset(part.labels, n, 0)]


def export_model(
    ref: str | Path | None,
    out: str | Path,
    *,
    tta: str | None = None,
    int8: bool = False,
    calibration_data: str | None = None,
    calibration_images: int = 1000,
    log=print,
) -> tuple[Path, str]:
    """Export a PyTorch model (checkpoint, run folder or shipped name; None = bundled) to a
    slim `.pt`, an ONNX file, or with `int8` a quantized ONNX file; returns (path, source)."""
    out = Path(out)
    if out.suffix not in (".onnx", ".pt", ".pth"):
        raise InputError(f"{out}: choose a .onnx or .pt output")
    if int8 and (out.suffix != ".onnx" or not calibration_data):
        raise InputError("--int8 writes a .onnx file and needs --calibration-data "
                         "(a cache or source of faces)")
    check_writable(out.parent)  # before the model loads and calibration runs
    loaded = require_torch(load_classifier(ref, device="cpu", precision="fp32"), "export").loaded
    refuse_overwriting_inputs(out, [loaded.path, calibration_data], "export")
    if check_tta(tta, "--tta") is not None:
        loaded.meta["tta"] = tta
    if out.suffix in (".pt", ".pth"):
        return slim_checkpoint(loaded.path, out, tta), loaded.description
    if not int8:
        return export_onnx(loaded, out), loaded.description
    faces = calibration_faces(calibration_data, loaded.class_names, calibration_images)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(loaded, Path(tmp) / "fp32.onnx")
        path = quantize_onnx(fp32, out, faces)
    log(f"calibrated on {len(faces)} faces from {calibration_data}")
    return path, loaded.description
