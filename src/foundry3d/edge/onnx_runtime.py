"""Running exported models: a thin onnxruntime wrapper that checks its input, and int8 quantization.

ONNX graphs carry no data-dependent checks (PyTorch's are skipped while exporting), so an exported
model would silently turn a NaN or a too-small cloud into garbage. :class:`OnnxPointModel` runs the
same checks as the PyTorch models before calling the session. :func:`quantize_int8` makes a static
QDQ int8 copy calibrated on real clouds: the MatMul/Gemm of the transformer blocks and the CAU decoder
(where the FLOPs of a student's encoder are). The ops that decide which points form a patch (FPS,
kNN distances), the tokenizer whose tokens the SuperToken routing reads, the positional MLP (its input
is the centres output) and the routing itself stay fp32, so int8 never moves a centre or re-routes a
token (quantizing every MatMul/Gemm moved centres and routing and cost accuracy: the effect of each
choice is measured by ``benchmarks/edge_study.py``, record in ``docs/edge/edge.json``).
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
        """The clouds as a float32 (B, N, 3) array, or a one-line error naming what was given instead."""
        try:
            x = np.asarray(points)
        except ValueError as e:  # a ragged list of clouds
            raise OnnxModelError(f"points must have shape (B, N, 3) with as many points in every cloud: {e}") from e
        if x.dtype.kind not in "fiu":
            raise OnnxModelError(f"points must be real numbers (float or int), got an array of {x.dtype}")
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
        """Run the exported model on ``points``: its outputs by name, as the PyTorch model returns them."""
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


# module scopes (as the exporter records them in each node's ``namespace``) whose MatMul/Gemm go int8
INT8_SCOPES = ("model.blocks.", "model.cau.")


def int8_nodes(model: Any, scopes: tuple[str, ...] = INT8_SCOPES) -> list[str]:
    """Names of the MatMul/Gemm nodes inside ``scopes``; every MatMul/Gemm if the graph has no scopes."""
    mm = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    spaces = {n.name: next((p.value for p in n.metadata_props if p.key == "namespace"), "") for n in mm}
    if not any(spaces.values()):  # not exported by torch.onnx's dynamo path: no module scopes to go by
        return [n.name for n in mm]
    return [n.name for n in mm if any(f"/{s}" in spaces[n.name] or spaces[n.name].startswith(s) for s in scopes)]


def quantize_int8(
    onnx_path: str | Path, out: str | Path, calibration: np.ndarray, scopes: tuple[str, ...] = INT8_SCOPES
) -> Path:
    """Static QDQ int8 (per-channel weights) of the blocks' and CAU's MatMul/Gemm, calibrated on real clouds.

    ``calibration`` is (S, N, 3) clouds, never a test split. Grouping, tokenizer, positional MLP and
    routing stay fp32 (see the module docstring for why); ``scopes=("",)`` quantizes every MatMul/Gemm.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src = Path(onnx_path)
    proto = onnx.load(str(src), load_external_data=False)
    name = proto.graph.input[0].name
    nodes = int8_nodes(proto, scopes)
    if not nodes:
        raise OnnxModelError(f"{src}: no MatMul/Gemm inside {', '.join(scopes)} to quantize")
    out = Path(out)
    quantize_static(
        str(src),
        str(out),
        _Calibration(name, calibration),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_quantize=nodes,
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
    e.key, e.value = (
        "quantization",
        (
            f"static QDQ int8, per-channel weights, MinMax calibration; {len(nodes)} MatMul/Gemm of "
            f"{', '.join(scopes) or 'the whole graph'} (the others stay fp32)"
        ),
    )
    onnx.save(model, str(out))
    return out


def onnx_outputs(model: OnnxPointModel, clouds: np.ndarray, batch: int = 16) -> dict[str, np.ndarray]:
    """Every output of the exported model on (S, N, 3) clouds, run in batches and concatenated."""
    parts = [model(clouds[s : s + batch]) for s in range(0, len(clouds), batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in model.outputs}


def pooled(tokens: np.ndarray) -> np.ndarray:
    """Pooled [max, mean] features of (S, c, D) output tokens, (S, 2D)."""
    return np.concatenate([tokens.max(1), tokens.mean(1)], -1)


def onnx_features(model: OnnxPointModel, clouds: np.ndarray, batch: int = 16) -> np.ndarray:
    """Pooled [max, mean] features of the exported model's output tokens, (S, 2D)."""
    return pooled(onnx_outputs(model, clouds, batch)[model.outputs[0]])


def describe(path: str | Path) -> dict[str, Any]:
    """The opset and operator counts of an exported ONNX file (read without its external weights): what a
    runtime must support."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), "ops": ops}
