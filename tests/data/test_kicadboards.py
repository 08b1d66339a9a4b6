"""The board assembler on a generated ``.kicad_pcb``: outline, thickness, footprint placement (position,
rotation, side, the model's own offset) and per-point labels, checked against hand-computed positions."""

import numpy as np
import pytest

from foundry3d.data.kicad import CLASSES
from foundry3d.data.kicadboards import BOARD, read_board, sample_board
from foundry3d.data.mesh import MeshError

PCB = """(kicad_pcb (version 20211014) (generator pcbnew)
  (general (thickness 1.2))
  (gr_rect (start 0 0) (end 40 20) (layer "Edge.Cuts") (width 0.1))
  (footprint "LED_THT:LED_D3.0mm" (layer "F.Cu") (at 10 5 90)
    (model "${KICAD6_3DMODEL_DIR}/LED_THT.3dshapes/LED_D3.0mm.wrl"
      (offset (xyz 1 0 0)) (scale (xyz 1 1 1)) (rotate (xyz 0 0 0))))
  (footprint "Resistor_SMD:R_0805" (layer "B.Cu") (at 30 15)
    (model "${KICAD6_3DMODEL_DIR}/Resistor_SMD.3dshapes/R_0805.wrl"
      (offset (xyz 0 0 0)) (scale (xyz 1 1 1)) (rotate (xyz 0 0 0))))
  (footprint "Resistor_SMD:R_0805" (layer "F.Cu") (at 35 10)
    (model "${KICAD6_3DMODEL_DIR}/Resistor_SMD.3dshapes/R_0805.wrl" hide))
)
"""


def _box() -> tuple[np.ndarray, np.ndarray]:
    """A 1 x 1 x 1 model-unit box (2.54 mm) standing on z = 0, centred on the model origin in x-y."""
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (0.0, 1.0)])
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
    return v, f


def test_a_generated_board_is_assembled_where_kicad_places_its_parts():
    board = read_board("gen", PCB)
    assert board.thickness == 1.2 and board.footprints == 3 and len(board.placements) == 2  # hidden model left out
    meshes = {p.model: _box() for p in board.placements}
    s = sample_board(board, meshes, num_points=200_000, seed=0)
    pts, lab = s["points"], s["labels"]
    assert s["missing_models"] == 0 and abs(s["board_area_mm2"] - 800) < 15
    on_board = lab == BOARD
    assert (pts[on_board, 0] >= -1e-4).all() and (pts[on_board, 0] <= 40 + 1e-4).all()
    assert (pts[on_board, 1] <= 1e-4).all() and (pts[on_board, 1] >= -20 - 1e-4).all()  # y points up: -20..0
    assert (pts[on_board, 2] <= 1e-4).all() and (pts[on_board, 2] >= -1.2 - 1e-4).all()
    led = pts[lab == CLASSES.index("led_tht")]
    res = pts[lab == CLASSES.index("resistor_smd")]
    # LED: at (10, -5), rotated 90 degrees, so its 1 mm x-offset points along +y: centre (10, -4), on top
    assert np.allclose(led[:, :2].mean(0), [10, -4], atol=0.1)
    assert led[:, 2].min() > -1e-4 and np.isclose(led[:, 2].max(), 2.54, atol=1e-3)
    # resistor on the back: flipped under the board, hanging down from z = -1.2
    assert np.allclose(res[:, :2].mean(0), [30, -15], atol=0.1)
    assert np.isclose(res[:, 2].max(), -1.2, atol=1e-3) and np.isclose(res[:, 2].min(), -1.2 - 2.54, atol=1e-3)
    # a missing model is counted, not fatal
    assert sample_board(board, {}, num_points=100_000, seed=0)["missing_models"] == 2


def test_a_board_without_an_outline_is_an_error():
    board = read_board("bare", "(kicad_pcb (general (thickness 1.6)))")
    with pytest.raises(MeshError, match="bare: no board outline"):
        sample_board(board, {}, num_points=1000, seed=0)
    with pytest.raises(MeshError, match="not a kicad_pcb"):
        read_board("x", "(module foo)")
