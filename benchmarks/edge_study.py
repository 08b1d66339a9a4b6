"""The edge measurements, one command: int8 vs fp32 ONNX, embed on a 1M-point scene, scene segmentation.

    python benchmarks/edge_study.py --teacher embedded --students runs/q/students/s1/release ... --out runs/edge

Parts (``--parts``):
* ``onnx``     export the last student (fp32) and an int8 copy calibrated on KiCad-33 *train* clouds;
               linear-SVM accuracy (SH3D-16, KiCad-33 test) from each, and onnxruntime latency side by side;
* ``embed``    ``foundry3d embed`` on a 1M-point scene (a kicadboards board) with the last student (and the
               teacher with ``--embed-teacher``): wall time and the process's peak RSS (fresh process each);
               then on the .ply files of ``assimp-testmodels`` (written by other tools; the empty one must be
               reported by name while the others go on);
* ``sceneseg`` ``sceneseg:kicadboards`` for teacher, floor and every student.
Timings are only meaningful on a quiet machine; the FPS/kNN and 1k-300k tables come from
``benchmarks/fast_ops.py`` and ``foundry3d bench``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from foundry3d.data.registry import load_dataset
from foundry3d.data.transforms import collate
from foundry3d.edge.export import calibration_set, export_onnx
from foundry3d.edge.onnx_runtime import OnnxPointModel, onnx_features, onnx_outputs, pooled, quantize_int8
from foundry3d.eval.results import bootstrap_ci
from foundry3d.eval.suite import evaluate
from foundry3d.eval.tasks.fidelity import fidelity_arrays
from foundry3d.eval.tasks.svm import fit_svm


def _agreement(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], names: list[str]) -> dict[str, float]:
    """Token R² of an int8 model against fp32 (the fidelity task's metric), and the share of centres /
    assignments left unchanged."""
    y, yh = torch.from_numpy(ref[names[0]]).double(), torch.from_numpy(got[names[0]]).double()
    arr = fidelity_arrays(yh, y, y.mean((0, 1), keepdim=True))
    out = {"token_r2_vs_fp32": float(1 - arr["sse"].sum() / arr["sst"].sum())}
    if len(names) > 1:
        out["centres_unchanged"] = float((ref[names[1]] == got[names[1]]).all(-1).mean())
    if len(names) > 2:
        out["assignment_unchanged"] = float((ref[names[2]] == got[names[2]]).mean())
    return out


def onnx_part(student: str, out: Path, threads: int) -> dict:
    res = export_onnx(student, out / "student.onnx", num_points=1024, int8=True)
    fp32, int8 = OnnxPointModel(out / "student.onnx", threads), OnnxPointModel(out / "student.int8.onnx", threads)
    # the reference choice: every MatMul/Gemm in int8 (grouping distances, tokenizer and routing included)
    clouds = calibration_set("kicad33:train", 64, 1024)  # the same clouds export_onnx calibrates on
    quantize_int8(out / "student.onnx", out / "student.int8_all.onnx", clouds, scopes=("",))
    models = {"fp32": fp32, "int8": int8, "int8_all": OnnxPointModel(out / "student.int8_all.onnx", threads)}
    rows = {}
    for name in ("sh3d16", "kicad33"):
        tr, te = load_dataset(f"{name}:train"), load_dataset(f"{name}:test")
        xtr = collate([tr[i] for i in range(len(tr))], 1024, "first")["points"].numpy()
        xte = collate([te[i] for i in range(len(te))], 1024, "first")["points"].numpy()
        row, correct, test_out = {}, {}, {}
        for tag, m in models.items():
            test_out[tag] = onnx_outputs(m, xte)  # every output once: pooled features and the agreement
            a, b = onnx_features(m, xtr), pooled(test_out[tag][m.outputs[0]])
            clf, used = fit_svm(a, tr.labels(), grid=(0.03, 0.1, 0.3), cv_max_samples=1200)
            correct[tag] = (clf.predict(b) == te.labels()).astype(float)
            ci = bootstrap_ci("svm", {"score": correct[tag]})
            row[tag] = {"acc": float(correct[tag].mean()), "ci95": ci, "C": used["C"]}
            if tag != "fp32":
                row[tag].update(_agreement(test_out["fp32"], test_out[tag], fp32.outputs))
                row[f"{tag}_minus_fp32_points"] = 100 * (row[tag]["acc"] - row["fp32"]["acc"])
                paired = bootstrap_ci("svm", {"score": correct[tag] - correct["fp32"]})  # same test shapes
                row[f"{tag}_minus_fp32_ci95_points"] = [100 * v for v in paired]
        rows[name] = row
    x = collate([load_dataset("kicad33:test")[i] for i in range(32)], 1024, "first")["points"].numpy()
    lat = {}
    for tag, m in (("fp32", fp32), ("int8", int8)):
        for b in (1, 32):
            m(x[:b])
            ts = []
            for _ in range(20 if b == 1 else 5):
                t0 = time.perf_counter()
                m(x[:b])
                ts.append(1000 * (time.perf_counter() - t0))
            lat[f"{tag}_b{b}_median_ms"] = statistics.median(ts)
            lat[f"{tag}_b{b}_p90_ms"] = float(np.percentile(ts, 90))
    for b in (1, 32):
        lat[f"int8_over_fp32_b{b}"] = lat[f"int8_b{b}_median_ms"] / lat[f"fp32_b{b}_median_ms"]
    return {"export": res, "svm": rows, "latency": lat, "threads": threads}


def _embed_process(files: list[str], spec: str, out: Path, threads: int) -> dict:
    """One fresh process per run, so its peak RSS is the embed's own."""
    code = (
        "import resource, time, json, pathlib; from foundry3d.edge.embed import EmbedError, embed; t=time.time()\n"
        f"try:\n    r=embed({files!r}, model={spec!r}, out={str(out)!r}, threads={threads}, progress=False)\n"
        # some files failing is an outcome to record: embed.json lists what was written and why others were not
        f"except EmbedError:\n    r=json.loads((pathlib.Path({str(out)!r}) / 'embed.json').read_text())\n"
        "print(json.dumps({'seconds': time.time()-t, 'result': r, "
        "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024}, default=str))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    return json.loads(line[-1]) if line else {"error": r.stderr[-800:]}


def _assimp_plys(out: Path) -> list[str]:
    from foundry3d.data.debian import download_package, extract_members
    from foundry3d.data.store import cache_dir

    deb = download_package("assimp-testmodels", cache_dir())
    return sorted(str(p) for p in extract_members(deb, out / "assimp", ["*.ply"]))


def embed_part(models: dict[str, str], out: Path, threads: int) -> dict:
    ds = load_dataset("kicadboards:test")
    pts = np.asarray(ds[0].points, np.float32)  # 1,000,000 points
    scene = out / "scene_1M.npy"
    np.save(scene, pts)
    rows = {}
    for name, spec in models.items():
        rows[name] = _embed_process([str(scene)], spec, out / f"embed_{name}", threads)
        print(name, {k: v for k, v in rows[name].items() if k != "result"}, flush=True)
    plys = _assimp_plys(out)
    student = list(models.values())[-1]
    ply = _embed_process(plys, student, out / "embed_ply", threads)
    return {"points": len(pts), "scene": ds.names[0] if ds.names else "board", "rows": rows, "ply": ply}


def render_part(out: Path, boards: int = 6, points: int = 60_000) -> str:
    """Boards coloured by their points' class (board green), component classes from KiCad-33's palette."""
    from foundry3d.data.kicadboards import BOARD
    from foundry3d.report.render import label_colors, render_grid

    ds = load_dataset("kicadboards:all")
    clouds, colors, titles = [], [], []
    for i in range(min(boards, len(ds))):
        s = ds[i]
        p, lab = np.asarray(s.points[:points], np.float32), np.asarray(s.parts[:points])
        c = label_colors(lab)
        c[lab == BOARD] = (0.25, 0.55, 0.3)
        clouds.append(np.stack([p[:, 0], p[:, 2], -p[:, 1]], 1))
        colors.append(c)
        titles.append(ds.names[i])
    path = render_grid(clouds, out / "kicadboards.png", colors, titles, cols=3, cell=4.0, size=0.5)
    return str(path)


def scene_part(models: dict[str, str], out: Path) -> dict:
    rows = {}
    for name, spec in models.items():
        r = evaluate(spec, ["sceneseg:kicadboards"], out=out / "sceneseg", name=name, overrides=["progress=false"])
        rows[name] = r["tasks"]["sceneseg:kicadboards"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="embedded")
    ap.add_argument("--students", nargs="+", required=True, help="student releases (the last one is exported)")
    ap.add_argument("--names", nargs="+", help="names of the students (default: s1, s2, ...)")
    ap.add_argument("--parts", nargs="+", default=["onnx", "embed", "sceneseg"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--embed-teacher", action="store_true", help="also embed the 1M-point scene with the teacher")
    ap.add_argument("--out", default="runs/edge")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    names = a.names or [f"student{i}" for i in range(len(a.students))]
    record_path = out / "edge.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if "onnx" in a.parts:
        record["onnx"] = onnx_part(a.students[-1], out, a.threads)
    if "embed" in a.parts:
        models = {"teacher": a.teacher} if a.embed_teacher else {}
        record["embed"] = embed_part({**models, names[-1]: a.students[-1]}, out, a.threads)
    if "render" in a.parts:
        record["render"] = render_part(out)
    if "sceneseg" in a.parts:
        models = {"teacher": a.teacher, "floor": f"floor:{a.teacher}", **dict(zip(names, a.students))}
        record["sceneseg"] = scene_part(models, out)
        record["sceneseg_teacher"] = a.teacher
    record["machine"] = {
        "threads": a.threads,
        "peak_rss_mb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    record_path.write_text(json.dumps(record, indent=1, default=float))
    print(json.dumps({k: v for k, v in record.items() if k != "sceneseg"}, indent=1, default=float))


if __name__ == "__main__":
    main()
