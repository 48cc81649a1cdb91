"""Read BigDataViewer / BigStitcher SpimData XML project files (pure Python, no Java).

Rules follow ``shared/formats/BDV-BIGSTITCHER.md`` section 1 (derived from the
Java readers). What this reader does with them:

- elements are looked up by tag, so their order does not matter and unknown
  elements are ignored (the whole lxml tree is kept in `SpimData.tree`, the
  image loader element in `ImageLoader.element`, for a later round trip);
- numeric arrays are split on any whitespace and parsed with ``float()``
  (no rounding). Java rejects arrays whose text *starts* with whitespace
  (a newline right after ``<affine>``); such files exist, so they are read and a
  warning is logged;
- XYZ exists only in the file: `ViewSetup.size_zyx`, `ViewSetup.voxel_size_zyx`,
  tile ``location`` and angle ``axis`` are converted to (z, y, x) here.
  `ViewTransform.affine` keeps the 12 numbers exactly as written (XYZ,
  row-major 3x4); `SpimData.affine_zyx` and `SpimData.placement_zyx` convert;
- lengths are micrometres: see `unit_to_um` for the unit rule and
  `SpimData.world_unit_um` for how BigStitcher's "world units" are turned into
  micrometres.

Transform order (formats doc section 1.8, ``ViewRegistration.updateModel``):
``model = T0 @ T1 @ ... @ Tn-1`` in document order, i.e. the **last**
``<ViewTransform>`` of a view is applied first to voxel coordinates and the
first one last (BigStitcher inserts new transforms at the top).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import numpy as np
from lxml import etree

from tilefuse.errors import (
    IncompatibleTilesError,
    MissingTileError,
    NotFoundError,
    ParameterError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ImageLoader",
    "SpimData",
    "ViewSetup",
    "ViewTransform",
    "check_world_unit",
    "read_spimdata",
    "unit_to_um",
]

logger = logging.getLogger(__name__)

#: A location named by the file: a local `Path`, or a ``str`` for a URI
#: (``s3://...``, ``https://...``) or a foreign (Windows) absolute path.
Location = Path | str

#: Micrometres per unit, keyed by the lower-cased unit text.
_UM_PER_UNIT = {
    **dict.fromkeys(
        ("µm", "μm", "um", "micron", "microns", "micrometer", "micrometers", "micrometre"),
        1.0,
    ),
    "micrometres": 1.0,
    **dict.fromkeys(("nm", "nanometer", "nanometers", "nanometre", "nanometres"), 1e-3),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"), 1e3),
}
_UNITLESS = frozenset(("", "pixel", "pixels", "px", "voxel", "voxels"))
_MICRO = "µm"
_PIXEL = "pixel"

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Infinity|NaN)")
_INTEGER = re.compile(r"[+-]?\d+")
_PATTERN_PART = re.compile(r"(\d+)(?:\s*-\s*(\d+)(?:\s*:\s*(\d+))?)?")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")
#: Axis permutation between XYZ and ZYX (its own inverse).
_SWAP = np.eye(4)[[2, 1, 0, 3]]
#: Relative tolerance for "the calibration is proportional to the voxel size".
_CALIBRATION_RTOL = 1e-4


# -- public structures ------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewTransform:
    """One ``<ViewTransform>`` of a view, as written.

    Attributes
    ----------
    name : str or None
        The ``<Name>`` text (``None`` when absent).
    affine : tuple of 12 floats or None
        Row-major 3x4 ``[A|t]`` mapping XYZ voxel coordinates to world, exactly
        as written; ``None`` for ``type="generic"`` transforms (Java classes)
        and for an empty ``<affine>`` (seen in a hand-edited file).
    type : str
        ``"affine"`` (the only type written in practice) or ``"generic"``.
    java_class : str or None
        The ``class`` attribute of a generic transform.
    """

    name: str | None
    affine: tuple[float, ...] | None
    type: str = "affine"
    java_class: str | None = None

    def matrix_xyz(self) -> NDArray[np.float64]:
        """The transform as a 4x4 homogeneous XYZ matrix.

        Raises
        ------
        UnsupportedFormatError
            For a generic (Java class) transform, which has no matrix here.
        """
        if self.affine is None:
            msg = (
                f"ViewTransform {self.name!r} (type {self.type!r}, class {self.java_class!r}) "
                "has no affine matrix: expected 12 numbers in <affine>"
            )
            raise UnsupportedFormatError(msg)
        m = np.eye(4)
        m[:3, :] = np.asarray(self.affine, dtype=np.float64).reshape(3, 4)
        return m


@dataclass(frozen=True)
class ViewSetup:
    """One ``<ViewSetup>``.

    Attributes
    ----------
    id : int
        The setup id.
    name : str or None
        ``<name>`` (``None`` when absent).
    size_zyx : tuple of 3 ints or None
        Level-0 image size (z, y, x), from the XYZ ``<size>``; ``None`` if absent.
    voxel_size_zyx : tuple of 3 floats or None
        Voxel size (z, y, x) in `unit`; ``None`` if ``<voxelSize>`` is absent.
    unit : str
        ``"µm"`` when the file's unit is a length (converted, see `unit_to_um`),
        ``"pixel"`` when it is unitless (pixel, px, empty, missing, unknown):
        the sizes are then kept exactly as written and mean nothing physical.
    file_unit : str or None
        The unit text as written in the file.
    attributes : dict of str to int
        ``<attributes>``: attribute name (illumination, channel, tile, angle,
        ...) to entity id, as written (missing ones are *not* filled in here).
    """

    id: int
    name: str | None
    size_zyx: tuple[int, int, int] | None
    voxel_size_zyx: tuple[float, float, float] | None
    unit: str
    file_unit: str | None
    attributes: dict[str, int] = field(default_factory=dict)

    def attribute(self, name: str) -> int:
        """Entity id of an attribute; BigStitcher's default 0 when the setup has none."""
        return self.attributes.get(name, 0)


@dataclass(frozen=True)
class ImageLoader:
    """The ``<ImageLoader>``: its format and the data locations it names.

    Attributes
    ----------
    format : str
        The ``format`` attribute (``bdv.hdf5``, ``bdv.n5``, ``bdv.multimg.zarr``,
        ``spimreconstruction.filemap2``, ...).
    version : str or None
        The ``version`` attribute.
    path : Path or str or None
        The container: the HDF5 file (``bdv.hdf5``), the N5 root (``bdv.n5``),
        the zarr root (``bdv.multimg.zarr``; with ``<s3bucket>`` an
        ``s3://bucket/key`` URI), the ``<Url>`` of ``bdv.n5.universe``, ...
        ``None`` for loaders that only list files.
    views : dict of (timepoint, setup) to Path or str
        Per-view data: the OME-Zarr group of each ``<zgroup>``, the file of
        each ``<FileMapping>`` (filemap loaders).
    paths : tuple of Path or str
        Every location the loader names, in document order (container,
        partitions, per-view files).
    wrapped : ImageLoader or None
        The inner loader of a wrapping loader (flat-field correction).
    element : lxml element
        The raw ``<ImageLoader>`` element, kept for a round trip.

    Notes
    -----
    Relative locations are resolved against the SpimData base path; URIs are
    kept as ``str``. Nothing here checks that the data exist.
    """

    format: str
    version: str | None
    path: Location | None
    views: dict[tuple[int, int], Location]
    paths: tuple[Location, ...]
    wrapped: ImageLoader | None = None
    element: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SpimData:
    """A parsed SpimData XML project (BigDataViewer / BigStitcher).

    Attributes
    ----------
    path : Path
        The XML file.
    base_path : Path or str
        ``<BasePath>`` resolved against the XML's folder (a ``str`` for a URI).
    image_loader : ImageLoader or None
        ``None`` when the file has no ``<ImageLoader>``.
    setups : dict of int to ViewSetup
        By setup id, in document order.
    attributes : dict of str to dict of int to dict
        The ``<Attributes name=...>`` blocks: per attribute name, per entity id,
        a dict with ``"name"`` (default: the id as text) and, where present,
        ``"location"`` (tile; (z, y, x), micrometres when the setups' unit is a
        length), ``"axis"`` (angle; (z, y, x)) and ``"degrees"`` (angle); other
        simple children are kept as text under their tag.
    timepoints : list of int
        Timepoint ids (``range``, ``list`` or ``pattern``).
    missing_views : set of (timepoint, setup)
        Views marked absent in ``<MissingViews>``.
    registrations : dict of (timepoint, setup) to list of ViewTransform
        Each view's transforms in document order (see `affine_xyz`).
    tree : lxml ElementTree
        The whole parsed document, kept for a round trip.
    """

    path: Path
    base_path: Location
    image_loader: ImageLoader | None
    setups: dict[int, ViewSetup]
    attributes: dict[str, dict[int, dict[str, Any]]]
    timepoints: list[int]
    missing_views: set[tuple[int, int]]
    registrations: dict[tuple[int, int], list[ViewTransform]]
    tree: Any = field(default=None, compare=False, repr=False)
    _warned: set[str] = field(default_factory=set, compare=False, repr=False)

    # -- views --------------------------------------------------------------------------------
    def views(self, timepoint: int | None = None) -> list[tuple[int, int]]:
        """Present views ``(timepoint, setup)`` (declared, not in ``<MissingViews>``).

        Parameters
        ----------
        timepoint : int, optional
            Only this timepoint (default: all timepoints).
        """
        tps = self.timepoints if timepoint is None else [self._check_timepoint(timepoint)]
        return [(t, s) for t in tps for s in self.setups if (t, s) not in self.missing_views]

    def tiles(
        self, timepoint: int | None = None, *, angle: int | None = None
    ) -> dict[int, list[int]]:
        """Group the views of one timepoint by their ``tile`` attribute.

        Channels and illuminations of a tile are channels of one tilefuse tile,
        never extra tiles.

        Parameters
        ----------
        timepoint : int, optional
            Default: the first timepoint.
        angle : int, optional
            Keep only views of this angle id. Required when the timepoint has
            views from several angles (the views of one tile seen from different
            angles are different placements, not channels).

        Returns
        -------
        dict of int to list of int
            Tile id (ascending) to its setup ids, ordered by (channel,
            illumination, setup id). Missing views are left out; a setup without
            a ``tile`` / ``channel`` / ``illumination`` / ``angle`` attribute has id 0
            (BigStitcher's rule). Empty when the file declares no timepoint.

        Raises
        ------
        KeyError
            If `timepoint` is not declared.
        IncompatibleTilesError
            If views come from several angles and `angle` is not given.
        """
        if timepoint is None and not self.timepoints:
            return {}
        tp = self.timepoints[0] if timepoint is None else timepoint
        setups = [self.setups[s] for _, s in self.views(tp)]
        if angle is None:
            angles = sorted({s.attribute("angle") for s in setups})
            if len(angles) > 1:
                msg = (
                    f"{self.path}: timepoint {tp} has views from {len(angles)} angles {angles}; "
                    "views of one tile from different angles are not channels: pass angle= "
                    "(--angle on the command line)"
                )
                raise IncompatibleTilesError(msg)
        else:
            setups = [s for s in setups if s.attribute("angle") == angle]
        groups: dict[int, list[ViewSetup]] = {}
        for s in setups:
            groups.setdefault(s.attribute("tile"), []).append(s)
        return {
            tile: [s.id for s in sorted(members, key=_channel_order)]
            for tile, members in sorted(groups.items())
        }

    # -- transforms ---------------------------------------------------------------------------
    def affine_xyz(self, timepoint: int, setup: int) -> NDArray[np.float64]:
        """The view's model: its transforms composed in BigDataViewer's order.

        ``model = T0 @ T1 @ ... @ Tn-1`` with ``T0`` the first ``<ViewTransform>``
        in the file: the last one is applied first to voxel coordinates
        (formats doc section 1.8). No transform means identity.

        Returns
        -------
        ndarray of shape (4, 4)
            Maps XYZ voxel indices (level 0; BDV puts pixel centres at integer
            coordinates) to XYZ world coordinates, in world units.

        Raises
        ------
        KeyError
            If the file has no ``<ViewRegistration>`` for this view and the view
            is not a present view of the file.
        UnsupportedFormatError
            If a present view has no ``<ViewRegistration>`` (Java fails on such
            files) or a transform has no matrix (generic Java class, empty <affine>).
        """
        model = np.eye(4)
        for m in self._matrices(timepoint, setup):
            model = model @ m
        return model

    def affine_zyx(self, timepoint: int, setup: int) -> NDArray[np.float64]:
        """`affine_xyz` in tilefuse's (z, y, x) convention (rows and columns permuted).

        Maps (z, y, x) voxel indices to (z, y, x) world coordinates, in world units.
        """
        return _SWAP @ self.affine_xyz(timepoint, setup) @ _SWAP

    def world_unit_um(self, timepoint: int, setup: int) -> tuple[float, float, float]:
        """Micrometres per world unit (z, y, x) for one view (the XML does not record it).

        Rules, on the view's first-applied (last written) transform ``c`` and
        the setup's voxel size ``v``:

        - **calibration**: ``c`` is a diagonal scale proportional to ``v``
          (``v / c`` equal on the three axes, relative tolerance 1e-4): the
          world is isotropic and one world unit is that common value on every
          axis. This covers BigStitcher's ``calibration = diag(v / min(v))``
          (world unit = the smallest voxel size), BigDataViewer's export
          ``diag(v)`` (world = physical units, 1) and isotropic voxels with no
          calibration;
        - **no calibration** (``c`` has an identity linear part, as a
          translation, or is a registration affine with off-diagonal terms):
          the world is BigDataViewer's pixel world, world axis k is one voxel
          of axis k, so the unit is ``v`` per axis; a warning says so when the
          voxels are anisotropic.

        For a unitless voxel size (``unit == "pixel"``) the result is in those
        unitless units.

        Returns
        -------
        tuple of 3 floats
            (z, y, x).

        Raises
        ------
        UnsupportedFormatError
            If the setup has no voxel size, or ``c`` is a diagonal scale that is
            neither identity nor proportional to ``v`` (its meaning is unknown):
            pass ``world_unit_um=(z, y, x)`` to `placement_zyx` yourself.
        """
        vs = self._setup(setup).voxel_size_zyx
        transforms = self._transforms(timepoint, setup)
        where = f"{self.path}: view (timepoint {timepoint}, setup {setup})"
        if vs is None:
            msg = (
                f"{where}: no <voxelSize>, so the world unit is unknown; pass "
                "world_unit_um=(z, y, x)"
            )
            raise UnsupportedFormatError(msg)
        matrices = self._matrices(timepoint, setup)
        first = matrices[-1] if matrices else np.eye(4)
        unit = _unit_from_calibration(first, np.asarray(vs[::-1], dtype=np.float64))
        if unit is not None:
            return (unit, unit, unit)
        lin = first[:3, :3]
        name = transforms[-1].name if transforms else "identity"
        if np.array_equal(lin, np.eye(3)) or np.any(lin - np.diag(np.diag(lin))):
            if "pixel-world" not in self._warned:  # once per file, not per view
                self._warned.add("pixel-world")
                logger.warning(
                    "%s: no calibration transform (the first-applied <ViewTransform> %r is "
                    "not a scale proportional to the voxel size): world units are voxels, as "
                    "in BigDataViewer; placements are world x voxel size (z, y, x) %s %s. "
                    "Pass world_unit_um=(z, y, x) to override.",
                    self.path,
                    name,
                    vs,
                    self.setups[setup].unit,
                )
            return (float(vs[0]), float(vs[1]), float(vs[2]))
        msg = (
            f"{where}: cannot tell the world unit: the first-applied transform "
            f"<ViewTransform> {name!r} is a diagonal scale that is neither identity nor "
            f"proportional to the voxel size (z, y, x) {vs} {self.setups[setup].unit}; "
            "pass world_unit_um=(z, y, x)"
        )
        raise UnsupportedFormatError(msg)

    def placement_zyx(
        self,
        timepoint: int,
        setup: int,
        *,
        world_unit_um: ArrayLike | None = None,
    ) -> NDArray[np.float64]:
        """The view's placement in micrometres: (z, y, x) voxel indices to world µm.

        ``diag(w_z, w_y, w_x, 1) @ affine_zyx`` with ``w`` = `world_unit_um`
        (inferred by the method of that name unless given). When the setup's
        unit is ``"pixel"`` the result is in the file's unitless units.

        Parameters
        ----------
        timepoint, setup : int
            The view.
        world_unit_um : array_like of 3 floats, optional
            Micrometres per world unit (z, y, x); overrides the inference. A
            single number is refused: in a pixel world the axes differ, and a
            scalar would silently apply the x/y value to z.

        Notes
        -----
        BigDataViewer puts pixel centres at integer coordinates; the affine is
        returned as BDV defines it (no half-voxel shift).
        """
        if world_unit_um is None:
            w = np.asarray(self.world_unit_um(timepoint, setup), dtype=np.float64)
        else:
            w = check_world_unit(world_unit_um, self.path)
        return np.diag([*w, 1.0]) @ self.affine_zyx(timepoint, setup)

    # -- helpers ------------------------------------------------------------------------------
    def _setup(self, setup: int) -> ViewSetup:
        if setup not in self.setups:
            msg = f"{self.path}: no <ViewSetup> with id {setup} (ids: {sorted(self.setups)})"
            raise NotFoundError(msg)
        return self.setups[setup]

    def _check_timepoint(self, timepoint: int) -> int:
        if timepoint not in self.timepoints:
            msg = f"{self.path}: no timepoint {timepoint} (timepoints: {self.timepoints})"
            raise NotFoundError(msg)
        return timepoint

    def _matrices(self, timepoint: int, setup: int) -> list[NDArray[np.float64]]:
        """The view's 4x4 XYZ matrices in document order (errors name the file)."""
        out = []
        for t in self._transforms(timepoint, setup):
            if t.affine is None:
                problem = "an empty <affine>" if t.type == "affine" else f"class {t.java_class!r}"
                msg = (
                    f"{self.path}: view (timepoint {timepoint}, setup {setup}): "
                    f"<ViewTransform> {t.name!r} has {problem}, expected 12 numbers"
                )
                raise UnsupportedFormatError(msg)
            m = t.matrix_xyz()
            if not np.all(np.isfinite(m)):  # Infinity / NaN parse as Java doubles, place nothing
                msg = (
                    f"{self.path}: view (timepoint {timepoint}, setup {setup}): "
                    f"<ViewTransform> {t.name!r} holds Infinity or NaN; expected 12 finite numbers"
                )
                raise UnsupportedFormatError(msg)
            out.append(m)
        return out

    def _transforms(self, timepoint: int, setup: int) -> list[ViewTransform]:
        key = (timepoint, setup)
        if key in self.registrations:
            return self.registrations[key]
        if timepoint in self.timepoints and setup in self.setups and key not in self.missing_views:
            msg = (
                f"{self.path}: no <ViewRegistration timepoint={timepoint} setup={setup}> "
                "for a present view (BigDataViewer requires one per view)"
            )
            raise UnsupportedFormatError(msg)
        msg = f"{self.path}: no view (timepoint {timepoint}, setup {setup})"
        raise NotFoundError(msg)


def _channel_order(setup: ViewSetup) -> tuple[int, int, int]:
    return (setup.attribute("channel"), setup.attribute("illumination"), setup.id)


def _unit_from_calibration(
    first: NDArray[np.float64], voxel_xyz: NDArray[np.float64]
) -> float | None:
    """World unit implied by a diagonal first transform, or None if it is not a calibration."""
    lin = first[:3, :3]
    diag = np.diag(lin)
    finite = np.all(np.isfinite(lin)) and np.all(np.isfinite(voxel_xyz))
    if not finite or np.any(lin - np.diag(diag)) or np.any(diag <= 0) or np.any(voxel_xyz <= 0):
        return None
    units = voxel_xyz / diag
    mid = float(np.median(units))
    if np.any(np.abs(units - mid) > _CALIBRATION_RTOL * mid):
        return None
    return mid


def check_world_unit(value: ArrayLike, where: object = "world_unit_um") -> NDArray[np.float64]:
    """A world unit as 3 positive finite micrometre values (z, y, x).

    Raises
    ------
    ValueError
        For a scalar (ambiguous in a pixel world: it would silently apply the
        x/y value to z) or anything but 3 positive finite numbers.
    """
    w = np.asarray(value, dtype=np.float64)
    if w.shape != (3,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        hint = (
            ": a single number would apply to z too; give (z, y, x), e.g. the voxel size "
            "for a pixel-world project"
            if w.ndim == 0
            else ""
        )
        msg = f"{where}: world_unit_um must be 3 positive numbers (z, y, x), got {value!r}{hint}"
        raise ParameterError(msg)
    return w


def unit_to_um(unit: str | None) -> float | None:
    """Micrometres per ``unit``, or ``None`` when the unit is not a length.

    Rule: µm / μm / um / micron(s) / micrometer(s) / micrometre(s) -> 1;
    nm / nanometer(s) / nanometre(s) -> 0.001; mm / millimeter(s) /
    millimetre(s) -> 1000 (case-insensitive, surrounding whitespace ignored).
    ``None`` for "pixel(s)", "px", "voxel(s)", an empty or missing unit (unitless:
    values are kept as written) and for any other text.
    """
    if unit is None:
        return None
    return _UM_PER_UNIT.get(unit.strip().lower())


# -- reading ----------------------------------------------------------------------------------
@dataclass
class _Ctx:
    """Per-file parsing state: the path for messages and lenient-parse counters."""

    path: Path
    leading_ws: int = 0
    empty_affines: int = 0

    def error(self, el: Any, what: str, expected: str, got: object) -> UnsupportedFormatError:
        line = getattr(el, "sourceline", None)
        at = f" (line {line})" if line else ""
        where = what if what.startswith("<") else f"<{what}>"
        msg = f"{self.path}: {where}{at}: expected {expected}, got {got!r}"
        return UnsupportedFormatError(msg)


def read_spimdata(path: str | os.PathLike[str]) -> SpimData:
    """Read a SpimData XML (BigDataViewer / BigStitcher project file).

    Parameters
    ----------
    path : str or PathLike
        The ``.xml`` file.

    Returns
    -------
    SpimData

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    UnsupportedFormatError
        If the file is not XML, its root is not ``<SpimData>``, it lacks
        ``<SequenceDescription>`` or ``<ViewRegistrations>``, or an element holds
        what Java could not parse either (non-integer id, wrong number of affine
        values, unknown timepoint type, ...). The message names the file, the
        element and what was expected.

    Notes
    -----
    Lenient where real files need it (each case is logged as a warning): an
    empty ``<SequenceDescription>`` (no setups, no timepoints), no
    ``<ImageLoader>``, numeric arrays with leading whitespace, setups that
    name attribute ids missing from the ``<Attributes>`` blocks, present
    views without a ``<ViewRegistration>`` and registrations of undeclared
    views.
    """
    p = Path(path).absolute()
    ctx = _Ctx(p)
    root = _parse_root(p).getroot()
    seq = _required(root, "SequenceDescription", ctx)
    regs = _required(root, "ViewRegistrations", ctx)
    base = _base_path(root.find("BasePath"), p.parent, ctx)
    loader_el = seq.find("ImageLoader")
    loader = None if loader_el is None else _image_loader(loader_el, base, ctx)
    if loader is None:
        logger.warning("%s: no <ImageLoader>: the file names no image data", p)
    setups = _view_setups(seq.find("ViewSetups"), ctx)
    data = SpimData(
        path=p,
        base_path=base,
        image_loader=loader,
        setups=setups,
        attributes=_attribute_blocks(seq.find("ViewSetups"), _length_scale(setups, ctx), ctx),
        timepoints=_timepoints(seq.find("Timepoints"), ctx),
        missing_views=_missing_views(seq.find("MissingViews"), ctx),
        registrations=_registrations(regs, ctx),
        tree=root.getroottree(),
    )
    if ctx.leading_ws:
        logger.warning(
            "%s: %d numeric element(s) start with whitespace; read anyway, but Java's "
            "SpimData reader rejects them (NumberFormatException)",
            p,
            ctx.leading_ws,
        )
    if ctx.empty_affines:
        logger.warning(
            "%s: %d <affine> element(s) are empty; their views have no usable model "
            "(Java rejects the file)",
            p,
            ctx.empty_affines,
        )
    _check_consistency(data)
    return data


def _parse_root(path: Path) -> Any:
    if not path.exists():
        msg = f"{path}: no such file"
        raise MissingTileError(msg)
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        tree = etree.parse(str(path), parser)
    except etree.XMLSyntaxError as e:
        hint = " (a BDV project is the .xml next to the .h5)" if path.suffix == ".h5" else ""
        msg = f"{path}: not an XML file, expected a SpimData XML{hint}: {e}"
        raise UnsupportedFormatError(msg) from e
    except OSError as e:
        msg = f"{path}: cannot read the file as XML: {e}"
        raise UnsupportedFormatError(msg) from e
    root = tree.getroot()
    if root.tag != "SpimData":
        msg = f"{path}: root element is <{root.tag}>, expected <SpimData> (not a SpimData XML)"
        raise UnsupportedFormatError(msg)
    return tree


def _required(root: Any, tag: str, ctx: _Ctx) -> Any:
    el = root.find(tag)
    if el is None:
        msg = f"{ctx.path}: <SpimData> has no <{tag}>, which BigDataViewer requires"
        raise UnsupportedFormatError(msg)
    return el


def _children(el: Any) -> list[Any]:
    """Element children (comments and processing instructions left out)."""
    return [c for c in el if isinstance(c.tag, str)]


# -- numbers ----------------------------------------------------------------------------------
def _text(el: Any) -> str:
    return "" if el is None or el.text is None else el.text


def _int(text: str | None, el: Any, what: str, ctx: _Ctx) -> int:
    s = (text or "").strip()
    if not _INTEGER.fullmatch(s):
        raise ctx.error(el, what, "an integer", text)
    return int(s)


def _tokens(el: Any, what: str, n: int, pattern: re.Pattern[str], ctx: _Ctx) -> list[str]:
    """Whitespace-separated tokens, ``n`` of them, each matching ``pattern``."""
    text = _text(el)
    if text[:1].isspace():
        ctx.leading_ws += 1
    tokens = text.split()
    if len(tokens) != n or not all(pattern.fullmatch(t) for t in tokens):
        kind = "integers" if pattern is _INTEGER else "numbers (Java doubles)"
        raise ctx.error(el, what, f"{n} {kind}", text.strip())
    return tokens


def _floats(el: Any, what: str, n: int, ctx: _Ctx) -> tuple[float, ...]:
    return tuple(float(t) for t in _tokens(el, what, n, _NUMBER, ctx))


def _ints(el: Any, what: str, n: int, ctx: _Ctx) -> tuple[int, ...]:
    return tuple(int(t) for t in _tokens(el, what, n, _INTEGER, ctx))


def _zyx(values: Sequence[Any]) -> tuple[Any, Any, Any]:
    """XYZ (as in the file) -> (z, y, x)."""
    x, y, z = values
    return z, y, x


def _scaled(values: tuple[float, float, float], factor: float) -> tuple[float, float, float]:
    """Values times a unit factor (divided by ``1 / factor`` when < 1: 168 nm -> 0.168 exactly)."""
    if factor == 1.0:
        return values
    if factor < 1.0:
        d = 1.0 / factor
        return values[0] / d, values[1] / d, values[2] / d
    return values[0] * factor, values[1] * factor, values[2] * factor


# -- paths ------------------------------------------------------------------------------------
def _base_path(el: Any, xml_dir: Path, ctx: _Ctx) -> Location:
    if el is None:
        return xml_dir
    return _resolve(el, xml_dir, ctx)


def _resolve(el: Any, base: Location, ctx: _Ctx) -> Location:
    """Resolve a path element (``type="relative|absolute"``) per formats doc section 1.3."""
    text = _text(el).strip()
    kind = el.get("type")
    if not text:
        raise ctx.error(el, el.tag, "a path", text)
    if _URI.match(text):
        return _from_uri(text)
    if kind == "absolute" or (kind is None and (text.startswith("/") or "\\" in text)):
        return str(PureWindowsPath(text)) if "\\" in text else Path(os.path.normpath(text))
    text = text.replace("\\", "/")
    if isinstance(base, str):
        return _join_uri(base, text)
    return Path(os.path.normpath(base / text))


def _from_uri(text: str) -> Location:
    parts = urlsplit(text)
    if parts.scheme == "file":
        return Path(os.path.normpath(unquote(parts.path)))
    return text


def _join_uri(base: str, rel: str) -> str:
    parts = urlsplit(base)
    path = posixpath.normpath(posixpath.join(parts.path or "/", rel))
    return f"{parts.scheme}://{parts.netloc}{path}"


def _join(root: Location, rel: str) -> Location:
    if isinstance(root, str):
        return _join_uri(root, rel)
    return Path(os.path.normpath(root / rel))


# -- image loader -----------------------------------------------------------------------------
def _image_loader(el: Any, base: Location, ctx: _Ctx) -> ImageLoader:
    fmt = el.get("format")
    if not fmt:
        raise ctx.error(el, "ImageLoader", "a format attribute", el.attrib.get("format"))
    container = _container(el, base, ctx)
    views = {**_zgroups(el, container, ctx), **_file_mappings(el, base, ctx)}
    partitions = [_resolve(p, base, ctx) for p in el.findall("partition/path")]
    inner = el.find("WrappedImgLoader/ImageLoader")
    paths = ([] if container is None else [container]) + partitions + list(views.values())
    return ImageLoader(
        format=fmt,
        version=el.get("version"),
        path=container,
        views=views,
        paths=tuple(dict.fromkeys(paths)),
        wrapped=None if inner is None else _image_loader(inner, base, ctx),
        element=el,
    )


def _container(el: Any, base: Location, ctx: _Ctx) -> Location | None:
    """The loader's main path: its first child with a ``type`` attribute."""
    for child in _children(el):
        if child.get("type") in ("relative", "absolute"):
            bucket = _text(el.find("s3bucket")).strip()
            if bucket and child.tag == "zarr":
                key = _text(child).strip().strip("/")
                return f"s3://{bucket}/{key}"
            return _resolve(child, base, ctx)
    return None


def _zgroups(el: Any, root: Location | None, ctx: _Ctx) -> dict[tuple[int, int], Location]:
    """``bdv.multimg.zarr`` per-view groups (versions 1.0 and 3.0 spellings)."""
    out: dict[tuple[int, int], Location] = {}
    for z in el.findall("zgroups/zgroup"):
        setup = _int(z.get("setup"), z, "<zgroup> attribute setup", ctx)
        tp = _int(z.get("tp", z.get("timepoint")), z, "<zgroup> attribute tp/timepoint", ctx)
        rel = (z.get("path") or _text(z.find("path"))).strip()
        if not rel:
            raise ctx.error(z, "zgroup", "a path attribute or <path> child", rel)
        out[(tp, setup)] = rel if root is None else _join(root, rel)
    return out


def _file_mappings(el: Any, base: Location, ctx: _Ctx) -> dict[tuple[int, int], Location]:
    """Raw-file loaders (``spimreconstruction.filemap2``, ...): one file per view."""
    out: dict[tuple[int, int], Location] = {}
    for m in el.findall("files/FileMapping"):
        setup = _int(m.get("view_setup"), m, "<FileMapping> attribute view_setup", ctx)
        tp = _int(m.get("timepoint"), m, "<FileMapping> attribute timepoint", ctx)
        f = m.find("file")
        if f is None:
            raise ctx.error(m, "FileMapping", "a <file> child", None)
        out.setdefault((tp, setup), _resolve(f, base, ctx))
    return out


# -- view setups and attributes ---------------------------------------------------------------
def _view_setups(el: Any, ctx: _Ctx) -> dict[int, ViewSetup]:
    if el is None:
        logger.warning("%s: <SequenceDescription> has no <ViewSetups>: no setups", ctx.path)
        return {}
    setups: dict[int, ViewSetup] = {}
    for v in el.findall("ViewSetup"):
        s = _view_setup(v, ctx)
        if s.id in setups:
            raise ctx.error(v, "ViewSetup", "unique <id> values", s.id)
        setups[s.id] = s
    return setups


def _view_setup(el: Any, ctx: _Ctx) -> ViewSetup:
    id_el = el.find("id")
    sid = _int(_text(id_el), el if id_el is None else id_el, "ViewSetup><id", ctx)
    size_el, vox_el = el.find("size"), el.find("voxelSize")
    size = None if size_el is None else _zyx(_ints(size_el, "ViewSetup><size", 3, ctx))
    voxel, file_unit, unit = None, None, _PIXEL
    if vox_el is not None:
        file_unit = _text(vox_el.find("unit")).strip() if vox_el.find("unit") is not None else None
        raw = _zyx(_floats(vox_el.find("size"), "voxelSize><size", 3, ctx))
        voxel, unit = _to_um(raw, file_unit, ctx)
    attrs_el = el.find("attributes")
    attributes = {
        a.tag: _int(_text(a), a, f"attributes><{a.tag}", ctx)
        for a in ([] if attrs_el is None else _children(attrs_el))
    }
    name_el = el.find("name")
    return ViewSetup(
        id=sid,
        name=None if name_el is None else _text(name_el).strip(),
        size_zyx=size,
        voxel_size_zyx=voxel,
        unit=unit,
        file_unit=file_unit,
        attributes=attributes,
    )


def _to_um(
    values: tuple[float, float, float], unit: str | None, ctx: _Ctx
) -> tuple[tuple[float, float, float], str]:
    factor = unit_to_um(unit)
    if factor is None:
        if (unit or "").strip().lower() not in _UNITLESS:
            logger.warning("%s: unknown voxel unit %r: sizes kept as unitless", ctx.path, unit)
        return values, _PIXEL
    return _scaled(values, factor), _MICRO


def _length_scale(setups: dict[int, ViewSetup], ctx: _Ctx) -> float:
    """Micrometres per file unit shared by all setups (1 when unitless or mixed)."""
    factors = {unit_to_um(s.file_unit) for s in setups.values() if s.voxel_size_zyx is not None}
    if len(factors) > 1:
        logger.warning("%s: setups use different units; tile locations kept as written", ctx.path)
    if len(factors) != 1:
        return 1.0
    return factors.pop() or 1.0


def _attribute_blocks(
    el: Any, um_per_unit: float, ctx: _Ctx
) -> dict[str, dict[int, dict[str, Any]]]:
    blocks: dict[str, dict[int, dict[str, Any]]] = {}
    for block in [] if el is None else el.findall("Attributes"):
        name = block.get("name")
        if not name:
            raise ctx.error(block, "Attributes", "a name attribute", name)
        entities = blocks.setdefault(name, {})
        for ent in _children(block):
            eid = _int(_text(ent.find("id")), ent, f"{ent.tag}><id", ctx)
            entities[eid] = _entity(ent, eid, um_per_unit, ctx)
    return blocks


def _entity(el: Any, eid: int, um_per_unit: float, ctx: _Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {"name": str(eid)}
    for child in _children(el):
        tag = child.tag
        if tag == "id":
            continue
        if tag == "location":
            xyz = _floats(child, f"{el.tag}><location", 3, ctx)
            out["location"] = _scaled(_zyx(xyz), um_per_unit)
        elif tag == "axis":
            out["axis"] = _zyx(_floats(child, f"{el.tag}><axis", 3, ctx))
        elif tag == "degrees":
            out["degrees"] = _floats(child, f"{el.tag}><degrees", 1, ctx)[0]
        elif len(child) == 0:
            out[tag] = _text(child).strip()
    return out


# -- timepoints, missing views, registrations -------------------------------------------------
def _timepoints(el: Any, ctx: _Ctx) -> list[int]:
    if el is None:
        logger.warning("%s: <SequenceDescription> has no <Timepoints>: no timepoints", ctx.path)
        return []
    kind = el.get("type")
    if kind == "range":
        first = _int(_text(el.find("first")), el, "Timepoints><first", ctx)
        last = _int(_text(el.find("last")), el, "Timepoints><last", ctx)
        ids: Iterable[int] = range(first, last + 1)
    elif kind == "list":
        ids = [_int(_text(i), i, "Timepoint><id", ctx) for i in el.findall("Timepoint/id")]
    elif kind == "pattern":
        ids = _integer_pattern(el.find("integerpattern"), ctx)
    else:
        raise ctx.error(el, "Timepoints", "type='range', 'list' or 'pattern'", kind)
    return list(dict.fromkeys(ids))


def _integer_pattern(el: Any, ctx: _Ctx) -> list[int]:
    """``0,1-3,40-50:10`` -> ids (spimdata ``IntegerPattern``)."""
    ids: list[int] = []
    for part in _text(el).split(","):
        part = part.strip()
        if not part:
            continue
        m = _PATTERN_PART.fullmatch(part)
        if m is None:
            raise ctx.error(el, "integerpattern", "'a', 'a-b' or 'a-b:step' parts", part)
        a, b, step = int(m[1]), int(m[2] or m[1]), int(m[3] or 1)
        ids += range(a, b + 1, step)
    return ids


def _view_key(el: Any, ctx: _Ctx) -> tuple[int, int]:
    tp = _int(el.get("timepoint"), el, f"<{el.tag}> attribute timepoint", ctx)
    return tp, _int(el.get("setup"), el, f"<{el.tag}> attribute setup", ctx)


def _missing_views(el: Any, ctx: _Ctx) -> set[tuple[int, int]]:
    return set() if el is None else {_view_key(m, ctx) for m in el.findall("MissingView")}


def _registrations(el: Any, ctx: _Ctx) -> dict[tuple[int, int], list[ViewTransform]]:
    out: dict[tuple[int, int], list[ViewTransform]] = {}
    for reg in el.findall("ViewRegistration"):
        key = _view_key(reg, ctx)
        if key in out:
            raise ctx.error(reg, "ViewRegistration", "one registration per view", key)
        out[key] = [_view_transform(t, ctx) for t in reg.findall("ViewTransform")]
    return out


def _view_transform(el: Any, ctx: _Ctx) -> ViewTransform:
    kind = el.get("type", "affine")
    name_el = el.find("Name")
    name = None if name_el is None else _text(name_el).strip()
    if kind == "generic":
        return ViewTransform(name, None, kind, el.get("class"))
    if kind != "affine":
        raise ctx.error(el, "ViewTransform", "type='affine' or 'generic'", kind)
    affine_el = el.find("affine")
    if affine_el is None:
        raise ctx.error(el, "ViewTransform", "an <affine> child", None)
    if not _text(affine_el).strip():
        ctx.empty_affines += 1
        return ViewTransform(name, None, kind)
    return ViewTransform(name, _floats(affine_el, "ViewTransform><affine", 12, ctx), kind)


def _check_consistency(data: SpimData) -> None:
    """Log (do not raise) what Java would choke on but the data still make sense without."""
    names = {n for s in data.setups.values() for n in s.attributes}
    for name in sorted(names):
        used = {s.attributes[name] for s in data.setups.values() if name in s.attributes}
        undefined = sorted(used - set(data.attributes.get(name, {})))
        if undefined:
            logger.warning(
                "%s: setups use %s ids %s that no <Attributes name=%r> entry defines",
                data.path,
                name,
                undefined,
                name,
            )
    unregistered = [v for v in data.views() if v not in data.registrations]
    if unregistered:
        logger.warning(
            "%s: %d present view(s) have no <ViewRegistration> (e.g. %s)",
            data.path, len(unregistered), unregistered[0],
        )  # fmt: skip
    declared = set(data.setups)
    orphans = [k for k in data.registrations if k[1] not in declared]
    if orphans:
        logger.warning(
            "%s: %d <ViewRegistration>(s) name setups that <ViewSetups> does not declare",
            data.path, len(orphans),
        )  # fmt: skip
