"""Intensity corrections: shading profiles and per-tile gains, estimated, saved and applied on read.

A corrected voxel is ``gain * (raw - darkfield) / flatfield + offset`` (per tile
and channel; the profiles per channel over the tile's (y, x) field of view).
`CorrectedSource` applies it lazily to any region read; integer data keeps its
dtype (rounded and clipped, the clipped voxels counted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.errors import CorrectionError
from tilefuse.source import WrappedSource

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

    from tilefuse.source import Region
    from tilefuse.tile import Tile

__all__ = [
    "CorrectedSource",
    "Corrections",
    "clipped_voxels",
    "correct_tiles",
    "estimate_corrections",
    "load_profile",
]

logger = logging.getLogger(__name__)

#: key of the per-tile metadata entry (and of the output store attribute)
METADATA_KEY = "intensity_correction"


@dataclass
class Corrections:
    """Intensity corrections of a tileset.

    Attributes
    ----------
    flatfield, darkfield : ndarray (c, y, x) float32, or None
        Shading profiles per channel (flat-field mean 1; dark-field in counts).
    gains, offsets : ndarray (n_tiles, c), or None
        Per-tile ``a`` and ``c`` of ``a * x + c`` (applied after the profiles).
    tile_names : tuple of str
        The tiles the gains belong to (checked when applied).
    channels : tuple of str
        Channel names.
    tile_boxes : ndarray (n_tiles, 2, 3), or None
        World boxes of the tiles (for the QC picture).
    info : dict
        How the corrections were made (sources, reference tile, links, ...).
    """

    flatfield: NDArray[np.float32] | None = None
    darkfield: NDArray[np.float32] | None = None
    gains: NDArray[np.float64] | None = None
    offsets: NDArray[np.float64] | None = None
    tile_names: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    tile_boxes: NDArray[np.float64] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """A short hash of the arrays (changes whenever the corrected pixels would)."""
        h = hashlib.sha1()
        for a in (self.flatfield, self.darkfield, self.gains, self.offsets):
            h.update(b"-" if a is None else np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a ``.npz`` (no pickles) readable by `load`."""
        p = Path(path)
        arrays: dict[str, Any] = {
            "tile_names": np.array(self.tile_names, dtype=str),
            "channels": np.array(self.channels, dtype=str),
            "info": np.array(json.dumps(self.info)),
        }
        for k in ("flatfield", "darkfield", "gains", "offsets", "tile_boxes"):
            v = getattr(self, k)
            if v is not None:
                arrays[k] = v
        tmp = p.with_name(p.name + ".part.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Corrections:
        """Read corrections written by `save`.

        Raises
        ------
        CorrectionError
            If the file is not a tilefuse corrections file.
        """
        p = Path(path)
        if not p.is_file():
            msg = f"corrections file not found: {p}"
            raise CorrectionError(msg)
        try:
            z = np.load(p, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                msg = f"{p}: not a corrections .npz (a single array)"
                raise CorrectionError(msg)
            with z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            msg = f"{p}: not a corrections .npz ({e})"
            raise CorrectionError(msg) from e
        if "tile_names" not in d or "info" not in d:
            msg = f"{p}: not a tilefuse corrections file (no tile_names/info arrays)"
            raise CorrectionError(msg)
        return cls(
            flatfield=d.get("flatfield"),
            darkfield=d.get("darkfield"),
            gains=d.get("gains"),
            offsets=d.get("offsets"),
            tile_names=tuple(str(s) for s in d["tile_names"]),
            channels=tuple(str(s) for s in d["channels"]),
            tile_boxes=d.get("tile_boxes"),
            info=json.loads(str(d["info"])),
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-able description (recorded in fused outputs' metadata)."""
        out: dict[str, Any] = {"digest": self.digest(), "channels": list(self.channels)}
        for k in ("flatfield", "darkfield"):
            v = getattr(self, k)
            if v is not None:
                out[k] = {
                    "source": self.info.get(f"{k}_source", "estimated"),
                    "min": [float(x) for x in v.reshape(len(v), -1).min(axis=1)],
                    "max": [float(x) for x in v.reshape(len(v), -1).max(axis=1)],
                }
        if self.gains is not None:
            offs = self.offsets if self.offsets is not None else np.zeros_like(self.gains)
            out["tiles"] = [
                {"name": n, "gain": [float(x) for x in g], "offset": [float(x) for x in o]}
                for n, g, o in zip(self.tile_names, self.gains, offs, strict=True)
            ]
        out.update({k: v for k, v in self.info.items() if k in ("reference", "links")})
        return out

    def to_png(self, path: str | os.PathLike[str]) -> Path:
        """QC picture: the profiles (image and centre-line profiles) and gains on the layout."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        nc = max(len(self.channels), 1)
        fig, axes = plt.subplots(nc, 3, figsize=(13, 4 * nc), squeeze=False)
        for c in range(nc):
            ax_img, ax_prof, ax_gain = axes[c]
            if self.flatfield is not None:
                f = self.flatfield[c]
                im = ax_img.imshow(f, cmap="viridis")
                fig.colorbar(im, ax=ax_img, shrink=0.8)
                ax_prof.plot(f[f.shape[0] // 2], label="flat-field, centre row (x)")
                ax_prof.plot(f[:, f.shape[1] // 2], label="flat-field, centre column (y)")
                ax_prof.legend(fontsize=8, loc="lower left")
                if self.darkfield is not None:
                    d = self.darkfield[c]
                    ax_dark = ax_prof.twinx()
                    ax_dark.plot(d[d.shape[0] // 2], "k:", label="dark-field, centre row (counts)")
                    ax_dark.legend(fontsize=8, loc="upper right")
            ax_img.set_title(f"flat-field {self.channels[c] if self.channels else c}")
            ax_prof.set_title("profiles (voxels)")
            if self.gains is not None and self.tile_boxes is not None:
                g = self.gains[:, c]
                cmap = plt.get_cmap("coolwarm")
                lo, hi = float(g.min()), float(g.max())
                for k, (b, gk) in enumerate(zip(self.tile_boxes, g, strict=True)):
                    t = 0.5 if hi == lo else (gk - lo) / (hi - lo)
                    y0, x0, y1, x1 = b[0][1], b[0][2], b[1][1], b[1][2]
                    ax_gain.add_patch(
                        Rectangle((x0, y0), x1 - x0, y1 - y0, fc=cmap(t), ec="k", alpha=0.6)
                    )
                    ax_gain.text((x0 + x1) / 2, (y0 + y1) / 2, f"{k}\n{gk:.3f}", ha="center")
                ax_gain.set_xlim(self.tile_boxes[:, 0, 2].min(), self.tile_boxes[:, 1, 2].max())
                ax_gain.set_ylim(self.tile_boxes[:, 1, 1].max(), self.tile_boxes[:, 0, 1].min())
                ax_gain.set_aspect("equal")
                ax_gain.set_title("gain per tile (y, x in um)")
            else:
                ax_gain.axis("off")
        fig.tight_layout()
        p = Path(path)
        fig.savefig(p, dpi=80)
        plt.close(fig)
        return p


def load_profile(
    value: ArrayLike | str | os.PathLike[str],
    shape: tuple[int, int, int],
    kind: str,
) -> tuple[NDArray[np.float32], str]:
    """A user-supplied flat-/dark-field (array, ``.npy`` or TIFF), checked and broadcast.

    Parameters
    ----------
    value : array_like, number or path
        ``(y, x)`` (all channels) or ``(c, y, x)``; a single number is a
        constant profile (a camera's dark offset, say).
    shape : (c, y, x)
        What the tiles need.
    kind : {"flatfield", "darkfield"}
        Flat-fields must be finite and > 0 and are normalised to mean 1.

    Returns
    -------
    (ndarray (c, y, x) float32, str)
        The profile and where it came from.

    Raises
    ------
    CorrectionError
        Wrong shape, non-finite values, zeros or negatives in a flat-field;
        the message names the file.
    """
    name = "array"
    if isinstance(value, (str, os.PathLike)):
        p = Path(value)
        name = str(p)
        if not p.is_file():
            msg = f"{kind} file not found: {p}"
            raise CorrectionError(msg)
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(p)
        else:
            msg = f"{kind} {p}: expected a .npy or .tif/.tiff file"
            raise CorrectionError(msg)
    else:
        arr = np.asarray(value)
    arr = np.asarray(arr, dtype=np.float32).squeeze() if arr.ndim > 3 else arr.astype(np.float32)
    c, ny, nx = shape
    if arr.ndim == 0:  # one number: a constant level (e.g. the camera's dark offset)
        arr = np.full((c, ny, nx), float(arr), dtype=np.float32)
    if arr.ndim == 2 and arr.shape == (ny, nx):
        arr = np.broadcast_to(arr, (c, ny, nx))
    if arr.shape != (c, ny, nx):
        msg = (
            f"{kind} {name} has shape {arr.shape}; the tiles need (y, x) = {(ny, nx)} "
            f"or (c, y, x) = {(c, ny, nx)}"
        )
        raise CorrectionError(msg)
    if not np.all(np.isfinite(arr)):
        msg = f"{kind} {name} has non-finite values (NaN or inf)"
        raise CorrectionError(msg)
    arr = np.array(arr, dtype=np.float32)
    if kind == "flatfield":
        bad = int(np.count_nonzero(arr <= 0))
        if bad:
            msg = (
                f"flatfield {name} has {bad} voxel(s) <= 0 (of {arr.size}); a flat-field divides "
                "the data and must be positive everywhere"
            )
            raise CorrectionError(msg)
        mean = arr.reshape(c, -1).mean(axis=1)
        if np.any(np.abs(mean - 1) > 0.01):
            logger.info("flatfield %s normalised to mean 1 (means were %s)", name, mean)
        arr /= mean[:, None, None].astype(np.float32)
    return arr, name


class CorrectedSource(WrappedSource):
    """A source corrected on read: ``gain * (raw - dark) / flat + offset`` per channel.

    Parameters
    ----------
    source : PixelSource
        The raw pixels ``(c, z, y, x)``.
    flatfield, darkfield : ndarray (c, y, x), optional
        Profiles over the source's full (y, x) field of view.
    gain, offset : array_like (c,), optional
        Per-channel linear map applied after the profiles.
    dtype : dtype-like, optional
        Output dtype (default: the source's; integers are rounded and clipped
        to their range, the clipped voxels counted in ``clipped``).
    """

    def __init__(
        self,
        source: Any,
        flatfield: NDArray[Any] | None = None,
        darkfield: NDArray[Any] | None = None,
        gain: ArrayLike | None = None,
        offset: ArrayLike | None = None,
        dtype: Any = None,
    ) -> None:
        c, _, ny, nx = source.shape
        for name, prof in (("flatfield", flatfield), ("darkfield", darkfield)):
            if prof is not None and prof.shape != (c, ny, nx):
                msg = f"{name} of shape {prof.shape} does not fit tiles of (c, y, x) {(c, ny, nx)}"
                raise CorrectionError(msg)
        self.source = source
        self.flatfield, self.darkfield = flatfield, darkfield
        self.gain = None if gain is None else np.broadcast_to(np.asarray(gain, float), (c,)).copy()
        self.offset = (
            None if offset is None else np.broadcast_to(np.asarray(offset, float), (c,)).copy()
        )
        self._shape = tuple(int(n) for n in source.shape)  # type: ignore[assignment]
        self._dtype = np.dtype(source.dtype if dtype is None else dtype)
        self.clipped = 0

    def _read(self, region: Region) -> NDArray[Any]:
        """Read a region of corrected pixels."""
        data = np.asarray(self.source.read(region), dtype=np.float32)
        ys, xs = region[1], region[2]
        if self.darkfield is not None:
            data -= self.darkfield[:, None, ys, xs]
        if self.flatfield is not None:
            data /= self.flatfield[:, None, ys, xs]
        if self.gain is not None:
            data *= self.gain.astype(np.float32)[:, None, None, None]
        if self.offset is not None:
            data += self.offset.astype(np.float32)[:, None, None, None]
        if np.issubdtype(self._dtype, np.integer):
            info = np.iinfo(self._dtype)
            np.rint(data, out=data)
            n = int(np.count_nonzero((data < info.min) | (data > info.max)))
            if n:
                with self._src_lock:
                    self.clipped += n
                np.clip(data, info.min, info.max, out=data)
        return data.astype(self._dtype, copy=False)

    def __repr__(self) -> str:
        return f"CorrectedSource({self.source!r})"


def clipped_voxels(tiles: Sequence[Tile]) -> int:
    """Voxels clipped so far by the corrections of these tiles (counted per read).

    A voxel read twice (e.g. in two output blocks' halos) counts twice; reads
    on dask workers are not counted here.
    """
    total = 0
    for t in tiles:
        src: Any = t.source
        while src is not None:
            if isinstance(src, CorrectedSource):
                total += src.clipped
            src = getattr(src, "source", None)
    return total


def correct_tiles(tiles: Sequence[Tile], corrections: Corrections) -> list[Tile]:
    """Tiles whose sources apply ``corrections`` on read.

    Raises
    ------
    CorrectionError
        If the corrections do not fit the tiles (count, names, channels, shape).
    """
    c = tiles[0].n_channels
    g = corrections.gains
    if g is not None:
        names = tuple(t.name for t in tiles)
        if g.shape != (len(tiles), c):
            msg = f"gains of shape {g.shape} do not fit {len(tiles)} tiles of {c} channel(s)"
            raise CorrectionError(msg)
        if corrections.tile_names and corrections.tile_names != names:
            diff = next(
                (a, b) for a, b in zip(corrections.tile_names, names, strict=True) if a != b
            )
            msg = (
                f"the gains were estimated for other tiles (first difference: {diff[0]!r} in the "
                f"corrections, {diff[1]!r} here)"
            )
            raise CorrectionError(msg)
    digest = corrections.digest()
    out = []
    for k, t in enumerate(tiles):
        src = CorrectedSource(
            t.source,
            corrections.flatfield,
            corrections.darkfield,
            None if g is None else g[k],
            None if corrections.offsets is None else corrections.offsets[k],
        )
        meta = dict(t.metadata)
        meta[METADATA_KEY] = {
            "digest": digest,
            "gain": None if g is None else [float(v) for v in g[k]],
            "offset": (
                None if corrections.offsets is None else [float(v) for v in corrections.offsets[k]]
            ),
        }
        out.append(replace(t, source=src, metadata=meta))
    return out


def estimate_corrections(
    tiles: Sequence[Tile],
    overlaps: Sequence[Any],
    *,
    channels: Sequence[int] | None = None,
    flatfield: bool | ArrayLike | str | os.PathLike[str] = True,
    darkfield: bool | ArrayLike | str | os.PathLike[str] = False,
    gains: bool = True,
    offsets: bool = False,
    reference: int | None = None,
    max_planes: int = 200,
    min_ncc: float = 0.3,
    refine: bool = True,
    ramp: str = "auto",
    seed: int = 0,
) -> Corrections:
    """Estimate shading profiles and per-tile gains (see `tilefuse.shading`, `tilefuse.equalise`).

    Parameters
    ----------
    tiles : sequence of Tile
        The tiles (one (y, x) field of view when shading is estimated).
    overlaps : sequence of Overlap
        From `Tileset.overlaps` (for the gains).
    channels : sequence of int, optional
        Channels to correct (others are left as they are); default all.
    flatfield : bool, array_like or path
        Estimate (True), skip (False) or use this profile.
    darkfield : bool, number, array_like or path
        Estimate (True; needs planes of varied brightness), skip (False) or use this
        profile; a number is a constant level (the camera's dark offset: subtract it, an
        offset left in the data is divided by the flat-field and biases it).
    gains : bool
        Equalise tiles from their overlaps.
    offsets : bool
        Also solve an additive offset per tile.
    reference : int, optional
        Tile kept at gain 1 (default: the best-linked tile).
    max_planes : int
        Planes sampled for the shading (the read bound).
    min_ncc : float
        Overlaps whose voxels correlate less are not used for gains.
    refine : bool
        Refine an estimated flat-field with the overlaps, jointly with the
        gains (`tilefuse.shading.refine_flatfield`).
    ramp : {"auto", "centred", "content", "gains"}
        How to decide the one thing overlaps cannot tell apart: a log-linear
        ramp across the flat-field (`tilefuse.shading.log_ramp`) versus a
        matching trend of the gains across the mosaic. ``"centred"``: no ramp
        (shading symmetric about the field's centre, as vignetting of a centred
        optical axis is); ``"content"``: the ramp of the sample estimate;
        ``"auto"`` (default): the sample's ramp where it stands out of its own
        split-half noise (3 sigma; e.g. an illumination gradient), shrunk
        towards no ramp otherwise; ``"gains"``: gains with no linear trend
        across the mosaic (`_detrend`). Only used when the flat-field is
        estimated and refined with overlaps.
    seed : int
        Sampling seed.

    Returns
    -------
    Corrections
    """
    from tilefuse.equalise import overlap_samples
    from tilefuse.shading import estimate_shading, refine_flatfield, refine_shading

    if ramp not in RAMPS:
        msg = f"ramp must be one of {RAMPS}, not {ramp!r}"
        raise CorrectionError(msg)
    nc = tiles[0].n_channels
    _, ny, nx = tiles[0].shape
    chans = list(range(nc)) if channels is None else [int(c) for c in channels]
    if any(not 0 <= c < nc for c in chans):
        msg = f"channels must be in [0, {nc}); got {chans}"
        raise CorrectionError(msg)
    info: dict[str, Any] = {"channels_corrected": chans}
    flat = dark = None
    want_f = flatfield is not False and flatfield is not None
    want_d = darkfield is not False and darkfield is not None
    if want_f and flatfield is not True:
        flat, info["flatfield_source"] = load_profile(flatfield, (nc, ny, nx), "flatfield")  # type: ignore[arg-type]
    if want_d and darkfield is not True:
        dark, info["darkfield_source"] = load_profile(darkfield, (nc, ny, nx), "darkfield")  # type: ignore[arg-type]
    noise: dict[int, float] = {}
    if flatfield is True or darkfield is True:
        est_f = np.ones((nc, ny, nx), np.float32)
        est_d = np.zeros((nc, ny, nx), np.float32)
        # a given dark-field comes off before the flat-field is estimated from the sample
        sampled = tiles if dark is None else _dark_subtracted(tiles, dark)
        for c in chans:
            m = estimate_shading(
                sampled, c, darkfield=darkfield is True, max_planes=max_planes, seed=seed
            )
            est_f[c] = m.flatfield
            noise[c] = m.ramp_noise
            if m.darkfield is not None:
                est_d[c] = m.darkfield
        if flatfield is True:
            flat = est_f
        if darkfield is True:
            dark = est_d
    g = o = None
    if gains:
        g = np.ones((len(tiles), nc))
        o = np.zeros((len(tiles), nc)) if offsets else None
        links: dict[str, Any] = {}
        ramps: dict[str, Any] = {}
        refined: dict[str, float] = {}
        dark_only = _dark_subtracted(tiles, dark)
        raw = _dark_subtracted(tiles, None)
        for c in chans:
            sol = _solve_channel(tiles, overlaps, flat, dark, c, offsets, min_ncc, reference)
            ref = sol.reference
            if flatfield is True and flat is not None and refine and sol.kept:
                fit_dark = darkfield is True and dark is not None
                samples = overlap_samples(raw if fit_dark else dark_only, overlaps, sol.kept, c)
                if samples:
                    content = flat[c].copy()
                    flat[c] = refine_flatfield(
                        samples, sol.gains, sol.offsets, content, reference=ref,
                        fit_offsets=True,  # even for gains only: data offsets must not bend F
                    )  # fmt: skip
                    if fit_dark and not np.array_equal(flat[c], content):
                        # then the dark-field, from that flat-field and no dark-field: the
                        # sample's dark-field is content-biased and a poor place to start
                        # (with gains only, D is whole: the camera's offset included)
                        start = _solve_channel(
                            tiles, overlaps, flat, None, c, offsets, min_ncc, ref
                        )
                        flat[c], fitted = refine_shading(
                            samples, start.gains, start.offsets, flat[c], reference=ref,
                            darkfield=np.zeros_like(flat[c]), fit_offsets=offsets,
                        )  # fmt: skip
                        dark[c] = fitted  # type: ignore[index]
                    refined[str(c)] = _check_refinement(flat[c], content, c, fit_dark)
                    if ramp == "gains":  # the gains' trend over the refined flat-field
                        sol = _solve_channel(tiles, overlaps, flat, dark, c, offsets, min_ncc, ref)
                    flat[c], ramps[str(c)] = _resolve_ramp(
                        flat[c], ramp, content, noise.get(c, 0.0), sol, tiles
                    )
                    sol = _solve_channel(tiles, overlaps, flat, dark, c, offsets, min_ncc, ref)
            g[:, c] = sol.gains
            if o is not None:
                o[:, c] = sol.offsets
            reference = ref if reference is None else reference
            if sol.unlinked:
                logger.warning(
                    "channel %d: %d tile(s) have no usable intensity link to the reference tile "
                    "%d and keep gain 1 (blank or featureless overlaps): %s",
                    c,
                    len(sol.unlinked),
                    ref,
                    [tiles[k].name for k in sol.unlinked],
                )
            links[str(c)] = {
                "kept": len(sol.kept),
                "dropped": [list(x) for x in sol.dropped],
                "unusable": len(sol.unusable),
                "unlinked_tiles": sol.unlinked,
            }
        info["reference"] = reference
        info["links"] = links
        if ramps:
            info["ramp"] = ramps
            info["overlaps_vs_sample_rms"] = refined
    boxes = np.array([np.stack(t.box) for t in tiles])
    return Corrections(
        flat,
        dark,
        g,
        o,
        tuple(t.name for t in tiles),
        tuple(tiles[0].channels),
        boxes,
        info,
    )


def _dark_subtracted(tiles: Sequence[Tile], dark: NDArray[Any] | None) -> list[Tile]:
    """The tiles read as float32, less ``dark`` (c, y, x) when given."""
    return [
        replace(t, source=CorrectedSource(t.source, darkfield=dark, dtype=np.float32))
        for t in tiles
    ]


def _solve_channel(
    tiles: Sequence[Tile],
    overlaps: Sequence[Any],
    flat: NDArray[Any] | None,
    dark: NDArray[Any] | None,
    c: int,
    offsets: bool,
    min_ncc: float,
    ref: int | None,
) -> Any:
    """Gains of one channel for tiles corrected by the given profiles."""
    from tilefuse.equalise import pair_statistics, solve_gains

    shaded = correct_tiles(tiles, Corrections(flat, dark))
    shaded = [replace(t, source=CorrectedSource(t.source, dtype=np.float32)) for t in shaded]
    stats = pair_statistics(shaded, overlaps, c, offsets=offsets, min_ncc=min_ncc)
    return solve_gains(len(tiles), stats, offsets=offsets, reference=ref)


#: the overlap-refined and the sample flat-fields differing by more RMS than this: a model failure
#: (measured on healthy synthetic mosaics and MIST: 0.1-4 %; a content-made dark-field: 36 %)
MAX_DISAGREEMENT = 0.10


def _check_refinement(
    refined: NDArray[Any], sample: NDArray[Any], channel: int, darkfield: bool
) -> float:
    """How far the overlaps moved the sample's flat-field; refuse or warn where that says so.

    With a dark-field fitted to the overlaps, the sample's flat-field (estimated with a
    dark-field the content can bias) is no yardstick; only a failed fit is refused
    (`CorrectionError`: the sample's profiles would be kept, and they can be tens of percent
    off). Without one, a warning when the overlaps move the flat-field by more than
    `MAX_DISAGREEMENT` (misplaced tiles, or content that fools the sample estimate).
    """
    failed = np.array_equal(refined, sample)
    rms = float(np.sqrt(np.mean((refined.astype(float) / sample - 1) ** 2)))
    if darkfield and failed:
        msg = (
            f"channel {channel}: the overlaps do not fit a smooth flat-field and dark-field; "
            "the sample's own estimate is not usable (its dark-field takes the content for an "
            "additive pattern unless the planes show one uniform sample at several "
            "brightnesses). Estimate without a dark-field, or give a measured dark frame "
            "(--darkfield-file) or the camera's offset (--dark-level)."
        )
        raise CorrectionError(msg)
    if rms > MAX_DISAGREEMENT and not darkfield:
        logger.warning(
            "channel %d: the overlaps move the sample's flat-field by %.0f%% RMS (usually under "
            "4%%): check the tile positions (overlaps must show the same sample) and whether a "
            "dark level is left in the data (--dark-level, or --darkfield to fit one) before "
            "trusting the correction",
            channel,
            100 * rms,
        )
    return rms


#: the ways `estimate_corrections` can decide the flat-field's log-linear ramp
RAMPS = ("auto", "centred", "content", "gains")
#: ``ramp="auto"`` keeps the sample's ramp where it is this many sigma of its own noise
RAMP_SIGMAS = 3.0


def _resolve_ramp(
    flat: NDArray[Any],
    mode: str,
    content: NDArray[Any],
    noise: float,
    sol: Any,
    tiles: Sequence[Tile],
) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """Set the log-linear ramp of an overlap-refined flat-field (see `estimate_corrections`)."""
    from tilefuse.shading import log_ramp, set_ramp

    sample = log_ramp(content)
    report: dict[str, Any] = {
        "mode": mode,
        "sample_slope": sample.tolist(),
        "sample_noise": noise,
        "overlap_fit_slope": log_ramp(flat).tolist(),
    }
    if mode == "gains":
        out = _detrend(flat, sol, tiles) if len(sol.kept) >= 3 else flat.astype(np.float32)
    else:
        if mode == "centred":
            factor = 0.0
        elif mode == "content":
            factor = 1.0
        elif noise <= 0:  # auto, but the sample's noise is unknown: no evidence of a ramp
            logger.warning(
                "the flat-field's ramp could not be weighed against the sample's noise (too "
                "few planes to split in halves): assuming shading symmetric about the field's "
                "centre; pass ramp='content' or ramp='gains' if the illumination has a gradient"
            )
            factor = 0.0
        else:  # auto: positive-part shrinkage towards no ramp by the sample's own noise
            z2 = float(sample @ sample) / noise**2
            factor = max(0.0, 1 - RAMP_SIGMAS**2 / z2) if z2 > 0 else 0.0
        report["factor"] = factor
        out = set_ramp(flat, factor * sample)
    report["slope"] = log_ramp(out).tolist()
    logger.info(
        "flat-field ramp (%s): %s per voxel (sample %s +- %.3g)",
        mode,
        np.round(report["slope"], 7),
        np.round(sample, 7),
        noise,
    )
    return out, report


def _detrend(flat: NDArray[Any], sol: Any, tiles: Sequence[Tile]) -> NDArray[np.float32]:
    """Move a linear trend of log-gains over tile positions into the flat-field.

    Multiplying the flat-field by ``exp(b . u)`` (``u`` the (y, x) voxel in the
    field of view) and every gain by ``exp(-b . P_k)`` (``P_k`` tile ``k``'s
    origin in the same voxels) changes the corrected mosaic only by a world
    ramp ``exp(-b . W)``, which the overlaps cannot see; the content statistics
    that fix it in the sample estimate are noisy, whereas tile gains (lamp,
    bleaching, focus) have no reason to follow the tile's position linearly.
    """
    linked = sorted({k for pair in sol.kept for k in pair})
    vs = np.array([t.voxel_size[1:] for t in tiles])
    pos = np.array([t.offset[1:] for t in tiles]) / vs
    la = np.log(sol.gains[linked])
    design = np.column_stack([np.ones(len(linked)), pos[linked] - pos[linked].mean(axis=0)])
    if np.linalg.matrix_rank(design) < 3:  # a single row or column: one axis only
        keep = [0] + [1 + a for a in range(2) if np.ptp(pos[linked, a]) > 0]
        design = design[:, keep]
    else:
        keep = [0, 1, 2]
    coef, *_ = np.linalg.lstsq(design, la, rcond=None)
    beta = np.zeros(2)
    for k, v in zip(keep[1:], coef[1:], strict=True):
        beta[k - 1] = v
    ny, nx = flat.shape
    ramp = np.exp(beta[0] * np.arange(ny)[:, None] + beta[1] * np.arange(nx)[None, :])
    out = flat * ramp
    logger.info("flat-field detrended by exp(%.3g y + %.3g x) per voxel", beta[0], beta[1])
    return (out / out.mean()).astype(np.float32)
