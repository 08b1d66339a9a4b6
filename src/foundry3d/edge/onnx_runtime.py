"""Running exported models: a thin onnxruntime wrapper that checks its input, and int8 quantization.

ONNX graphs carry no data-dependent checks (PyTorch's are skipped while exporting), so an exported
model would silently turn a NaN or a too-small cloud into garbage. :class:`OnnxPointModel` runs the
same checks as the PyTorch models before calling the session. :func:`quantize_int8` makes a static
QDQ int8 copy calibrated on real clouds (MatMul/Gemm only: the ops that carry the FLOPs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.errors import Foundry3DError


class OnnxModelError(Foundry3DError, ValueError):
    """An ONNX model or an input it cannot take."""


class OnnxPointModel:
    """``OnnxPointModel(path)(points)`` -> dict of outputs, after checking ``points`` (B, N, 3)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnx
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            raise OnnxModelError(f"{p} does not exist")
        meta = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
        if "num_groups" not in meta:
            raise OnnxModelError(f"{p} was not exported by foundry3d export (no num_groups metadata)")
        self.num_groups = int(meta["num_groups"])
        self.group_size = int(json.loads(meta.get("config", "{}")).get("group_size", meta.get("group_size", 32)))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.meta = meta

    def check(self, points: np.ndarray) -> np.ndarray:
        x = np.asarray(points)
        if x.ndim != 3 or x.shape[-1] != 3:
            raise OnnxModelError(f"points must have shape (B, N, 3), got {x.shape}")
        if x.shape[0] < 1:
            raise OnnxModelError("points is an empty batch (0 clouds)")
        need = max(self.num_groups, self.group_size)
        if x.shape[1] < need:
            raise OnnxModelError(f"points has {x.shape[1]} points per cloud, fewer than the {need} this export needs")
        if not np.isfinite(x).all():
            raise OnnxModelError("points contains NaN or inf values")
        if np.abs(x).max() > 1e15:
            raise OnnxModelError("points has coordinates beyond 1e15: centre and rescale the cloud first")
        return x.astype(np.float32, copy=False)

    def __call__(self, points: np.ndarray) -> dict[str, np.ndarray]:
        out = self.session.run(None, {self.input: self.check(points)})
        return dict(zip(self.outputs, out))


class _Calibration:
    """onnxruntime CalibrationDataReader over real clouds (one cloud per batch)."""

    def __init__(self, name: str, clouds: np.ndarray) -> None:
        self.name = name
        self.it: Iterator[np.ndarray] = iter(clouds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        c = next(self.it, None)
        return None if c is None else {self.name: c[None].astype(np.float32)}


def quantize_int8(onnx_path: str | Path, out: str | Path, calibration: np.ndarray) -> Path:
    """Static QDQ int8 (per-channel weights, MatMul/Gemm) calibrated on ``calibration`` (S, N, 3) clouds."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src = Path(onnx_path)
    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    out = Path(out)
    quantize_static(
        str(src),
        str(out),
        _Calibration(name, calibration),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    model = onnx.load(str(out))
    for m in onnx.load(str(src), load_external_data=False).metadata_props:
        e = model.metadata_props.add()
        e.key, e.value = m.key, m.value
    e = model.metadata_props.add()
    e.key, e.value = "quantization", "static QDQ int8, MatMul/Gemm, per-channel weights, MinMax calibration"
    onnx.save(model, str(out))
    return out


def onnx_features(model: OnnxPointModel, clouds: np.ndarray, batch: int = 16) -> np.ndarray:
    """Pooled [max, mean] features of the exported model's output tokens, (S, 2D)."""
    feats = []
    for s in range(0, len(clouds), batch):
        tokens = model(clouds[s : s + batch])[model.outputs[0]]
        feats.append(np.concatenate([tokens.max(1), tokens.mean(1)], -1))
    return np.concatenate(feats)


def describe(path: str | Path) -> dict[str, Any]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), "ops": ops}
