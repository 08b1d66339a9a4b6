"""Point operations in pure PyTorch: FPS, chunked kNN, grouping, sequencing."""

from foundry3d.ops.fps import farthest_point_sample
from foundry3d.ops.group import gather_points, group_points
from foundry3d.ops.knn import knn, square_distance
from foundry3d.ops.sequence import nearest_neighbour_order

__all__ = [
    "farthest_point_sample",
    "gather_points",
    "group_points",
    "knn",
    "nearest_neighbour_order",
    "square_distance",
]
