"""BigStitcher image loaders beyond HDF5: ``bdv.n5``, ``bdv.n5.cloud`` and ``bdv.multimg.zarr``.

Layouts follow ``shared/formats/BDV-BIGSTITCHER.md``:

- **BDV N5** (section 2.10): datasets ``setup{s}/timepoint{t}/s{L}`` (no zero
  padding); the group ``setup{s}`` holds ``downsamplingFactors`` (per level,
  **x, y, z**) and ``dataType`` (real types: no int16 trick). N5 lists
  dimensions x first; arrays here are (z, y, x). A timepoint without its group
  is a missing view. ``bdv.n5.cloud`` is the same layout behind a URI.
- **bdv.multimg.zarr** (section 1.4.1): one OME-Zarr multiscale image per view,
  level ``L`` at ``<group>/<L>``; arrays are 3D (z, y, x) or 4D/5D with
  channel/time axes, the view's hyperslice chosen by the ``indicies``
  attribute (``"c t"``) or, without it, extra axes of size 1; mipmap factors
  are ``scale[L] / scale[0]`` rounded to 4 decimals.

I/O engine: TensorStore reads and writes N5 and every remote store (zarr-python
3 has no N5); local zarr goes through zarr-python. TensorStore is optional:
``pip install 'tilefuse[n5]'``. Remote locations are ``s3://bucket/key`` (an
S3-compatible endpoint is taken from ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``, the region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
credentials from the usual AWS chain) and ``http(s)://`` (read-only).

Everything is lazy: opening reads only small JSON attributes; a source reads
only the chunks its region touches.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from tilefuse.errors import (
    MissingTileError,
    SelectionError,
    UnsupportedFormatError,
)
from tilefuse.io.bdv_read import (
    BDV_DATA_TYPES,
    BdvLevel,
    SetupsSource,
    check_same_shape,
)
from tilefuse.source import Source, normalize_region

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from tilefuse.source import Region

__all__ = [
    "N5_DATA_TYPES",
    "BdvN5",
    "BdvN5Source",
    "ZarrViewSource",
    "kvstore_spec",
    "require_tensorstore",
]

#: N5 data types bdv-core accepts (all native: no int16 trick in N5)
N5_DATA_TYPES = BDV_DATA_TYPES
_SETUP_RE = re.compile(r"setup(\d+)")
_TIMEPOINT_RE = re.compile(r"timepoint(\d+)")

Location = Path | str


def require_tensorstore(what: str) -> Any:
    """Import TensorStore, or raise an ImportError naming the extra that installs it."""
    from tilefuse._optional import require

    return require("tensorstore", "n5", what)


def is_remote(location: Location) -> bool:
    """Whether a location is a URI (``s3://``, ``http(s)://``) rather than a local path."""
    return isinstance(location, str) and "://" in location and not location.startswith("file:")


def kvstore_spec(location: Location) -> dict[str, Any]:
    """A TensorStore key-value store spec for a local folder or an ``s3://`` / ``http(s)://`` URI.

    Raises
    ------
    UnsupportedFormatError
        For another URI scheme.
    """
    if not is_remote(location):
        path = str(location)
        if path.startswith("file://"):
            path = urlsplit(path).path
        return {"driver": "file", "path": path.rstrip("/") + "/"}
    parts = urlsplit(str(location))
    key = parts.path.strip("/")
    if parts.scheme == "s3":
        spec: dict[str, Any] = {
            "driver": "s3",
            "bucket": parts.netloc,
            "path": key + "/" if key else "",
            # a bounded retry budget: an unreachable store fails in seconds, not minutes
            "context": {
                "s3_request_retries": {
                    "max_retries": 4,
                    "initial_delay": "0.2s",
                    "max_delay": "4s",
                }
            },
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            spec["endpoint"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region or endpoint:
            spec["aws_region"] = region or "us-east-1"
        return spec
    if parts.scheme in ("http", "https"):
        return {"driver": "http", "base_url": f"{parts.scheme}://{parts.netloc}/{key}/"}
    msg = (
        f"{location}: unsupported store scheme {parts.scheme!r}; expected s3://, http(s):// "
        "or a local path"
    )
    raise UnsupportedFormatError(msg)


def _join(location: Location, *parts: str) -> Location:
    if isinstance(location, Path):
        return location.joinpath(*parts)
    return "/".join([str(location).rstrip("/"), *parts])


def _read_json(location: Location, key: str) -> dict[str, Any] | None:
    """A JSON document of a store (``None`` when absent)."""
    if not is_remote(location):
        p = Path(str(location)) / key
        if not p.is_file():
            return None
        text = p.read_bytes()
    else:
        ts = require_tensorstore(f"reading {location}")
        kv = ts.KvStore.open(kvstore_spec(location)).result()
        res = kv.read(key).result()
        if res.state != "value":
            return None
        text = bytes(res.value)
    try:
        out = json.loads(text)
    except ValueError as e:
        msg = f"{_join(location, key)}: not valid JSON ({e})"
        raise UnsupportedFormatError(msg) from e
    if not isinstance(out, dict):
        msg = f"{_join(location, key)}: expected a JSON object, got {type(out).__name__}"
        raise UnsupportedFormatError(msg)
    return out


def _list_names(location: Location) -> list[str]:
    """Immediate child names of a local folder or a store prefix."""
    if not is_remote(location):
        p = Path(str(location))
        return sorted(c.name for c in p.iterdir()) if p.is_dir() else []
    ts = require_tensorstore(f"listing {location}")
    kv = ts.KvStore.open(kvstore_spec(location)).result()
    names = {k.decode().split("/", 1)[0] for k in kv.list().result()}
    return sorted(names)


class _OpenArrays:
    """Arrays opened on first use and kept, behind a lock; `close` and pickling drop them."""

    _lock: threading.Lock
    _arrays: dict[Any, Any]

    def _init_arrays(self) -> None:
        self._lock = threading.Lock()
        self._arrays = {}

    def close(self) -> None:
        """Drop the open arrays (they reopen on the next read)."""
        with self._lock:
            self._arrays.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_lock=None, _arrays={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class BdvN5(_OpenArrays):
    """Lazy reader of a BigDataViewer N5 container (``bdv.n5`` / ``bdv.n5.cloud``).

    Opening reads only the ``attributes.json`` of the root's ``setup<id>``
    groups; level arrays are opened on first use (TensorStore) and kept.
    Thread-safe; picklable by location (TensorStore handles reopen lazily).

    Parameters
    ----------
    location : str or PathLike
        The N5 root: a local folder or an ``s3://`` / ``http(s)://`` URI.

    Raises
    ------
    ImportError
        If TensorStore is not installed (``pip install 'tilefuse[n5]'``).
    MissingTileError
        If a local root does not exist.
    UnsupportedFormatError
        If it is not in the BDV N5 layout (no ``setup<id>`` group with
        ``downsamplingFactors`` and a valid ``dataType``).
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.location: Location = (
            str(location) if is_remote(str(location)) else Path(location)  # type: ignore[arg-type]
        )
        require_tensorstore(f"BDV N5 {self.location}")
        if isinstance(self.location, Path) and not self.location.is_dir():
            msg = f"BDV N5 container not found: {self.location}"
            raise MissingTileError(msg)
        self._init_arrays()
        self._levels: dict[tuple[int, int], list[BdvLevel]] = {}
        self._setups: dict[int, tuple[list[tuple[float, float, float]], np.dtype[Any]]] = {}
        for name in _list_names(self.location):
            m = _SETUP_RE.fullmatch(name)
            if m and f"setup{int(m[1])}" == name:
                self._setups[int(m[1])] = self._setup_attrs(int(m[1]))
        if not self._setups:
            msg = (
                f"{self.location} is not a BigDataViewer N5 container: no setup<id> group with "
                "downsamplingFactors and dataType (formats doc section 2.10)"
            )
            raise UnsupportedFormatError(msg)

    def _setup_attrs(self, setup: int) -> tuple[list[tuple[float, float, float]], np.dtype[Any]]:
        where = _join(self.location, f"setup{setup}", "attributes.json")
        attrs = _read_json(self.location, f"setup{setup}/attributes.json")
        if attrs is None:
            msg = f"{where}: missing; expected downsamplingFactors and dataType"
            raise UnsupportedFormatError(msg)
        factors = attrs.get("downsamplingFactors")
        ok = (
            isinstance(factors, list)
            and factors
            and all(isinstance(f, list) and len(f) == 3 for f in factors)
        )
        if not ok:
            msg = f"{where}: downsamplingFactors is {factors!r}; expected [[x, y, z], ...]"
            raise UnsupportedFormatError(msg)
        dt = attrs.get("dataType")
        if dt not in N5_DATA_TYPES:
            msg = f"{where}: dataType is {dt!r}; expected one of {', '.join(N5_DATA_TYPES)}"
            raise UnsupportedFormatError(msg)
        zyx = [(float(f[2]), float(f[1]), float(f[0])) for f in factors or ()]
        return zyx, np.dtype(dt)

    # -- metadata ------------------------------------------------------------------------
    @property
    def setups(self) -> list[int]:
        """Setup ids present as ``setup<id>`` groups, sorted."""
        return sorted(self._setups)

    def dtype(self, setup: int) -> np.dtype[Any]:
        """Pixel dtype of a setup (its ``dataType``)."""
        return self._info(setup)[1]

    def timepoints(self, setup: int) -> list[int]:
        """Timepoints present for a setup (``timepoint<t>`` groups), sorted."""
        names = _list_names(_join(self.location, f"setup{setup}"))
        return sorted(int(m[1]) for n in names if (m := _TIMEPOINT_RE.fullmatch(n)))

    def has_view(self, timepoint: int, setup: int) -> bool:
        """Whether the view's level-0 dataset exists."""
        key = f"setup{setup}/timepoint{timepoint}/s0/attributes.json"
        return setup in self._setups and _read_json(self.location, key) is not None

    def levels(self, setup: int, timepoint: int) -> list[BdvLevel]:
        """Resolution levels ``(factors, shape, chunks)`` of a view, all (z, y, x).

        Raises
        ------
        MissingTileError
            If the setup, the view or a level is missing.
        """
        key = (int(setup), int(timepoint))
        with self._lock:
            if key not in self._levels:
                factors, _ = self._info(setup)
                out = []
                for lvl, fac in enumerate(factors):
                    arr = self._array_locked(timepoint, setup, lvl)
                    shape = tuple(int(n) for n in arr.shape[::-1])
                    chunks = tuple(int(n) for n in arr.chunk_layout.read_chunk.shape[::-1])
                    out.append(BdvLevel(fac, shape, chunks))  # type: ignore[arg-type]
                self._levels[key] = out
            return list(self._levels[key])

    # -- pixels --------------------------------------------------------------------------
    def read(
        self,
        timepoint: int,
        setup: int,
        level: int = 0,
        region: Region | Sequence[slice | tuple[int, int]] | None = None,
    ) -> NDArray[Any]:
        """Read a (z, y, x) region of one view and level (clipped to its shape)."""
        with self._lock:
            arr = self._array_locked(timepoint, setup, level)
        sel = normalize_region(region, tuple(int(n) for n in arr.shape[::-1]))  # type: ignore[arg-type]
        return _read_region(arr, sel)

    def _array(self, timepoint: int, setup: int, level: int) -> Any:
        with self._lock:
            return self._array_locked(timepoint, setup, level)

    def _array_locked(self, timepoint: int, setup: int, level: int) -> Any:
        key = (int(timepoint), int(setup), int(level))
        if key not in self._arrays:
            factors, dt = self._info(setup)
            if not 0 <= level < len(factors):
                msg = f"{self.location}: setup {setup} has {len(factors)} level(s); got {level}"
                raise SelectionError(msg)
            ts = require_tensorstore(f"BDV N5 {self.location}")
            path = f"setup{setup}/timepoint{timepoint}/s{level}"
            spec = {"driver": "n5", "kvstore": kvstore_spec(_join(self.location, path))}
            try:
                arr = ts.open(spec, read=True).result()
            except ValueError as e:
                msg = (
                    f"{self.location}: no dataset {path} (timepoint {timepoint}, setup {setup}, "
                    f"level {level}): {e}"
                )
                raise MissingTileError(msg) from e
            if arr.rank != 3 or np.dtype(arr.dtype.numpy_dtype) != dt:
                msg = (
                    f"{_join(self.location, path)}: a {arr.rank}D {arr.dtype.name} dataset; "
                    f"expected 3D (x, y, z) {dt} (the setup's dataType)"
                )
                raise UnsupportedFormatError(msg)
            self._arrays[key] = arr
        return self._arrays[key]

    def _info(self, setup: int) -> tuple[list[tuple[float, float, float]], np.dtype[Any]]:
        try:
            return self._setups[int(setup)]
        except KeyError:
            msg = f"{self.location}: no setup {setup}; setups present: {self.setups}"
            raise MissingTileError(msg) from None

    # -- lifecycle -----------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"BdvN5({str(self.location)!r}, setups={self.setups})"


def _read_region(arr: Any, region: Region) -> NDArray[Any]:
    """Read ``(z, y, x)`` slices of an x-first TensorStore array."""
    z, y, x = region
    if any(s.stop <= s.start for s in region):
        return np.empty([s.stop - s.start for s in region], dtype=arr.dtype.numpy_dtype)
    data = arr[x.start : x.stop, y.start : y.stop, z.start : z.stop].read().result()
    return np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0))


class BdvN5Source(SetupsSource):
    """Lazy pixel source over setups of a BDV N5 container: shape ``(c, z, y, x)``.

    The given setups become the channels, at one timepoint and level. Reads
    touch only the chunks of the requested region. Thread-safe; picklable.

    Parameters
    ----------
    n5 : str, PathLike or BdvN5
        The N5 root, or an open `BdvN5` shared between sources.
    setups : int or sequence of int
        Setup ids, one per channel; they must share shape and dtype.
    timepoint, level : int
        The view's timepoint and the resolution level (0 = full).

    Raises
    ------
    MissingTileError
        If a setup or view is missing.
    SelectionError
        If the level does not exist.
    IncompatibleTilesError
        If the setups differ in shape or dtype.
    """

    def __init__(
        self,
        n5: str | os.PathLike[str] | BdvN5,
        setups: int | Sequence[int],
        timepoint: int = 0,
        level: int = 0,
    ) -> None:
        self.n5 = n5 if isinstance(n5, BdvN5) else BdvN5(n5)
        self.container = self.n5
        self._init_setups(setups, timepoint, level)

    @property
    def path(self) -> Location:
        """The N5 root."""
        return self.n5.location

    def _read_setup(self, setup: int, region: Region, out: NDArray[Any]) -> None:
        out[...] = self.n5.read(self.timepoint, setup, self.level, region)


# -- bdv.multimg.zarr ---------------------------------------------------------------------------
class _ZarrView(_OpenArrays):
    """One view of a ``bdv.multimg.zarr`` project: an OME-Zarr image and its hyperslice."""

    def __init__(self, location: Location, indices: tuple[int, ...] | None) -> None:
        self.location, self.indices = location, indices
        self._init_arrays()
        attrs = self._attrs()
        ms = (attrs.get("ome") or attrs).get("multiscales")
        if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
            msg = f"{location}: not an OME-Zarr multiscale image (no multiscales metadata)"
            raise UnsupportedFormatError(msg)
        m = ms[0]
        axes = m.get("axes") or [{"name": a} for a in "tczyx"[-len(self._level_shape0()) :]]
        self.axes = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
        if self.axes[-3:] != ["z", "y", "x"]:
            msg = f"{location}: axes {self.axes}; expected the last three to be z, y, x"
            raise UnsupportedFormatError(msg)
        scales = []
        for d in m.get("datasets", []):
            s = next(
                (t["scale"] for t in d.get("coordinateTransformations", []) if "scale" in t),
                [1.0] * len(self.axes),
            )
            scales.append(np.asarray(s, dtype=float)[-3:])
        if not scales:
            msg = f"{location}: multiscales lists no datasets"
            raise UnsupportedFormatError(msg)
        # AllenOMEZarrLoader: factors = scale[L] / scale[0], rounded to 4 decimals
        self.factors = [tuple(float(v) for v in np.round(s / scales[0], 4)) for s in scales]

    def _attrs(self) -> dict[str, Any]:
        for key in ("zarr.json", ".zattrs"):
            doc = _read_json(self.location, key)
            if doc is not None:
                return doc.get("attributes", doc) if key == "zarr.json" else doc
        msg = f"OME-Zarr image not found or unreadable: {self.location} (no zarr.json / .zattrs)"
        raise MissingTileError(msg)

    def _level_shape0(self) -> tuple[int, ...]:
        return tuple(self.array(0).shape)

    def array(self, level: int) -> Any:
        """Level ``level`` (dataset ``<group>/<level>``, as AllenOMEZarrLoader names them)."""
        with self._lock:
            if level not in self._arrays:
                loc = _join(self.location, str(level))
                if is_remote(loc):
                    ts = require_tensorstore(f"reading {loc}")
                    arr = None
                    for driver in ("zarr3", "zarr"):
                        try:
                            arr = ts.open(
                                {"driver": driver, "kvstore": kvstore_spec(loc)}, read=True
                            ).result()
                            break
                        except ValueError:
                            continue
                    if arr is None:
                        msg = f"{loc}: no zarr array (v2 or v3) at this level"
                        raise MissingTileError(msg)
                else:
                    import zarr

                    try:
                        arr = zarr.open_array(str(loc), mode="r")
                    except (FileNotFoundError, ValueError, KeyError) as e:
                        msg = f"{loc}: no zarr array at level {level} ({e})"
                        raise MissingTileError(msg) from e
                self._arrays[level] = arr
            return self._arrays[level]

    def index(self, level: int) -> tuple[Any, ...]:
        """Leading indices selecting the view's (z, y, x) hyperslice of a level's array."""
        shape = tuple(int(n) for n in self.array(level).shape)
        extra = len(shape) - 3
        if extra < 0 or extra > 2:
            msg = f"{self.location}/{level}: a {len(shape)}D array; expected 3D, 4D or 5D"
            raise UnsupportedFormatError(msg)
        lead = self.axes[:extra] if len(self.axes) == len(shape) else ["t", "c"][-extra:]
        if self.indices is None:
            for name, n in zip(lead, shape[:extra], strict=True):
                if n != 1:
                    msg = (
                        f"{self.location}/{level}: axis {name!r} has size {n} but the "
                        "<zgroup> has no indicies to choose from it"
                    )
                    raise UnsupportedFormatError(msg)
            return (0,) * extra
        # indicies are (c, t) in N5 order (x, y, z, c, t): the array's lead axes are (t, c)
        chosen = {"c": self.indices[0], "t": self.indices[1] if len(self.indices) > 1 else 0}
        out = []
        for name, n in zip(lead, shape[:extra], strict=True):
            i = chosen.get(name, 0)
            if not 0 <= i < n:
                msg = f"{self.location}/{level}: index {i} of axis {name!r} is outside [0, {n})"
                raise SelectionError(msg)
            out.append(i)
        return tuple(out)


class ZarrViewSource(Source):
    """Lazy pixel source over views of a ``bdv.multimg.zarr`` project: ``(c, z, y, x)``.

    Each channel is one view's OME-Zarr image (local with zarr-python, remote
    with TensorStore), read at one level (``<group>/<level>``).

    Parameters
    ----------
    groups : sequence of str or PathLike
        The OME-Zarr image of each channel (local path or ``s3://`` URI).
    indices : sequence of (tuple of int or None), optional
        Per channel, the ``indicies`` of its ``<zgroup>`` (c, t); default none.
    level : int
        Resolution level.

    Raises
    ------
    MissingTileError
        If an image or level is missing.
    SelectionError
        If the level or an index does not exist.
    IncompatibleTilesError
        If the channels differ in shape or dtype.
    """

    def __init__(
        self,
        groups: Sequence[Location],
        indices: Sequence[tuple[int, ...] | None] | None = None,
        level: int = 0,
    ) -> None:
        idx = list(indices) if indices is not None else [None] * len(groups)
        self.views = [_ZarrView(g, i) for g, i in zip(groups, idx, strict=True)]
        self.level = int(level)
        shapes, dtypes = {}, {}
        for k, v in enumerate(self.views):
            if not 0 <= self.level < len(v.factors):
                msg = f"{v.location}: {len(v.factors)} level(s); got level {level}"
                raise SelectionError(msg)
            arr = v.array(self.level)
            extra = len(v.index(self.level))
            shapes[k] = tuple(int(n) for n in arr.shape[extra:])
            dtypes[k] = np.dtype(getattr(arr.dtype, "numpy_dtype", arr.dtype))
        check_same_shape(
            self.views[0].location, list(range(len(self.views))), shapes, dtypes, 0, self.level
        )
        self._shape = (len(self.views), *shapes[0])  # type: ignore[assignment]
        self._dtype = dtypes[0]

    @property
    def path(self) -> Location:
        """The first channel's image."""
        return self.views[0].location

    @property
    def factors(self) -> tuple[float, float, float]:
        """Subsampling factors (z, y, x) of this level relative to level 0."""
        return self.views[0].factors[self.level]  # type: ignore[return-value]

    def _read(self, region: Region) -> NDArray[Any]:
        out = np.empty((len(self.views), *[s.stop - s.start for s in region]), self._dtype)
        if out.size == 0:
            return out
        for c, v in enumerate(self.views):
            arr = v.array(self.level)
            data = arr[(*v.index(self.level), *region)]
            if hasattr(data, "read"):  # TensorStore: a lazy view
                data = data.read().result()
            out[c] = np.asarray(data)
        return out

    def close(self) -> None:
        """Drop open arrays (they reopen on the next read)."""
        for v in self.views:
            v.close()

    def __repr__(self) -> str:
        return f"ZarrViewSource({str(self.path)!r}, channels={len(self.views)}, shape={self.shape})"
