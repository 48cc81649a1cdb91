"""Synthetic ExM-like mosaics with known ground truth (for the demo, tests and benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from tilefuse.errors import ParameterError
from tilefuse.source import Source

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = [
    "Mosaic",
    "SampleTile",
    "ShadedMosaic",
    "SyntheticSample",
    "cut_tiles",
    "make_volume",
    "shaded_mosaic",
    "vignetting",
]


def make_volume(
    shape: Sequence[int],
    *,
    n_blobs: int | None = None,
    blob_radius: float = 4.0,
    seed: int = 0,
    dtype: Any = np.uint16,
) -> tuple[NDArray[Any], NDArray[np.uint32]]:
    """A textured volume with bright blobs, and the blobs' label image.

    Parameters
    ----------
    shape : sequence of 3 ints
        (z, y, x).
    n_blobs : int, optional
        Number of blobs (default: one per 4000 voxels).
    blob_radius : float
        Blob radius in voxels.
    seed : int
        Random seed (the output is a pure function of the arguments).
    dtype : dtype-like
        Output image dtype (integer types are scaled to use part of their range).

    Returns
    -------
    image : ndarray
        Smooth textured background plus Gaussian blobs and a little noise.
    labels : ndarray of uint32
        One label per blob (balls of ``blob_radius``), 0 elsewhere.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    bg = ndimage.gaussian_filter(rng.random(shape, dtype=np.float32), sigma=4, mode="wrap")
    bg = (bg - bg.min()) / max(float(np.ptp(bg)), 1e-6)
    n_blobs = n_blobs if n_blobs is not None else max(1, int(np.prod(shape) / 4000))
    centres = (rng.random((n_blobs, 3)) * np.array(shape)).astype(int)
    seeds = np.zeros(shape, dtype=np.float32)
    seeds[tuple(centres.T)] = 1.0
    blobs = ndimage.gaussian_filter(seeds, sigma=blob_radius / 2, mode="constant")
    blobs /= max(float(blobs.max()), 1e-6)
    img = 0.25 * bg + 0.7 * np.clip(blobs * 3, 0, 1) + 0.05 * rng.random(shape, dtype=np.float32)
    dist = ndimage.distance_transform_edt(seeds == 0)
    _, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    ids = np.zeros(shape, dtype=np.uint32)
    ids[tuple(centres.T)] = np.arange(1, n_blobs + 1, dtype=np.uint32)
    labels = np.where(dist <= blob_radius, ids[tuple(nearest)], 0).astype(np.uint32)
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        top = min(np.iinfo(dt).max, 60000)
        img = np.rint(img * top * 0.9 + top * 0.02)
    return img.astype(dt), labels


@dataclass(frozen=True)
class Mosaic:
    """Tiles cut from a known volume: arrays, voxel offsets and the truth."""

    volume: NDArray[Any]
    tiles: list[NDArray[Any]]
    offsets_px: NDArray[np.float64]
    grid: tuple[int, int]


def cut_tiles(
    volume: NDArray[Any],
    grid: tuple[int, int] = (3, 3),
    *,
    overlap: float = 0.15,
    tile_shape: Sequence[int] | None = None,
) -> Mosaic:
    """Cut a volume into a (rows, cols) grid of overlapping tiles at integer positions.

    Parameters
    ----------
    volume : ndarray
        (z, y, x) (or (c, z, y, x)) ground truth.
    grid : (int, int)
        Rows (y) and columns (x).
    overlap : float
        Fraction of a tile shared with its neighbour (used when
        ``tile_shape`` is not given).
    tile_shape : sequence of 2 ints, optional
        (y, x) tile size; positions are then spread evenly to cover the volume.

    Returns
    -------
    Mosaic
        Tiles in row-major order with their (z, y, x) offsets in voxels; every
        voxel of the volume is covered by at least one tile.
    """
    ny, nx = volume.shape[-2:]
    rows, cols = grid
    if tile_shape is None:
        th = int(np.ceil(ny / (rows - (rows - 1) * overlap)))
        tw = int(np.ceil(nx / (cols - (cols - 1) * overlap)))
    else:
        th, tw = (int(v) for v in tile_shape)
    ys = np.linspace(0, ny - th, rows).round().astype(int) if rows > 1 else np.array([0])
    xs = np.linspace(0, nx - tw, cols).round().astype(int) if cols > 1 else np.array([0])
    tiles, offs = [], []
    for y in ys:
        for x in xs:
            tiles.append(np.ascontiguousarray(volume[..., y : y + th, x : x + tw]))
            offs.append((0.0, float(y), float(x)))
    return Mosaic(volume, tiles, np.array(offs), (rows, cols))


def vignetting(shape: Sequence[int], corner: float = 0.4) -> NDArray[np.float64]:
    """A radial vignetting profile over a (y, x) field of view, mean 1.

    ``1 - a r^2 - b r^4`` in the normalised radius (1 at the corners), sampled
    at voxel centres, with the corners ``corner`` (e.g. 0.4 = 40 %) darker
    than the centre.
    """
    ny, nx = (int(v) for v in shape)
    y = (np.arange(ny) + 0.5) / ny * 2 - 1
    x = (np.arange(nx) + 0.5) / nx * 2 - 1
    r2 = (y[:, None] ** 2 + x[None, :] ** 2) / 2
    prof = 1 - corner * (0.6 * r2 + 0.4 * r2**2)
    return prof / prof.mean()


@dataclass(frozen=True)
class ShadedMosaic:
    """Tiles with known shading, per-tile gains and offsets (the truth of intensity tests).

    Each tile is ``flatfield * (gain * volume + offset) + darkfield`` of its region,
    rounded to the volume's dtype. ``volume`` is float64 (the truth before rounding).
    """

    volume: NDArray[np.float64]
    tiles: list[NDArray[Any]]
    offsets_px: NDArray[np.float64]
    flatfield: NDArray[np.float64]
    darkfield: NDArray[np.float64]
    gains: NDArray[np.float64]
    tile_offsets: NDArray[np.float64]


def shaded_mosaic(
    volume: NDArray[Any],
    grid: tuple[int, int] = (3, 3),
    *,
    overlap: float = 0.15,
    corner: float = 0.4,
    gains: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    darkfield: NDArray[Any] | None = None,
    reference: int | None = None,
    dtype: Any = np.uint16,
    seed: int = 0,
) -> ShadedMosaic:
    """Cut a volume into tiles and apply known vignetting, gains and offsets.

    Parameters
    ----------
    volume : ndarray
        (z, y, x) truth intensities.
    grid, overlap
        As `cut_tiles`.
    corner : float
        Vignetting darkening at the corners (0.3-0.5 typical).
    gains, offsets : sequence of float, optional
        Per tile; default random gains in [0.7, 1.4] and offsets in [0, 5 %]
        of the volume's mean.
    darkfield : ndarray (y, x), optional
        Additive profile (default none).
    reference : int, optional
        A tile given gain 1 and offset 0 (so corrections relative to it equal the truth).
    dtype : dtype-like
        Tile dtype (integers are rounded and clipped).
    seed : int
        Random seed for the default gains and offsets.
    """
    rng = np.random.default_rng(seed)
    m = cut_tiles(np.asarray(volume, dtype=np.float64), grid, overlap=overlap)
    n = len(m.tiles)
    g = np.asarray(gains, dtype=float) if gains is not None else rng.uniform(0.7, 1.4, n)
    level = float(np.mean(volume))
    o = np.asarray(offsets, dtype=float) if offsets is not None else rng.uniform(0, 0.05, n) * level
    g, o = g.copy(), o.copy()
    if reference is not None:
        g[reference], o[reference] = 1.0, 0.0
    flat = vignetting(m.tiles[0].shape[-2:], corner)
    dark = np.zeros_like(flat) if darkfield is None else np.asarray(darkfield, dtype=float)
    dt = np.dtype(dtype)
    tiles = []
    for t, gk, ok in zip(m.tiles, g, o, strict=True):
        img = flat * (gk * t + ok) + dark
        if np.issubdtype(dt, np.integer):
            img = np.clip(np.rint(img), np.iinfo(dt).min, np.iinfo(dt).max)
        tiles.append(img.astype(dt))
    return ShadedMosaic(m.volume, tiles, m.offsets_px, flat, dark, g, o)


class SyntheticSample:
    """An ExM-like sample defined voxel by voxel, so any region can be generated on its own.

    Unlike `make_volume`, nothing is computed for the whole volume: `image` and `labels`
    evaluate a region from global voxel coordinates only, so overlapping tiles cut from it
    agree exactly and memory is bounded by the region. The image is a smooth separable
    background (products of 1D sinusoids), Gaussian blobs and hash noise; the labels are balls
    of ``blob_radius`` around the blob centres (the nearest centre wins, ties to the lower ID),
    so every blob keeps at least its centre voxel and ``n_objects`` is exact.

    Parameters
    ----------
    shape : sequence of 3 ints
        (z, y, x) size of the sample in voxels.
    n_blobs : int, optional
        Number of blobs (default: one per 4000 voxels).
    blob_radius : float
        Blob radius in voxels.
    seed : int
        Random seed (the sample is a pure function of the arguments).
    dtype : dtype-like
        Image dtype (integer types use part of their range, as in `make_volume`).
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        n_blobs: int | None = None,
        blob_radius: float = 5.0,
        seed: int = 0,
        dtype: Any = np.uint16,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.blob_radius = float(blob_radius)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        n = n_blobs if n_blobs is not None else max(1, int(np.prod(self.shape) / 4000))
        centres = (rng.random((n, 3)) * np.array(self.shape)).astype(np.int64)
        self.centres = np.unique(centres, axis=0)  # distinct centres: every blob keeps one voxel
        rng.shuffle(self.centres)  # IDs in random spatial order
        self._tables = []
        for _ in range(3):
            k = rng.uniform(0.02, 0.12, 3)
            ph = rng.uniform(0, 2 * np.pi, 3)
            self._tables.append(
                [
                    np.sin(k[a] * np.arange(self.shape[a]) + ph[a]).astype(np.float32)
                    for a in range(3)
                ]
            )
        self._noise = rng.random((32, 64, 64), dtype=np.float32)  # periodic: cheap to index
        sigma = self.blob_radius / 2
        self._reach = int(np.ceil(2.5 * sigma))
        d2 = np.arange(3 * self._reach**2 + 1, dtype=np.float64)
        self._falloff = np.clip(1.5 * np.exp(-d2 / (2 * sigma**2)), 0, 1).astype(np.float32)

    @property
    def n_objects(self) -> int:
        """Number of blobs (= labels present in the whole sample)."""
        return len(self.centres)

    def _box(self, region: Sequence[slice]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        lo = np.array([s.start or 0 for s in region], dtype=np.int64)
        hi = np.array(
            [s.stop if s.stop is not None else n for s, n in zip(region, self.shape, strict=True)]
        )
        return lo, hi.astype(np.int64)

    def _blobs_near(self, lo: NDArray[np.int64], hi: NDArray[np.int64], reach: int) -> Any:
        near = np.all((self.centres >= lo - reach) & (self.centres < hi + reach), axis=1)
        return np.nonzero(near)[0]

    def _each_blob(self, lo: NDArray[np.int64], hi: NDArray[np.int64], reach: int) -> Any:
        for idx in self._blobs_near(lo, hi, reach):
            c = self.centres[idx]
            a = np.maximum(c - reach, lo)
            b = np.minimum(c + reach + 1, hi)
            if np.any(a >= b):
                continue
            dz, dy, dx = (np.arange(a[k], b[k]) - c[k] for k in range(3))
            d2 = dz[:, None, None] ** 2 + dy[None, :, None] ** 2 + dx[None, None, :] ** 2
            sl = tuple(slice(a[k] - lo[k], b[k] - lo[k]) for k in range(3))
            yield idx, sl, d2

    #: voxels generated at a time (z-slabs): temporaries stay a few MB whatever the region
    SLAB_VOXELS = 1 << 20

    def _slabs(self, lo: NDArray[np.int64], hi: NDArray[np.int64]) -> Any:
        """Split a box into z-slabs of at most `SLAB_VOXELS` voxels (at least one plane)."""
        plane = int(np.prod(hi[1:] - lo[1:]))
        step = max(1, self.SLAB_VOXELS // max(plane, 1))
        for z0 in range(int(lo[0]), int(hi[0]), step):
            z1 = min(z0 + step, int(hi[0]))
            a, b = lo.copy(), hi.copy()
            a[0], b[0] = z0, z1
            yield slice(z0 - lo[0], z1 - lo[0]), a, b

    def image(self, region: Sequence[slice]) -> NDArray[Any]:
        """The image over ``region`` (three slices with steps of 1).

        Generated in z-slabs, so the memory used is the result plus a few MB.
        """
        lo, hi = self._box(region)
        out = np.empty(tuple(hi - lo), dtype=self.dtype)
        for sl, a, b in self._slabs(lo, hi):
            out[sl] = self._image(a, b)
        return out

    def _image(self, lo: NDArray[np.int64], hi: NDArray[np.int64]) -> NDArray[Any]:
        z, y, x = (np.arange(lo[k], hi[k]) for k in range(3))
        bg = np.zeros(tuple(hi - lo), dtype=np.float32)
        for tz, ty, tx in self._tables:
            bg += (tz[z][:, None, None] * ty[y][None, :, None]) * tx[x][None, None, :]
        bg = (bg + np.float32(3)) / np.float32(6)
        blobs = np.zeros_like(bg)
        for _, sl, d2 in self._each_blob(lo, hi, self._reach):
            np.maximum(blobs[sl], self._falloff[d2], out=blobs[sl])
        noise = self._noise[np.ix_(z % 32, y % 64, x % 64)]
        img = np.float32(0.25) * bg + np.float32(0.7) * blobs + np.float32(0.05) * noise
        if np.issubdtype(self.dtype, np.integer):
            top = np.float32(min(np.iinfo(self.dtype).max, 60000))
            img = np.rint(img * (top * np.float32(0.9)) + top * np.float32(0.02))
        return img.astype(self.dtype)

    def labels(self, region: Sequence[slice]) -> NDArray[np.uint32]:
        """The blob labels over ``region`` (uint32; 0 is background), generated in z-slabs."""
        lo, hi = self._box(region)
        out = np.empty(tuple(hi - lo), dtype=np.uint32)
        for sl, a, b in self._slabs(lo, hi):
            out[sl] = self._labels(a, b)
        return out

    def _labels(self, lo: NDArray[np.int64], hi: NDArray[np.int64]) -> NDArray[np.uint32]:
        r = int(np.floor(self.blob_radius))
        r2 = int(np.floor(self.blob_radius**2))
        out = np.zeros(tuple(hi - lo), dtype=np.uint32)
        best = np.full(out.shape, np.iinfo(np.int64).max, dtype=np.int64)
        for idx, sl, d2 in sorted(self._each_blob(lo, hi, r), key=lambda t: t[0]):
            take = (d2 <= r2) & (d2 < best[sl])
            best[sl][take] = d2[take]
            out[sl][take] = idx + 1
        return out


class SampleTile(Source):
    """A tile of a `SyntheticSample`, generated region by region on read (never held).

    Overlapping tiles cut from one sample agree exactly, so lazy mosaics of any
    size (tens of GB) can be fused and checked without writing tiles to disk.
    Picklable (the sample travels with it), so it runs on dask workers too.

    Parameters
    ----------
    sample : SyntheticSample
        The sample to cut from.
    start : sequence of 3 ints
        (z, y, x) voxel of the sample at the tile's first voxel.
    shape : sequence of 3 ints
        Tile shape (z, y, x); must lie inside the sample.
    kind : {"image", "labels"}
        Which of the sample's volumes the tile shows.
    label_offset : int
        Added to every nonzero label (``kind="labels"``), e.g. to make huge IDs.
    """

    def __init__(
        self,
        sample: SyntheticSample,
        start: Sequence[int],
        shape: Sequence[int],
        *,
        kind: str = "image",
        label_offset: int = 0,
    ) -> None:
        self.sample = sample
        self.start = tuple(int(v) for v in start)
        size = tuple(int(v) for v in shape)
        if any(a < 0 or a + n > m for a, n, m in zip(self.start, size, sample.shape, strict=True)):
            msg = f"tile at {self.start} of shape {size} leaves the sample {sample.shape}"
            raise ParameterError(msg)
        if kind not in ("image", "labels"):
            msg = f"kind must be 'image' or 'labels', not {kind!r}"
            raise ParameterError(msg)
        self.kind, self.label_offset = kind, int(label_offset)
        self._shape = (1, *size)  # type: ignore[assignment]
        if kind == "image":
            self._dtype = sample.dtype
        else:
            self._dtype = np.dtype(
                np.uint64 if label_offset + sample.n_objects >= 2**32 else np.uint32
            )

    def _read(self, region: Any) -> NDArray[Any]:
        glob = tuple(
            slice(a + s.start, a + s.stop) for a, s in zip(self.start, region, strict=True)
        )
        if self.kind == "image":
            return self.sample.image(glob)[None]
        lab = self.sample.labels(glob).astype(self._dtype)
        if self.label_offset:
            lab[lab > 0] += self._dtype.type(self.label_offset)
        return lab[None]
