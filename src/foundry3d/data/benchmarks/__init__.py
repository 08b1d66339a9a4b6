"""Standard benchmark loaders, registered on import: ShapeNet-55/34, ModelNet40 (+ few-shot),
ScanObjectNN (OBJ_BG, OBJ_ONLY, PB_T50_RS) and ShapeNetPart."""

from foundry3d.data.benchmarks import modelnet, scanobjectnn, shapenet, shapenetpart
from foundry3d.data.benchmarks.common import BENCHMARKS, BenchmarkEntry

__all__ = ["BENCHMARKS", "BenchmarkEntry", "modelnet", "scanobjectnn", "shapenet", "shapenetpart"]
