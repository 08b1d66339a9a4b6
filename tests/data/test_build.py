import numpy as np
import pytest

from foundry3d.data import build as build_mod
from foundry3d.data import debian
from foundry3d.data.base import DatasetError
from foundry3d.data.kicad import library_class, material_part
from foundry3d.data.mesh import MeshError, sample_labelled_surface
from foundry3d.data.sh3d import classify, parse_catalog
from foundry3d.data.store import DatasetWriter, is_complete
from foundry3d.data.vrml import VRMLError, read_mesh

WRL = b"""#VRML V2.0 utf8
Shape { appearance Appearance {material DEF PIN-01 Material { diffuseColor 0.8 0.8 0.8 } } }
Shape { geometry IndexedFaceSet
{ coordIndex [0,1,2,3,-1,0,2,4]
coord Coordinate { point [0 0 0,1 0 0,1 1 0,0 1 0,0.5 0.5 1]
}}
appearance Appearance{material USE PIN-01 }
}
Shape { geometry IndexedFaceSet { coordIndex [0,1,2,-1] coord Coordinate { point [0 0 0, 0 0 1, 0 1 0] } }
appearance Appearance{material DEF IC-BODY-EPOXY-04 Material { } } }
"""


def test_vrml_reader():
    vertices, faces, face_mat, materials = read_mesh(WRL)
    assert materials == ["PIN-01", "IC-BODY-EPOXY-04"] and vertices.shape == (8, 3)
    assert faces[face_mat == 0].tolist() == [[0, 1, 2], [0, 2, 3], [0, 2, 4]]  # quad fanned, open polygon closed
    assert faces[face_mat == 1].tolist() == [[5, 6, 7]]  # the second shape's vertices follow the first's
    with pytest.raises(VRMLError, match="not a VRML"):
        read_mesh(b"solid stl")
    with pytest.raises(VRMLError, match="outside"):
        read_mesh(
            b"#VRML V2.0\nShape { geometry IndexedFaceSet { coordIndex [0,1,9,-1] "
            b"coord Coordinate { point [0 0 0,1 0 0,0 1 0] } } }"
        )


def test_label_rules():
    assert material_part("PIN-01") == 1 and material_part("met-copper") == 1
    assert material_part("LED-RED") == 2 and material_part("IC-LABEL-01") == 0 and material_part("none") == 0
    assert library_class("Connector_PinHeader_2.54mm") == "pin_header" and library_class("Valve") == "other"
    assert classify("Dining chair", "Kitchen") == "chair" and classify("Wheelchair", "Misc") == "other"
    assert classify("Dog", "Characters") == "animal" and classify("Man", "Characters") == "person"
    assert classify("Bedside table", "Bedroom") == "cabinet"
    cat = parse_catalog("# c\nname#1=Chair\nmodel#1=/a/b.obj\nmodelRotation#1=1 0 0 0 0 1 0 -1 0\nname#2=x\n")
    assert cat == {1: {"name": "Chair", "model": "/a/b.obj", "modelRotation": "1 0 0 0 0 1 0 -1 0"}}


def test_zero_area_meshes_are_refused():
    v = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], float)
    with pytest.raises(MeshError, match="zero surface area"):
        sample_labelled_surface(v, np.array([[0, 1, 2]]), np.zeros(1), 16, 0)
    with pytest.raises(MeshError, match="no faces"):
        sample_labelled_surface(v, np.zeros((0, 3), int), np.zeros(0), 16, 0)


def test_interrupted_write_never_looks_complete(tmp_path):
    final = tmp_path / "ds-v1"
    w = DatasetWriter(final)
    w.array("points", np.zeros((2, 4, 3)))
    w.abort()
    assert not final.exists() and not list(tmp_path.iterdir())
    w = DatasetWriter(final)
    w.array("points", np.zeros((2, 4, 3)))
    assert not is_complete(final) and not is_complete(w.tmp)  # no meta.json yet
    w.commit({"name": "ds"})
    assert is_complete(final)


def test_archive_members_cannot_escape(tmp_path, monkeypatch):
    assert debian._safe_name("./usr/share/a.wrl").as_posix() == "usr/share/a.wrl"
    assert debian._safe_name("../../etc/passwd") is None and debian._safe_name("a/../../b") is None
    monkeypatch.setattr(debian, "iter_members", lambda deb, patterns: iter([("a/../../x", b"1")]))
    with pytest.raises(debian.PackageError, match="outside"):
        debian.extract_members(tmp_path / "x.deb", tmp_path / "dest", ["*"])


def test_missing_apt_explains_the_alternative(tmp_path, monkeypatch):
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(debian.PackageError, match="--deb"):
        debian.download_package("sweethome3d-furniture", tmp_path)


def test_unknown_build_name():
    with pytest.raises(DatasetError, match="buildable"):
        build_mod.build("imagenet")


def test_reading_datasets_imports_no_builder_or_model_dependency():
    """The reader, the catalogue and every spec stay light: no builder's (trimesh, scipy, matplotlib) or model's
    (torch) dependency is imported to list or read datasets."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from foundry3d.data.registry import list_datasets, load_dataset\n"
        "from foundry3d.data.catalogue import catalogue\n"
        "assert len(catalogue()) >= 6 and list_datasets()\n"
        "load_dataset('synthetic:test@2')\n"
        "print(sorted(m for m in ('trimesh', 'scipy', 'matplotlib', 'torch', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_built_dataset_has_a_spec_file_and_every_build_a_builder():
    from foundry3d.data.catalogue import builds, catalogue

    names = set(catalogue().names())
    assert {"sh3d16", "kicad33", "kicadparts", "corpus", "oad", "kicadboards", "ufoai"} <= names
    for key, spec in builds().items():
        assert callable(spec.load_builder()), key  # the module:function path resolves
    from foundry3d.data.build import build

    with pytest.raises(DatasetError, match=r"buildable: corpus, kicad, kicadboards, sh3d16, ufoai"):
        build("modelnet")


def test_data_info_shows_the_protocol_a_dataset_is_evaluated_with():
    from foundry3d.data.registry import dataset_info

    assert dataset_info("synthetic:test@2")["protocol"]["sampling"] == "first"


def test_a_deb_for_a_build_of_several_packages_is_one_line():
    from foundry3d.data.build import build

    with pytest.raises(DatasetError, match=r"--deb x.deb: kicadboards is built from several packages"):
        build("kicadboards", deb="x.deb")
