"""``kicadboards``: the KiCad demo boards assembled in 3D, a real large-scene set (10^5-10^6 points).

Each ``.kicad_pcb`` of Debian ``kicad-demos`` is read (a small S-expression parser), its board
body built from the ``Edge.Cuts`` outline and ``general (thickness)``, and every footprint's VRML
model from ``kicad-packages3d`` placed the way KiCad's 3D viewer places it:

    p = T(x, -y, z_side) . Rz(orientation) . [flip: Rx(180)] . T(offset) . Rz(-rz) Ry(-ry) Rx(-rx) . S . (2.54 v)

(model units are 0.1 inch; board y points down in the file, up here; the board spans z in
[-thickness, 0]; a footprint on ``B.Cu`` hangs under the board). Surface points are sampled by
area over the board (top, bottom, edges) and the component meshes; each point is labelled with its
component's KiCad-33 class (from the model's library folder), ``board``, or ``other`` (libraries
outside KiCad-33).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trimesh
from matplotlib.path import Path as MplPath
from scipy.spatial import ConvexHull
from typing_extensions import override

from foundry3d.data.base import DatasetError
from foundry3d.data.building import BuildRun, DebianRecipe, Labelled, Sources, build_from_debian
from foundry3d.data.catalogue import BOARDS_VERSION
from foundry3d.data.debian import iter_members
from foundry3d.data.kicad import CLASSES as KICAD_CLASSES
from foundry3d.data.kicad import library_class
from foundry3d.data.mesh import MeshError
from foundry3d.data.vrml import VRMLError, read_mesh

SCENE_CLASSES = [*KICAD_CLASSES, "board", "other"]
BOARD, OTHER = len(KICAD_CLASSES), len(KICAD_CLASSES) + 1
_TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()"]+')


def parse_sexpr(text: str) -> list:
    """Nested lists of strings (quotes removed) of a KiCad S-expression file."""
    stack: list[list] = [[]]
    for tok in _TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) < 2:
                raise MeshError("unbalanced parentheses in the board file")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok[1:-1] if tok.startswith('"') else tok)
    if len(stack) != 1 or not stack[0]:
        raise MeshError("unbalanced parentheses in the board file")
    return stack[0][0]


def _find(node: list, key: str) -> list | None:
    return next((c for c in node if isinstance(c, list) and c and c[0] == key), None)


def _all(node: list, key: str) -> list[list]:
    return [c for c in node if isinstance(c, list) and c and c[0] == key]


def _xy(node: list | None) -> tuple[float, float]:
    if node is None:
        raise MeshError("board item without coordinates")
    return float(node[1]), -float(node[2])  # KiCad's y points down


@dataclass
class Placement:
    """One footprint's 3-D model on a board: the model file and its transform into the board frame."""

    library: str  # model library folder, e.g. Capacitor_SMD
    model: str  # path of the .wrl inside kicad-packages3d
    matrix: np.ndarray  # 4x4, model (mm) -> board frame (mm)


@dataclass
class Board:
    """A KiCad board as the scene builder reads it: outline, thickness and the placed component models."""

    name: str
    thickness: float
    loops: list[np.ndarray] = field(default_factory=list)  # closed outline polygons (x, y), mm
    placements: list[Placement] = field(default_factory=list)
    footprints: int = 0


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    m = np.eye(4)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _translate(x: float, y: float, z: float) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def _xyz(node: list | None, default: float) -> tuple[float, float, float]:
    inner = _find(node, "xyz") if node is not None else None
    if inner is None:
        return default, default, default
    return float(inner[1]), float(inner[2]), float(inner[3])


def _arc_points(start: tuple, mid: tuple, end: tuple, n: int = 24) -> list[tuple[float, float]]:
    (x1, y1), (x2, y2), (x3, y3) = start, mid, end
    d = 2 * (x1 * (y2 - y3) + x2 * (y3 - y1) + x3 * (y1 - y2))
    if abs(d) < 1e-12:
        return [start, end]
    ux = ((x1**2 + y1**2) * (y2 - y3) + (x2**2 + y2**2) * (y3 - y1) + (x3**2 + y3**2) * (y1 - y2)) / d
    uy = ((x1**2 + y1**2) * (x3 - x2) + (x2**2 + y2**2) * (x1 - x3) + (x3**2 + y3**2) * (x2 - x1)) / d
    r = math.hypot(x1 - ux, y1 - uy)
    a1, a2, a3 = (math.atan2(y - uy, x - ux) for x, y in (start, mid, end))

    # go from a1 to a3 through a2
    def span(a: float, b: float) -> float:
        return (b - a) % (2 * math.pi)

    ccw = span(a1, a2) < span(a1, a3)
    total = span(a1, a3) if ccw else -span(a3, a1)
    return [(ux + r * math.cos(a1 + total * t / n), uy + r * math.sin(a1 + total * t / n)) for t in range(n + 1)]


def _segments(pcb: list) -> list[list[tuple[float, float]]]:
    segs: list[list[tuple[float, float]]] = []
    for item in pcb:
        if not isinstance(item, list) or not item or not str(item[0]).startswith("gr_"):
            continue
        layer = _find(item, "layer")
        if layer is None or layer[1] != "Edge.Cuts":
            continue
        kind = item[0]
        if kind == "gr_line":
            segs.append([_xy(_find(item, "start")), _xy(_find(item, "end"))])
        elif kind == "gr_arc":
            if _find(item, "mid") is not None:
                segs.append(_arc_points(_xy(_find(item, "start")), _xy(_find(item, "mid")), _xy(_find(item, "end"))))
        elif kind == "gr_circle":
            cx, cy = _xy(_find(item, "center"))
            ex, ey = _xy(_find(item, "end"))
            r = math.hypot(ex - cx, ey - cy)
            pts = [
                (cx + r * math.cos(2 * math.pi * t / 48), cy + r * math.sin(2 * math.pi * t / 48)) for t in range(49)
            ]
            segs.append(pts)
        elif kind == "gr_rect":
            (x1, y1), (x2, y2) = _xy(_find(item, "start")), _xy(_find(item, "end"))
            segs.append([(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)])
        elif kind == "gr_poly":
            pts = [(float(p[1]), -float(p[2])) for p in _all(_find(item, "pts") or [], "xy")]
            if pts:
                segs.append([*pts, pts[0]])
    return segs


def _loops(segs: list[list[tuple[float, float]]], tol: float = 1e-3) -> list[np.ndarray]:
    """Chain outline pieces end to end into closed loops (pieces that close on themselves stay)."""
    pieces = [np.asarray(s, np.float64) for s in segs if len(s) >= 2]
    loops = []
    while pieces:
        chain = pieces.pop(0)
        grown = True
        while grown and np.linalg.norm(chain[0] - chain[-1]) > tol:
            grown = False
            for i, p in enumerate(pieces):
                if np.linalg.norm(p[0] - chain[-1]) <= tol:
                    chain = np.concatenate([chain, p[1:]])
                elif np.linalg.norm(p[-1] - chain[-1]) <= tol:
                    chain = np.concatenate([chain, p[::-1][1:]])
                else:
                    continue
                pieces.pop(i)
                grown = True
                break
        if np.linalg.norm(chain[0] - chain[-1]) <= tol and len(chain) >= 4:
            loops.append(chain)
    return loops


def read_board(name: str, text: str) -> Board:
    """Outline, thickness and model placements of one ``.kicad_pcb`` file."""
    pcb = parse_sexpr(text)
    if not pcb or pcb[0] != "kicad_pcb":
        raise MeshError(f"{name}: not a kicad_pcb file")
    general = _find(pcb, "general")
    thick = _find(general, "thickness") if general else None
    board = Board(name, float(thick[1]) if thick else 1.6)
    segs = _segments(pcb)
    board.loops = _loops(segs)
    if not board.loops and segs:  # an outline that does not close: its convex hull
        pts = np.concatenate([np.asarray(s) for s in segs])
        hull = pts[ConvexHull(pts).vertices]
        board.loops = [np.concatenate([hull, hull[:1]])]
    for fp in _all(pcb, "footprint") + _all(pcb, "module"):
        board.footprints += 1
        at = _find(fp, "at")
        if at is None:
            continue
        x, y = float(at[1]), -float(at[2])
        orient = float(at[3]) if len(at) > 3 and re.fullmatch(r"-?[\d.]+", str(at[3])) else 0.0
        layer = _find(fp, "layer")
        back = layer is not None and layer[1].startswith("B.")
        base = _translate(x, y, -board.thickness if back else 0.0) @ _rot("z", orient)
        if back:
            base = base @ _rot("x", 180.0)
        for model in _all(fp, "model"):
            if "hide" in model[2:]:
                continue
            path = str(model[1]).replace("\\", "/")
            m = re.search(r"([^/]+)\.3dshapes/([^/]+?)(?:\.(?:wrl|step|stp|wings))?$", path, re.IGNORECASE)
            if m is None:
                continue
            off = _xyz(_find(model, "offset") or _find(model, "at"), 0.0)
            if _find(model, "at") is not None and _find(model, "offset") is None:
                off = (25.4 * off[0], 25.4 * off[1], 25.4 * off[2])  # KiCad 5 files: (at (xyz)) in inches
            sc, ro = _xyz(_find(model, "scale"), 1.0), _xyz(_find(model, "rotate"), 0.0)
            mat = (
                base
                @ _translate(*off)
                @ _rot("z", -ro[2])
                @ _rot("y", -ro[1])
                @ _rot("x", -ro[0])
                @ np.diag([sc[0] * 2.54, sc[1] * 2.54, sc[2] * 2.54, 1.0])
            )
            board.placements.append(Placement(m.group(1), f"{m.group(1)}.3dshapes/{m.group(2)}.wrl", mat))
    return board


def _inside(loops: list[np.ndarray], xy: np.ndarray) -> np.ndarray:
    """Even-odd fill of the outline loops (a loop inside another is a cut-out)."""

    count = np.zeros(len(xy), np.int64)
    for loop in loops:
        count += MplPath(loop).contains_points(xy)
    return count % 2 == 1


def sample_board(board: Board, meshes: dict[str, Any], num_points: int, seed: int) -> dict[str, Any]:
    """``num_points`` surface points (float32, mm) with class labels; component meshes from ``meshes``
    (model path -> (vertices, faces)); missing models are counted, not fatal."""

    rng = np.random.default_rng(seed)
    verts, faces, labels, base = [], [], [], 0
    missing = 0
    for pl in board.placements:
        mesh = meshes.get(pl.model)
        if mesh is None:
            missing += 1
            continue
        v, f = mesh
        vh = np.concatenate([v, np.ones((len(v), 1))], 1) @ pl.matrix.T
        verts.append(vh[:, :3])
        faces.append(f + base)
        cls = library_class(pl.library)
        labels.append(np.full(len(f), KICAD_CLASSES.index(cls) if cls in KICAD_CLASSES else OTHER))
        base += len(v)
    comp_area = 0.0
    if verts:
        comp = trimesh.Trimesh(np.concatenate(verts), np.concatenate(faces), process=False, validate=False)
        comp_area = float(comp.area)
    if not board.loops:
        raise MeshError(f"{board.name}: no board outline on Edge.Cuts")
    lo = np.min([lp.min(0) for lp in board.loops], 0)
    hi = np.max([lp.max(0) for lp in board.loops], 0)
    probe = rng.uniform(lo, hi, size=(20000, 2))
    board_area = float(np.prod(hi - lo) * _inside(board.loops, probe).mean())
    perim = sum(float(np.linalg.norm(np.diff(lp, axis=0), axis=1).sum()) for lp in board.loops)
    areas = np.array([2 * board_area, perim * board.thickness, comp_area])
    counts = np.floor(num_points * areas / areas.sum()).astype(int)
    counts[0] += num_points - counts.sum()
    pts, lab = [], []
    got = np.zeros((0, 2))
    while len(got) < counts[0]:  # top and bottom faces: rejection sampling inside the outline
        cand = rng.uniform(lo, hi, size=(2 * (counts[0] - len(got)) + 64, 2))
        got = np.concatenate([got, cand[_inside(board.loops, cand)]])
    got = got[: counts[0]]
    z = np.where(rng.random(len(got)) < 0.5, 0.0, -board.thickness)
    pts.append(np.column_stack([got, z]))
    lab.append(np.full(len(got), BOARD))
    if counts[1]:  # edges: along the outline, across the thickness
        seglen = np.concatenate([np.linalg.norm(np.diff(lp, axis=0), axis=1) for lp in board.loops])
        starts = np.concatenate([lp[:-1] for lp in board.loops])
        ends = np.concatenate([lp[1:] for lp in board.loops])
        which = rng.choice(len(seglen), size=counts[1], p=seglen / seglen.sum())
        t = rng.random(counts[1])[:, None]
        xy = starts[which] * (1 - t) + ends[which] * t
        pts.append(np.column_stack([xy, -board.thickness * rng.random(counts[1])]))
        lab.append(np.full(counts[1], BOARD))
    if counts[2] and verts:
        p, fi = trimesh.sample.sample_surface(comp, counts[2], seed=int(rng.integers(2**31)))
        pts.append(np.asarray(p))
        lab.append(np.concatenate(labels)[fi])
    points = np.concatenate(pts).astype(np.float32)
    order = rng.permutation(len(points))  # the first k points are a uniform subsample
    return {
        "points": points[order],
        "labels": np.concatenate(lab).astype(np.int16)[order],
        "missing_models": missing,
        "components": len(board.placements),
        "board_area_mm2": board_area,
    }


class KiCadBoards(DebianRecipe):
    """The demo boards of ``kicad-demos`` with the footprint models of ``kicad-packages3d`` placed on them."""

    name = "kicadboards"
    version = BOARDS_VERSION
    packages = ("kicad-demos", "kicad-packages3d")
    default_points = 1_000_000
    min_points = 100_000
    sort_by_key = True  # boards by name

    @override
    def jobs(self, src: Sources, points: int) -> Iterator[tuple[str, tuple[Any, dict[str, Any]]]]:
        boards: list[Board | tuple[str, str]] = []
        for path, data in iter_members(src.debs["kicad-demos"], ["usr/share/kicad/demos/*.kicad_pcb"]):
            name = path.split("/")[-1].removesuffix(".kicad_pcb")
            try:
                b = read_board(name, data.decode("utf-8", errors="replace"))
            except MeshError as e:
                boards.append((name, str(e)))  # sampled as a skip with its reason
                continue
            boards.append(b if b.placements else (name, "no 3D models placed"))
        if not any(isinstance(b, Board) for b in boards):
            raise DatasetError(f"{src.debs['kicad-demos']}: no board with 3D models")
        wanted = sorted({pl.model for b in boards if isinstance(b, Board) for pl in b.placements})
        self.wanted, meshes = len(wanted), {}
        for path, data in iter_members(src.debs["kicad-packages3d"], [f"usr/share/kicad/3dmodels/{m}" for m in wanted]):
            key = path.split("3dmodels/", 1)[1]
            try:
                v, f, _, _ = read_mesh(data, key)
            except VRMLError:
                continue
            meshes[key] = (v, f)
        self.read = len(meshes)
        for entry in boards:
            if isinstance(entry, Board):
                models = {pl.model: meshes[pl.model] for pl in entry.placements if pl.model in meshes}
                yield entry.name, (entry, models)
            else:
                yield entry[0], (entry[1], {})

    @override
    def describe(self, job: tuple[Any, dict[str, Any]]) -> None:
        return None  # boards and meshes stay with the worker

    @staticmethod
    @override
    def sample(job: tuple[Any, dict[str, Any]], points: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
        board, meshes = job
        if not isinstance(board, Board):
            raise MeshError(board)  # the reason the board could not be read
        t1 = time.time()
        s = sample_board(board, meshes, points, seed)
        centre = s["points"].mean(0)
        scale = float(np.linalg.norm(s["points"] - centre, axis=1).max())
        present = np.bincount(s["labels"], minlength=len(SCENE_CLASSES))
        stats = {
            "board": board.name,
            "footprints": board.footprints,
            "models_placed": s["components"],
            "models_missing": s["missing_models"],
            "board_area_mm2": round(s["board_area_mm2"], 1),
            "thickness_mm": board.thickness,
            "centre_mm": centre.round(3).tolist(),
            "scale_mm": round(scale, 3),
            "classes_present": {SCENE_CLASSES[i]: int(c) for i, c in enumerate(present) if c},
            "seconds": round(time.time() - t1, 1),
        }
        return ((s["points"] - centre) / scale).astype(np.float16), s["labels"], stats

    @override
    def label(self, keys: list[str], jobs: list, results: list, src: Sources) -> Labelled:
        test = [i for i in range(len(keys)) if i % 3 == 1]  # every third board (sorted by name) is held out
        self.stats = [r[2] for r in results]
        return Labelled(
            None, SCENE_CLASSES, [{"id": k} for k in keys],
            splits={"train": [i for i in range(len(keys)) if i not in test], "test": test},
            arrays={"parts": np.stack([r[1] for r in results])},
            files={"boards.json": self.stats},
        )  # fmt: skip

    @override
    def record(self, lab: Labelled, run: BuildRun) -> dict[str, Any]:
        src, splits, skipped = run.src, run.splits, run.skipped
        return {
            "name": self.name,
            "version": self.version,
            "source_package": "kicad-demos + kicad-packages3d",
            "package_version": f"{src.versions['kicad-demos']} / {src.versions['kicad-packages3d']}",
            "points_per_shape": run.points,
            "dtype": "float16",
            "up_axis": "z (boards lie in x-y; components point +z)",
            "normalisation": "per board: centroid at origin, max norm 1 (centre_mm / scale_mm in boards.json)",
            "boards": len(lab.shapes),
            "shapes": len(lab.shapes),
            "splits": {k: len(v) for k, v in splits.items()},
            "classes": SCENE_CLASSES,
            "skipped": {"count": len(skipped), "shapes": skipped},
            "models_read": self.read,
            "models_wanted": self.wanted,
            "build_seconds": round(time.time() - run.t0, 1),
            "licence": "boards: kicad-demos (GPL-3+ / per demo); models: kicad-packages3d CC-BY-SA-4.0",
        }

    @override
    def skip_record(self, key: str, job: None, reason: str) -> dict[str, str]:
        return {"board": key, "reason": reason}

    @override
    def attribution(self, labelled: Labelled, src: Sources) -> str:
        return (
            "# kicadboards\n\nBoards from Debian kicad-demos, component models from kicad-packages3d "
            "(CC-BY-SA-4.0 with the KiCad libraries exception). Point clouds derived from both.\n\n"
            + json.dumps(self.stats, indent=1)
            + "\n"
        )


def build_kicadboards(
    root: str | None = None,
    points: int = 1_000_000,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    debs: dict[str, str] | None = None,
) -> Any:
    """Build ``kicadboards`` from ``kicad-demos`` + ``kicad-packages3d``; returns its folder."""
    return build_from_debian(KiCadBoards(), root, points, seed, workers, force, progress, debs)  # type: ignore[arg-type]
