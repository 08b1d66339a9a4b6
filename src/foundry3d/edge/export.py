"""``foundry3d export``: ONNX export of a teacher or student that verifies itself.

Dynamic batch and point count (the number of groups is fixed at export), opset 18, one
self-contained file with metadata, then an onnxruntime parity check at two input shapes:
float outputs within ``atol`` and SuperToken assignments matching on at least 99 % of tokens.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from foundry3d.data.base import DatasetError
from foundry3d.data.registry import load_dataset, parse_spec
from foundry3d.data.transforms import collate
from foundry3d.edge.onnx_runtime import describe, quantize_int8
from foundry3d.errors import Foundry3DError
from foundry3d.files import atomic_write, user_path
from foundry3d.models.base import PointModel
from foundry3d.models.hub import resolve
from foundry3d.version import __version__


class ExportError(Foundry3DError, RuntimeError):
    """A model or setting that cannot be exported, or an export that fails its parity check."""


class _Exportable(nn.Module):
    """The graph users deploy: ``points`` -> ``tokens``, ``centres`` (, ``assignment``) (, ``global``).

    With ``normalize`` each cloud is centred on its mean and scaled into the unit sphere inside the graph
    (the normalisation of ``model.embed`` and ``foundry3d embed``) and ``centres`` come back in input units;
    with ``pool`` the graph also returns the pooled ``global`` embedding.
    """

    names: list[str]  # the graph's output names, in order

    def __init__(
        self, model: PointModel, num_groups: int, example: torch.Tensor, normalize: bool = True, pool: bool = True
    ) -> None:
        super().__init__()
        self.model = model
        self.num_groups = num_groups
        self.normalize = normalize
        self.pool = pool
        with torch.no_grad():  # which outputs this model has (students with SuperTokens add an assignment)
            probe = model.forward_features(example[:1] / example[:1].norm(dim=-1).amax(), num_groups=num_groups)
        self.names = ["tokens", "centres", *(["assignment"] if "assignment" in probe else []), *(["global"] * pool)]

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = points
        if self.normalize:
            centre = x.mean(1, keepdim=True)
            x = x - centre
            scale = x.norm(dim=-1).amax(1).clamp_min(1e-30)[:, None, None]
            x = x / scale
        out = self.model.forward_features(x, num_groups=self.num_groups)
        centres = out["centres"] * scale + centre if self.normalize else out["centres"]
        res = [out["tokens"], centres]
        if "assignment" in self.names:
            res.append(out["assignment"])
        if self.pool:
            res.append(self.model.forward_head(out))
        return tuple(res)


def export_onnx(
    model: str | nn.Module,
    out: str | Path,
    num_points: int = 1024,
    opset: int = 18,
    verify: bool = True,
    atol: float = 1e-4,
    int8: bool = False,
    calibration: str | None = None,
    calibration_clouds: int = 64,
    overwrite: bool = False,
    normalize: bool = True,
    pool: bool = True,
) -> dict[str, Any]:
    """Export a teacher or student to ONNX (dynamic batch and points) and check onnxruntime against PyTorch.

    Args:
        model: release folder or embedded[:NAME].
        out: the .onnx file to write.
        num_points: points per cloud of the example input; fixes the number of groups.
        opset: ONNX opset (>= 18).
        verify: run onnxruntime on two input shapes and compare with PyTorch.
        atol: largest accepted absolute difference of the output tokens.
        int8: also write ``<out stem>.int8.onnx``, static QDQ int8 calibrated on real clouds.
        calibration: dataset spec whose clouds calibrate the int8 ranges, e.g. folder:/scans (never a test
            split; default: the data the model was distilled or pretrained on, as its release records).
        calibration_clouds: how many clouds calibrate.
        overwrite: replace an existing graph at ``out`` (only an ONNX file foundry3d exported).
        normalize: the graph centres and scales each cloud itself (input in any units, like ``embed``);
            without it the input must already be centred and scaled into the unit sphere.
        pool: the graph also returns ``global``, the pooled embedding (``model.embed``).
    """
    try:
        import onnx
    except ImportError as e:  # an optional extra
        raise ExportError("ONNX export needs the onnx extra: pip install 'foundry3d[onnx]'") from e
    if opset < 18:
        raise ExportError(f"opset must be >= 18, got {opset}")
    if not math.isfinite(atol) or atol < 0:
        raise ExportError(f"atol must be a finite number >= 0, got {atol}")
    out = user_path(out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"--out {out}: expected a file name ending in .onnx")
    for target in [out, *([out.with_suffix(".int8.onnx")] if int8 else [])]:
        _check_target(target, overwrite)
    net, info = resolve(model)  # a module too: checked, in eval mode
    groups = net.groups_for(num_points)
    need = max(groups, net.tcfg.group_size, 64)
    if num_points < need:
        raise ExportError(
            f"num_points={num_points} is too small to export: the model needs at least {need} points per cloud "
            f"({groups} groups of {net.tcfg.group_size})"
        )
    example = torch.randn(2, num_points, 3, generator=torch.Generator().manual_seed(0))
    wrapper = _Exportable(net, groups, example, normalize, pool).eval()
    dims = {"points": {0: torch.export.Dim("batch"), 1: torch.export.Dim("points", min=max(groups, 64))}}
    meta = {
        "foundry3d_version": __version__,
        "kind": getattr(net, "kind", ""),
        "num_groups": str(groups),
        "group_size": str(net.tcfg.group_size),
        "min_points": str(need),
        "input": "points (batch, N, 3) float32, "
        + ("in any units (the graph centres and scales each cloud)" if normalize else "centred, in the unit sphere"),
        "outputs": ",".join(wrapper.names),
        "patch_rule": f"{groups} patches, fixed at export: model.embed gives the same at N = {num_points} points",
        "config": json.dumps(net.config_dict()) if hasattr(net, "config_dict") else "{}",
    }
    result: dict[str, Any] = {"onnx": str(out), "num_groups": groups, "opset": opset, "model": info["model"]}

    def write(tmp: str) -> None:
        torch.onnx.export(
            wrapper,
            (example,),
            tmp,
            dynamo=True,
            dynamic_shapes=dims,
            opset_version=opset,
            input_names=["points"],
            output_names=wrapper.names,
            external_data=False,
            verbose=False,
        )
        proto = onnx.load(tmp)
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, tmp)

    def check(tmp: str) -> None:  # the graph is moved into place only once it has passed
        if verify:
            result["parity"] = verify_onnx(wrapper, Path(tmp), [(1, num_points), (3, 2 * num_points)], atol)

    atomic_write(out, write, check)
    if int8:
        calibration = calibration or _own_data(net, info["model"])
        clouds = calibration_set(calibration, calibration_clouds, num_points)
        q = out.with_suffix(".int8.onnx")

        def write_int8(tmp: str) -> None:
            quantize_int8(out, tmp, clouds)

        atomic_write(q, write_int8)
        result["int8"] = {"onnx": str(q), "calibration": f"{len(clouds)} clouds of {calibration}", **describe(q)}
    return result


def _check_target(path: Path, overwrite: bool) -> None:
    """An existing file is replaced only with ``overwrite`` and only when it is an ONNX graph we exported."""
    if path.is_dir():
        raise ExportError(f"--out {path} is a folder: expected the path of the .onnx file to write")
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise ExportError(f"{path} already exists; pass --overwrite to replace it (only an ONNX graph we exported)")
    import onnx

    try:
        ours = any(p.key == "foundry3d_version" for p in onnx.load(str(path), load_external_data=False).metadata_props)
    except Exception:  # any file onnx cannot parse is not ours
        ours = False
    if not ours or path.is_symlink():
        raise ExportError(f"{path} is not an ONNX graph exported by foundry3d: refusing to replace it")


def _own_data(net: PointModel, name: str) -> str:
    """The training data a release records (``meta.datasets``), the default int8 calibration set."""
    specs = getattr(net, "release_meta", {}).get("datasets") or []
    if not specs:
        raise ExportError(
            f"--int8 needs calibration clouds: {name} records no training data, so name some with "
            "--calibration DATASET (e.g. folder:/scans, clouds like the ones the graph will see)"
        )
    return "+".join(specs)


def calibration_set(spec: str, count: int, num_points: int) -> np.ndarray:
    """``count`` clouds spread evenly over a dataset split (never a test split), (count, num_points, 3)."""
    for part in spec.split("+"):
        if parse_spec(part.rpartition("*")[0] if part.rpartition("*")[2].isdigit() else part)[1] == "test":
            raise ExportError(f"--calibration {part} is a test split: calibrate on clouds no evaluation scores")
    try:
        ds = load_dataset(spec)
    except DatasetError as e:
        raise ExportError(f"--calibration {spec}: {e} (name other clouds with --calibration DATASET)") from e
    pick = np.linspace(0, len(ds) - 1, min(count, len(ds))).astype(int)
    return collate([ds[int(i)] for i in pick], num_points, "first")["points"].numpy()


def verify_onnx(wrapper: _Exportable, path: Path, shapes: list[tuple[int, int]], atol: float) -> list[dict]:
    """onnxruntime against PyTorch on random clouds of ``shapes``: every float output within ``atol`` (tokens
    and the global embedding; centres relative to the cloud's scale), SuperToken assignments on >= 99 %."""
    import onnxruntime as ort  # the [onnx] extra

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    if names != list(wrapper.names):
        raise ExportError(f"the exported graph's outputs are {names}, expected {wrapper.names}")
    report = []
    for b, n in shapes:
        g = torch.Generator().manual_seed(b * 7 + n)
        x = torch.randn(b, n, 3, generator=g) * (40.0 if wrapper.normalize else 1.0)  # raw units when normalising
        with torch.no_grad():
            ref = dict(zip(names, (t.numpy() for t in wrapper(x))))
        try:
            got = dict(zip(names, sess.run(None, {"points": x.numpy()})))
        except Exception as e:  # onnxruntime's own error types: the graph does not take this input
            raise ExportError(
                f"the exported graph does not run on clouds of shape {(b, n, 3)} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}): nothing written"
            ) from e
        row: dict[str, Any] = {"shape": [b, n, 3]}
        for key in ("tokens", "global"):
            if key in ref:
                row[f"max_abs_err_{key}" if key != "tokens" else "max_abs_err"] = float(
                    np.abs(got[key] - ref[key]).max()
                )
        if "assignment" in ref:
            row["assignment_match"] = float((got["assignment"] == ref["assignment"]).mean())
        worst = max(v for k, v in row.items() if k.startswith("max_abs_err"))
        if not worst <= atol or row.get("assignment_match", 1.0) < 0.99:
            raise ExportError(f"ONNX parity check failed at input {(b, n, 3)}: {row}")
        report.append(row)
    return report
