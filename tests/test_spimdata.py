"""SpimData XML reader, checked on the real files against an independent ElementTree reading."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tilefuse.errors import IncompatibleTilesError, UnsupportedFormatError
from tilefuse.io.spimdata import read_spimdata, unit_to_um

REAL_XMLS = [
    "bigstitcher-xml/bigstitcher_0.xml",
    "bigstitcher-xml/bigstitcher_1.xml",
    "bigstitcher-xml/bigstitcher_2.xml",
    "bigstitcher-xml/bigstitcher_3.xml",
    "bigstitcher-xml/bigstitcher_4.xml",
    "bigstitcher-xml/bigstitcher_5.xml",
    "bigstitcher-xml/bigstitcher_6.xml",
    "bigstitcher-xml/rhapso_drosophila_dataset.xml",
    "bdv-h5/pybdv_example.xml",
    "bdv-h5/mitosis_small_hdf5.xml",
]
IDS = [n.split("/")[-1] for n in REAL_XMLS]


# -- an independent reading with ElementTree (shares no code with the module) ------------------
def et_root(path):
    return ET.parse(path).getroot()


def et_setup_attr(setup, name):
    text = setup.findtext(f"attributes/{name}")
    return 0 if text is None else int(text.strip())


def et_timepoints(root):
    tp = root.find("SequenceDescription/Timepoints")
    if tp is None:
        return []
    if tp.get("type") == "range":
        return list(range(int(tp.findtext("first")), int(tp.findtext("last")) + 1))
    if tp.get("type") == "list":
        return [int(e.text) for e in tp.findall("Timepoint/id")]
    ids = []
    for part in tp.findtext("integerpattern").split(","):
        a, _, rest = part.strip().partition("-")
        b, _, step = rest.partition(":")
        ids += range(int(a), int(b or a) + 1, int(step or 1))
    return ids


def et_matrix(text):
    m = np.eye(4)
    m[:3] = np.array([float(v) for v in text.split()]).reshape(3, 4)
    return m


def et_bdv_model(registration):
    """BDV's ViewRegistration.updateModel: identity, then concatenate each transform in order."""
    model = np.eye(4)
    for vt in registration.findall("ViewTransform"):
        model = model @ et_matrix(vt.findtext("affine"))
    return model


def et_registrations(root):
    return {
        (int(r.get("timepoint")), int(r.get("setup"))): r for r in root.iter("ViewRegistration")
    }


@pytest.fixture(params=REAL_XMLS, ids=IDS)
def real_xml(request, shared_data):
    return shared_data / request.param


# -- every real file -----------------------------------------------------------------------------
def test_real_file_counts_match_elementtree(real_xml):
    sd = read_spimdata(real_xml)
    root = et_root(real_xml)
    setups = root.findall("SequenceDescription/ViewSetups/ViewSetup")
    assert sorted(sd.setups) == sorted(int(s.findtext("id")) for s in setups)
    assert sd.timepoints == et_timepoints(root)
    regs = et_registrations(root)
    assert set(sd.registrations) == set(regs)
    for key, reg in regs.items():
        names = [vt.findtext("Name") for vt in reg.findall("ViewTransform")]
        assert [t.name for t in sd.registrations[key]] == [n and n.strip() for n in names]
    for name in ("channel", "illumination", "tile", "angle"):
        ids = {et_setup_attr(s, name) for s in setups}
        assert {s.attribute(name) for s in sd.setups.values()} == ids
    for name, block in ((b.get("name"), b) for b in root.iter("Attributes")):
        assert sorted(sd.attributes[name]) == sorted(int(e.findtext("id")) for e in block)
    loader = root.find("SequenceDescription/ImageLoader")
    if loader is None:
        assert sd.image_loader is None
    else:
        assert sd.image_loader.format == loader.get("format")


def test_real_file_tiles_match_elementtree(real_xml):
    sd = read_spimdata(real_xml)
    root = et_root(real_xml)
    setups = root.findall("SequenceDescription/ViewSetups/ViewSetup")
    tps = et_timepoints(root)
    if not tps:
        assert sd.tiles() == {}
        return
    for angle in {et_setup_attr(s, "angle") for s in setups}:
        expected: dict[int, list[tuple[int, int, int]]] = {}
        for s in setups:
            if et_setup_attr(s, "angle") == angle:
                key = (et_setup_attr(s, "channel"), et_setup_attr(s, "illumination"))
                expected.setdefault(et_setup_attr(s, "tile"), []).append(
                    (*key, int(s.findtext("id")))
                )
        tiles = sd.tiles(tps[0], angle=angle)
        assert tiles == {t: [i for *_, i in sorted(v)] for t, v in sorted(expected.items())}
        channels = {et_setup_attr(s, "channel") for s in setups}
        illuminations = {et_setup_attr(s, "illumination") for s in setups}
        assert all(len(v) <= len(channels) * len(illuminations) for v in tiles.values())


def test_real_file_composed_affines_follow_bdv_order(real_xml):
    sd = read_spimdata(real_xml)
    for key, reg in et_registrations(et_root(real_xml)).items():
        if any(not (vt.findtext("affine") or "").strip() for vt in reg.iter("ViewTransform")):
            with pytest.raises(UnsupportedFormatError, match="empty <affine>"):
                sd.affine_xyz(*key)
            continue
        np.testing.assert_array_equal(sd.affine_xyz(*key), et_bdv_model(reg))
        for vt, t in zip(reg.findall("ViewTransform"), sd.registrations[key], strict=True):
            assert t.affine == tuple(float(v) for v in vt.findtext("affine").split())


def test_real_file_zyx_affine_permutes_rows_and_columns(real_xml):
    sd = read_spimdata(real_xml)
    rng = np.random.default_rng(0)
    for key, reg in list(et_registrations(et_root(real_xml)).items())[:5]:
        if not all((vt.findtext("affine") or "").strip() for vt in reg.iter("ViewTransform")):
            continue
        xyz, zyx = sd.affine_xyz(*key), sd.affine_zyx(*key)
        for i in range(3):
            assert zyx[i, 3] == xyz[2 - i, 3]
            for j in range(3):
                assert zyx[i, j] == xyz[2 - i, 2 - j]
        p = rng.uniform(0, 1000, 3)
        world_xyz = (xyz @ [*p, 1.0])[:3]
        np.testing.assert_allclose((zyx @ [*p[::-1], 1.0])[:3], world_xyz[::-1], rtol=1e-14)


# -- transform order, rotation, calibration ------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["bigstitcher_1.xml", "bigstitcher_4.xml", "bigstitcher_5.xml", "bigstitcher_6.xml"]
)
def test_last_transform_is_applied_first(shared_data, name):
    path = shared_data / "bigstitcher-xml" / name
    sd = read_spimdata(path)
    reg = et_registrations(et_root(path))[(0, 0)]
    mats = [et_matrix(vt.findtext("affine")) for vt in reg.findall("ViewTransform")]
    p = np.array([100.0, 200.0, 30.0, 1.0])
    applied = p
    for m in reversed(mats):  # the bottom transform touches the voxel first
        applied = m @ applied
    np.testing.assert_allclose(sd.affine_xyz(0, 0) @ p, applied, rtol=1e-12)
    wrong = p
    for m in mats:
        wrong = m @ wrong
    assert not np.allclose(wrong, applied)  # the order matters for these files


def test_regularized_affine_has_rotation_terms(shared_data):
    sd = read_spimdata(shared_data / "bigstitcher-xml" / "bigstitcher_1.xml")
    names = [t.name for t in sd.registrations[(0, 0)]]
    assert names[0].startswith("AffineModel3D regularized with an RigidModel3D")
    lin = sd.affine_xyz(0, 0)[:3, :3]
    off = lin - np.diag(np.diag(lin))
    assert np.abs(off).max() > 1e-3  # rotation / shear terms survive the composition


def test_calibration_plus_affine_in_nanometres(shared_data):
    path = shared_data / "bigstitcher-xml" / "bigstitcher_4.xml"
    sd = read_spimdata(path)
    s = sd.setups[0]
    assert (s.file_unit, s.unit) == ("nm", "µm")
    assert s.voxel_size_zyx == (0.4, 0.168, 0.168)
    assert s.size_zyx == (1289, 2048, 2048)
    assert [t.name for t in sd.registrations[(0, 0)]] == ["affine", "calibration"]
    # calibration = diag(voxel / min voxel) -> one world unit is the smallest voxel: 168 nm
    assert sd.world_unit_um(0, 0) == pytest.approx((0.168,) * 3, rel=1e-12)
    reg = et_registrations(et_root(path))[(0, 0)]
    t_xyz = et_bdv_model(reg)[:3, 3]
    np.testing.assert_allclose(sd.placement_zyx(0, 0)[:3, 3], t_xyz[::-1] * 0.168, rtol=1e-12)
    # a z step of one voxel is 400 nm in the world, whatever the calibration
    step = sd.placement_zyx(0, 0) @ [1.0, 0, 0, 0]
    np.testing.assert_allclose(step[:3], [0.4, 0, 0], atol=1e-12)


def test_bigstitcher_6_grid_in_micrometres(shared_data):
    path = shared_data / "bigstitcher-xml" / "bigstitcher_6.xml"
    sd = read_spimdata(path)
    tiles = sd.tiles(0)
    # 2 channels x 2 illuminations of a 2x2 grid: 16 setups, 4 tiles (channels are not tiles)
    assert len(sd.setups) == 16
    assert tiles == {0: [0, 8, 4, 12], 1: [1, 9, 5, 13], 2: [2, 10, 6, 14], 3: [3, 11, 7, 15]}
    s = sd.setups[0]
    assert (s.size_zyx, s.voxel_size_zyx, s.unit) == ((615, 2048, 2048), (10.0, 3.26, 3.26), "µm")
    assert sd.world_unit_um(0, 0) == pytest.approx((3.26,) * 3, rel=1e-12)
    pos = {t: sd.placement_zyx(0, ids[0])[:3, 3] for t, ids in tiles.items()}
    for ids in tiles.values():  # every channel / illumination of a tile sits at the same place
        for i in ids:
            np.testing.assert_array_equal(sd.placement_zyx(0, i), sd.placement_zyx(0, ids[0]))
    # independent: the "Translation to Regular Grid" (XYZ, world units) times the min voxel size
    regs = et_registrations(et_root(path))
    for t, ids in tiles.items():
        grid = regs[(0, ids[0])].findall("ViewTransform")[0]
        assert grid.findtext("Name") == "Translation to Regular Grid"
        xyz = et_matrix(grid.findtext("affine"))[:3, 3]
        np.testing.assert_allclose(pos[t], xyz[::-1] * 3.26, rtol=1e-12)
    pitch_x, pitch_y = pos[2] - pos[0], pos[1] - pos[0]
    np.testing.assert_allclose(pos[3] - pos[1], pitch_x, atol=1e-6)
    np.testing.assert_allclose(pos[3] - pos[2], pitch_y, atol=1e-6)
    # the file rounds world translations (1689.57 world units = 5507.9982 µm): 5 mm grid steps
    np.testing.assert_allclose(pitch_x, [0.0, 0.0, 5008.0], atol=0.01)  # x is last
    np.testing.assert_allclose(pitch_y, [0.0, 5508.0, 0.0], atol=0.01)
    extent = np.array(s.size_zyx) * np.array(s.voxel_size_zyx)
    assert pitch_x[2] < extent[2] and pitch_y[1] < extent[1]  # neighbours overlap


def test_bigstitcher_6_loader_and_preserved_extras(shared_data):
    path = shared_data / "bigstitcher-xml" / "bigstitcher_6.xml"
    sd = read_spimdata(path)
    root = path.parent / "Reuss-MousBrain2x2tiles-2ch.ome.zarr"
    assert sd.image_loader.format == "bdv.multimg.zarr"
    assert sd.image_loader.path == root
    assert sd.image_loader.views[(0, 5)] == root / "s5-t0.zarr"
    assert sd.image_loader.element.get("version") == "3.0"
    assert sd.tree.getroot().find("generatedBy/library").text == "npy2bdv"
    assert sd.attributes["illumination"][1]["name"] == "Right"
    assert sd.attributes["channel"][1]["name"] == "561 nm"


# -- lenient reading of the hand-edited files ------------------------------------------------------
def test_multiline_affine_with_leading_whitespace_warns(shared_data, caplog):
    path = shared_data / "bigstitcher-xml" / "bigstitcher_0.xml"
    with caplog.at_level(logging.WARNING, logger="tilefuse.io.spimdata"):
        sd = read_spimdata(path)
    assert "start with whitespace" in caplog.text
    assert "have no <ViewRegistration>" in caplog.text  # 15 setups, 1 registration
    (t,) = sd.registrations[(0, 0)]
    assert t.affine[:4] == (
        1.0064694598726402,
        -0.005935317175007711,
        -0.002340606752535989,
        -67.19158118915246,
    )
    assert sd.image_loader.path == path.parent / "dataset.n5"  # whitespace around the path
    with pytest.raises(UnsupportedFormatError, match=r"no <ViewRegistration timepoint=0 setup=1>"):
        sd.affine_xyz(0, 1)
    with pytest.raises(KeyError):
        sd.affine_xyz(0, 99)
    # a registration affine with no calibration below it: BigDataViewer's pixel world
    assert sd.world_unit_um(0, 0) == sd.setups[0].voxel_size_zyx


def test_empty_sequence_description(shared_data, caplog):
    with caplog.at_level(logging.WARNING, logger="tilefuse.io.spimdata"):
        sd = read_spimdata(shared_data / "bigstitcher-xml" / "bigstitcher_3.xml")
    assert (sd.setups, sd.timepoints, sd.image_loader, sd.tiles()) == ({}, [], None, {})
    assert len(sd.registrations) == 15
    assert sd.affine_xyz(0, 0)[:3, 3].tolist() == [-7096.0, -23408.0003, -28672.0]
    assert "no <ViewSetups>" in caplog.text


def test_pixel_world_is_bigdataviewers(shared_data, caplog):
    # bigstitcher_1: anisotropic voxels (x, y, z) = (0.748, 0.748, 1.0) um, no calibration (the
    # first-applied transform is a translation): world axis k is one voxel of axis k
    path = shared_data / "bigstitcher-xml" / "bigstitcher_1.xml"
    with caplog.at_level(logging.WARNING, logger="tilefuse.io.spimdata"):
        sd = read_spimdata(path)
        vs = sd.setups[0].voxel_size_zyx
        assert sd.world_unit_um(0, 0) == vs
        placed = sd.placement_zyx(0, 0)
    assert caplog.text.count("world units are voxels") == 1
    model = et_bdv_model(et_registrations(et_root(path))[(0, 0)])  # independent ElementTree
    np.testing.assert_allclose(placed[:3, 3], model[:3, 3][::-1] * np.asarray(vs), rtol=1e-12)
    # an override is per axis; a scalar is refused (it would silently apply to z)
    w = (1.0, 0.5, 0.5)
    np.testing.assert_array_equal(
        sd.placement_zyx(0, 0, world_unit_um=w), np.diag([*w, 1.0]) @ sd.affine_zyx(0, 0)
    )
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        sd.placement_zyx(0, 0, world_unit_um=0.748)


def test_loader_locations(shared_data):
    sd = read_spimdata(shared_data / "bigstitcher-xml" / "bigstitcher_2.xml")
    root = "s3://aind-open-data/exaSPIM_719654_2024-06-14_12-48-10/SPIM.ome.zarr"
    assert sd.image_loader.path == root
    assert sd.image_loader.views[(0, 3)] == f"{root}/tile_x_0001_y_0000_z_0000_ch_488.zarr"
    sd = read_spimdata(shared_data / "bigstitcher-xml" / "bigstitcher_1.xml")
    assert str(sd.image_loader.path) == "/data/foo_dataset/SPIM.ome.zarr"
    sd = read_spimdata(shared_data / "bdv-h5" / "pybdv_example.xml")
    assert sd.image_loader.path == shared_data / "bdv-h5" / "example.h5"  # as written, not on disk
    assert sd.setups[0].unit == "pixel"
    assert sd.setups[0].file_unit == ""
    sd = read_spimdata(shared_data / "bdv-h5" / "mitosis_small_hdf5.xml")
    assert sd.image_loader.path == shared_data / "bdv-h5" / "mitosis_small_hdf5.h5"
    assert sd.world_unit_um(1, 1) == (1.0, 1.0, 1.0)  # BDV export: world = physical units


def test_multi_angle_dataset(shared_data):
    sd = read_spimdata(shared_data / "bigstitcher-xml" / "rhapso_drosophila_dataset.xml")
    assert sd.timepoints == [18, 30]
    assert sd.image_loader.path is None
    assert sd.image_loader.views[(18, 2)].name == "spim_TL18_Angle90.tif"
    assert len(sd.image_loader.paths) == 14
    with pytest.raises(IncompatibleTilesError, match="pass angle="):
        sd.tiles(18)
    assert sd.tiles(30, angle=45) == {0: [1]}
    assert sd.attributes["angle"][90] == {"name": "90", "axis": (0.0, 0.0, 1.0), "degrees": 90.0}
    assert sd.world_unit_um(18, 0) == pytest.approx((0.7310780550106993,) * 3, rel=1e-6)
    with pytest.raises(KeyError):
        sd.tiles(5)


# -- synthetic files: any order, unknown elements, paths, units -----------------------------------
SYNTHETIC = """<?xml version="1.0" encoding="UTF-8"?>
<SpimData version="1.0">
  <!-- a comment -->
  <ViewRegistrations>
    <ViewRegistration timepoint="2" setup="7">
      <ViewTransform type="affine">
        <Name>shift</Name>
        <affine>1 0 0 10\t0 1 0 20
        0 0 1 30</affine>
      </ViewTransform>
      <ViewTransform type="affine"><affine>2 0 0 0 0 2 0 0 0 0 5 0</affine></ViewTransform>
      <unknownChild/>
    </ViewRegistration>
  </ViewRegistrations>
  <SequenceDescription>
    <Timepoints type="pattern"><integerpattern>0, 2-6:2</integerpattern></Timepoints>
    <MissingViews><MissingView timepoint="4" setup="7"/></MissingViews>
    <ViewSetups>
      <Attributes name="tile">
        <Tile><id>3</id><location>1000 2000 3000</location></Tile>
      </Attributes>
      <Attributes name="displaysettings"><displaysettings><id>7</id><color>255 0 0 255</color>
      </displaysettings></Attributes>
      <ViewSetup>
        <camera><name>x</name></camera>
        <size>30 20 10</size>
        <id>7</id>
        <voxelSize><size>400 400 1000</size><unit>nanometer</unit></voxelSize>
        <attributes><tile> 3 </tile><displaysettings>7</displaysettings></attributes>
      </ViewSetup>
    </ViewSetups>
    <ImageLoader format="bdv.hdf5">
      <hdf5 type="relative">data/x.h5</hdf5>
      <partition><path type="relative">x-00.h5</path><setups>7</setups></partition>
    </ImageLoader>
  </SequenceDescription>
  <BasePath type="relative">sub</BasePath>
  <SomethingNew><deep/></SomethingNew>
</SpimData>
"""


def test_any_order_unknown_elements_and_units(tmp_path):
    p = tmp_path / "dataset.xml"
    p.write_text(SYNTHETIC, encoding="utf-8")
    sd = read_spimdata(p)
    assert sd.base_path == tmp_path / "sub"
    assert sd.image_loader.path == tmp_path / "sub" / "data" / "x.h5"
    assert sd.image_loader.paths == (
        tmp_path / "sub" / "data" / "x.h5",
        tmp_path / "sub" / "x-00.h5",
    )
    assert sd.timepoints == [0, 2, 4, 6]
    assert sd.missing_views == {(4, 7)}
    assert sd.views(4) == []
    assert sd.tiles(2) == {3: [7]}
    assert sd.tiles(4) == {}
    s = sd.setups[7]
    assert (s.name, s.size_zyx, s.voxel_size_zyx, s.unit) == (
        None,
        (10, 20, 30),
        (1.0, 0.4, 0.4),
        "µm",
    )
    assert s.attributes == {"tile": 3, "displaysettings": 7}
    assert s.attribute("channel") == 0  # BigStitcher's default
    assert sd.attributes["tile"][3] == {"name": "3", "location": (3.0, 2.0, 1.0)}  # nm -> µm, zyx
    assert sd.attributes["displaysettings"][7]["color"] == "255 0 0 255"
    expected = np.array([[2, 0, 0, 10], [0, 2, 0, 20], [0, 0, 5, 30], [0, 0, 0, 1.0]])
    np.testing.assert_array_equal(sd.affine_xyz(2, 7), expected)
    # world unit: the first-applied diag(2, 2, 5) against voxel (0.4, 0.4, 1.0) µm -> 0.2 µm
    assert sd.world_unit_um(2, 7) == pytest.approx((0.2, 0.2, 0.2))
    np.testing.assert_allclose(sd.placement_zyx(2, 7)[:3, 3], [6.0, 4.0, 2.0])
    with pytest.raises(UnsupportedFormatError, match="no <ViewRegistration timepoint=0 setup=7>"):
        sd.affine_xyz(0, 7)


@pytest.mark.parametrize(
    ("base", "loader", "expected"),
    [
        ('type="absolute">/abs/base', '<n5 type="relative">d.n5</n5>', "/abs/base/d.n5"),
        ('type="relative">.', '<n5 type="absolute">/x/y.n5</n5>', "/x/y.n5"),
        (
            'type="absolute">s3://bucket/prefix',
            '<n5 type="relative">../d.n5</n5>',
            "s3://bucket/d.n5",
        ),
        (
            'type="relative">.',
            '<n5 type="relative">https://s3.janelia.org/a.n5</n5>',
            "https://s3.janelia.org/a.n5",
        ),
        ('type="absolute">file:///data/p', '<n5 type="relative">d.n5</n5>', "/data/p/d.n5"),
    ],
)
def test_path_resolution(tmp_path, base, loader, expected):
    p = tmp_path / "d.xml"
    p.write_text(
        f'<SpimData><BasePath {base}</BasePath><SequenceDescription><ImageLoader format="bdv.n5">'
        f"{loader}</ImageLoader></SequenceDescription><ViewRegistrations/></SpimData>"
    )
    assert str(read_spimdata(p).image_loader.path) == expected


@pytest.mark.parametrize(
    ("unit", "um"),
    [("µm", 1.0), ("um", 1.0), ("micron", 1.0), ("Micrometer", 1.0), ("nm", 1e-3), ("mm", 1e3)],
)
def test_length_units(unit, um):
    assert unit_to_um(unit) == um


@pytest.mark.parametrize("unit", [None, "", "pixel", "pixels", "px"])
def test_unitless_units(unit):
    assert unit_to_um(unit) is None


# -- bad input ------------------------------------------------------------------------------------
GOOD_SETUP = "<ViewSetup><id>0</id></ViewSetup>"


def spim(
    setups=GOOD_SETUP,
    regs="",
    timepoints='<Timepoints type="range"><first>0</first><last>0</last></Timepoints>',
):
    return (
        f"<SpimData><SequenceDescription><ViewSetups>{setups}</ViewSetups>{timepoints}"
        f"</SequenceDescription><ViewRegistrations>{regs}</ViewRegistrations></SpimData>"
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x89HDF\r\n\x1a\n\x00\x00binary", "not an XML file"),
        (b"", "not an XML file"),
        (b"<TileConfiguration/>", r"root element is <TileConfiguration>, expected <SpimData>"),
        (
            spim("<ViewSetup><id>abc</id></ViewSetup>").encode(),
            r"<ViewSetup><id>.*an integer.*'abc'",
        ),
        (spim("<ViewSetup><id>1.5</id></ViewSetup>").encode(), r"<ViewSetup><id>"),
        (spim("<ViewSetup><name>no id</name></ViewSetup>").encode(), r"<ViewSetup><id>"),
        (spim(GOOD_SETUP * 2).encode(), "unique <id>"),
        (spim("<ViewSetup><id>0</id><size>1 2</size></ViewSetup>").encode(), "3 integers"),
        (
            spim(
                regs='<ViewRegistration timepoint="0" setup="0"><ViewTransform type="affine">'
                "<affine>1 0 0 0 0 1 0 0 0 0 1</affine></ViewTransform></ViewRegistration>"
            ).encode(),
            "12 numbers",
        ),
        (
            spim(
                regs='<ViewRegistration timepoint="0" setup="0"><ViewTransform type="affine">'
                "<affine>1 0 0 0 0 1 0 0 0 0 1 inf</affine></ViewTransform></ViewRegistration>"
            ).encode(),
            "12 numbers",
        ),
        (spim(regs='<ViewRegistration timepoint="x" setup="0"/>').encode(), "attribute timepoint"),
        (spim(timepoints='<Timepoints type="weird"/>').encode(), "'range', 'list' or 'pattern'"),
        (b"<SpimData><ViewRegistrations/></SpimData>", "no <SequenceDescription>"),
        (b"<SpimData><SequenceDescription/></SpimData>", "no <ViewRegistrations>"),
    ],
)
def test_bad_input_names_the_file(tmp_path, content, match):
    p = tmp_path / "bad.xml"
    p.write_bytes(content)
    with pytest.raises(UnsupportedFormatError, match=match) as e:
        read_spimdata(p)
    assert str(p) in str(e.value)


def test_h5_instead_of_xml_gets_a_hint(shared_data):
    h5 = shared_data / "bdv-h5" / "pybdv_example.h5"
    with pytest.raises(UnsupportedFormatError, match=r"the \.xml next to the \.h5") as e:
        read_spimdata(h5)
    assert str(h5) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.xml"))):
        read_spimdata(tmp_path / "none.xml")


def test_generic_transform_has_no_matrix(tmp_path):
    p = tmp_path / "g.xml"
    p.write_text(
        spim(
            regs='<ViewRegistration timepoint="0" setup="0"><ViewTransform type="generic" '
            'class="my.Transform"/></ViewRegistration>'
        )
    )
    sd = read_spimdata(p)
    (t,) = sd.registrations[(0, 0)]
    assert (t.type, t.java_class, t.affine) == ("generic", "my.Transform", None)
    with pytest.raises(UnsupportedFormatError, match=r"g\.xml.*'my\.Transform'"):
        sd.affine_xyz(0, 0)
