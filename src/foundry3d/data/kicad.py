"""KiCad-33 and KiCad-Parts from the VRML models of Debian ``kicad-packages3d``.

Library folders map to 33 coarse classes (KiCad-33); the remaining small libraries form the
unlabelled pool. Every point carries a part label from the material of the shape it was sampled
from: 0 body (plastic, epoxy, ... and the thin ``IC-LABEL`` marking decals, merged into body),
1 pins/metal (``PIN*``, ``MET*``), 2 lens/glass (``LED*``, ``GLASS*``). KiCad-Parts is the same
shapes without the all-metal ``standoff`` class, with each class as a segmentation category.
Coordinates are converted from KiCad's Z-up to the Y-up convention of the other datasets.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from foundry3d.data.mesh import MeshError, normalize_unit_sphere, sample_labelled_surface, shape_seed
from foundry3d.data.vrml import VRMLError, read_mesh

# (library folder patterns, class) in the order the classes are numbered.
LIBRARY_CLASSES: list[tuple[list[str], str]] = [
    (["Capacitor_THT"], "capacitor_tht"),
    (["Capacitor_SMD", "Capacitor_Tantalum_SMD"], "capacitor_smd"),
    (["Resistor_THT"], "resistor_tht"),
    (["Resistor_SMD"], "resistor_smd"),
    (["Inductor_THT"], "inductor_tht"),
    (["Inductor_SMD"], "inductor_smd"),
    (["Diode_THT"], "diode_tht"),
    (["Diode_SMD"], "diode_smd"),
    (["LED_THT"], "led_tht"),
    (["LED_SMD"], "led_smd"),
    (["Crystal"], "crystal"),
    (["Connector_PinHeader_*"], "pin_header"),
    (["Connector_PinSocket_*"], "pin_socket"),
    (["TerminalBlock_*", "Connector_Phoenix_*"], "terminal_block"),
    (["Connector_JST"], "connector_jst"),
    (["Connector_Molex"], "connector_molex"),
    (["Connector_Dsub"], "connector_dsub"),
    (["Connector_FFC-FPC"], "connector_ffc-fpc"),
    (["Button_Switch_*"], "button_switch"),
    (["Package_DIP"], "package_dip"),
    (["Package_SO"], "package_so"),
    (["Package_QFP"], "package_qfp"),
    (["Package_DFN_QFN", "Package_SON", "Package_LGA"], "package_qfn"),
    (["Package_BGA"], "package_bga"),
    (["Package_TO_SOT_THT"], "package_to_sot_tht"),
    (["Package_TO_SOT_SMD"], "package_to_sot_smd"),
    (["Varistor"], "varistor"),
    (["Relay_*"], "relay"),
    (["Mounting_Wuerth"], "standoff"),
    (["Display", "Display_7Segment"], "display"),
    (["Converter_DCDC"], "converter_dcdc"),
    (["Fuse"], "fuse"),
    (["Battery"], "battery"),
]
CLASSES = [c for _, c in LIBRARY_CLASSES]
PARTS = ["body", "pins", "lens"]
PARTS_EXCLUDED_CLASSES = ["standoff"]  # all metal: nothing to segment


def library_class(library: str) -> str:
    """Class of a library folder name (without ``.3dshapes``), or 'other'."""
    for patterns, cls in LIBRARY_CLASSES:
        if any(fnmatch.fnmatchcase(library, p) for p in patterns):
            return cls
    return "other"


def material_part(material: str) -> int:
    """Part id of a KiCad material name: marking decals count as body."""
    m = material.upper()
    if m.startswith(("PIN", "MET")):
        return 1
    if m.startswith(("LED", "GLASS")):
        return 2
    return 0


def sample_wrl(data: bytes, source: str, num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Y-up unit-sphere cloud (N, 3), per-point part ids (N,), and the materials found."""
    v, faces, face_mat, materials = read_mesh(data, source)
    if len(faces) == 0:
        raise MeshError("no geometry")
    labels = np.array([material_part(m) for m in materials], np.uint8)[face_mat]
    v = np.stack([v[:, 0], v[:, 2], -v[:, 1]], 1)  # Z-up -> Y-up
    pts, parts = sample_labelled_surface(v, faces, labels, num_points, seed)
    return normalize_unit_sphere(pts), parts.astype(np.uint8), sorted(set(materials))


def sample_job(args: tuple[str, bytes, int, int]) -> tuple[str, str, object]:
    """Worker entry point: (path, 'ok', result) or (path, 'skip', reason)."""
    path, data, num_points, seed = args
    try:
        return path, "ok", sample_wrl(data, path, num_points, shape_seed(seed, path))
    except (MeshError, VRMLError) as e:
        return path, "skip", str(e)
