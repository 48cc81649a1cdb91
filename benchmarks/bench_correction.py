"""Intensity-correction accuracy on synthetic truth, and seams on real data.

    python benchmarks/bench_correction.py

Synthetic: `tilefuse.synthetic.make_volume` (blob density x 0.25, 1, 4 of the
default) scaled to 500..20500 counts, cut into a 4 x 4 grid (15 % overlap) by
`tilefuse.synthetic.shaded_mosaic`: radial vignetting 45 % (2D) / 35 % (3D)
darker at the corners, gains uniform in [0.7, 1.4], offsets in [0, 5 %] of the
mean, tile 5 the reference (gain 1, offset 0), uint16. For each: the
flat-field RMS error, the largest gain error and the corrected fused volume's
relative RMS error (linear blending) against the truth, (a) blind
(``estimate_corrections(offsets=True, reference=5)``) and (b) with the true
flat-field given (``flatfield=truth``), plus the uncorrected fusion and the
seam metric before/after (blind).

Shading shapes: the same 4 x 4 mosaic (x1 density) under flat-fields that are not
centred radial vignetting (an off-centre one, a cos^4 law, a vignetting times a
linear illumination gradient, a light-sheet-like Gaussian band), blind with the
default ``ramp="auto"`` and with ``ramp="centred"``: what the choice of the
flat-field's log-linear ramp (the one thing overlaps cannot see) costs when the
optics are not symmetric.

Dark level: the same mosaic (x1 density) with a 400-count camera offset or a 300-500 count
gradient added outside the shading (``raw = flat * gain * truth + dark``): the flat-field and
gain errors when the dark level is ignored, given (``darkfield=<the truth>``) and fitted to
the overlaps (``darkfield=True``), gains only and with offsets.

Real: the NIST MIST 5 x 5 grid at MIST's global positions, and the ``tilefuse
demo`` mosaic: seam metric raw / corrected (default; and ``ramp="gains"``).
Prints Markdown tables.
"""

from __future__ import annotations

import logging
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from tilefuse import Tileset
from tilefuse.synthetic import make_volume, shaded_mosaic

MIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mist-5x5"


def rel(fused: np.ndarray, truth: np.ndarray) -> float:
    f = np.asarray(fused, float).reshape(truth.shape)
    return float(np.sqrt(np.mean((f - truth) ** 2)) / np.sqrt(np.mean(truth**2)))


def synthetic_row(shape: tuple[int, int, int], density: float, corner: float) -> str:
    n = max(1, int(np.prod(shape) / 4000 * density))
    vol, _ = make_volume(shape, n_blobs=n, seed=2, dtype=np.float32)
    sm = shaded_mosaic(vol.astype(float) * 20000 + 500, (4, 4), corner=corner, reference=5, seed=3)
    ts = Tileset.from_arrays(sm.tiles, sm.offsets_px)
    blind = ts.estimate_corrections(offsets=True, reference=5)
    known = ts.estimate_corrections(flatfield=sm.flatfield, offsets=True, reference=5)
    ferr = np.sqrt(np.mean((blind.flatfield[0] / sm.flatfield - 1) ** 2))
    gb = np.abs(blind.gains[:, 0] * sm.gains - 1).max()
    gk = np.abs(known.gains[:, 0] * sm.gains - 1).max()
    truth = sm.volume
    fb = rel(ts.correct(blind).fuse(), truth)
    fk = rel(ts.correct(known).fuse(), truth)
    fr = rel(ts.fuse(), truth)
    s0, s1 = ts.seam_metric().score, ts.correct(blind).seam_metric().score
    dim = "2D" if shape[0] == 1 else "3D"
    return (
        f"| {dim} {shape} | x{density:g} | {ferr * 100:.2f} % | {gb * 100:.1f} % | "
        f"{gk * 100:.2f} % | {fb * 100:.2f} % | {fk * 100:.2f} % | {fr * 100:.1f} % | "
        f"{s0:.3f} -> {s1:.3f} |"
    )


def shading_shapes(ny: int, nx: int) -> dict[str, np.ndarray]:
    """Flat-fields (mean 1) that are not centred radial vignetting."""
    y = (np.arange(ny) + 0.5) / ny * 2 - 1
    x = (np.arange(nx) + 0.5) / nx * 2 - 1
    yy, xx = np.meshgrid(y, x, indexing="ij")
    r2 = (yy**2 + xx**2) / 2
    r2o = ((yy - 0.2) ** 2 + (xx + 0.3) ** 2) / 2
    out = {
        "radial vignetting, centred": 1 - 0.4 * (0.6 * r2 + 0.4 * r2**2),
        "radial vignetting, off-centre (0.1, -0.15) FOV": 1 - 0.4 * (0.6 * r2o + 0.4 * r2o**2),
        "cos^4 law (not a polynomial)": 1 / (1 + 0.6 * r2) ** 2,
        "vignetting x linear gradient (+-25 %)": (1 + 0.25 * xx) * (1 - 0.3 * r2),
        "light-sheet-like Gaussian band": np.exp(-((0.9 * yy) ** 2) / 0.8) * (1 - 0.2 * r2),
    }
    return {k: v / v.mean() for k, v in out.items()}


def shape_rows(shape: tuple[int, int, int]) -> list[str]:
    from tilefuse.synthetic import cut_tiles

    rng = np.random.default_rng(3)
    vol, _ = make_volume(shape, seed=2, dtype=np.float32)
    vol = vol.astype(float) * 20000 + 500
    m = cut_tiles(vol, (4, 4), overlap=0.15)
    g, o = rng.uniform(0.7, 1.4, 16), rng.uniform(0, 0.05, 16) * vol.mean()
    g[5], o[5] = 1.0, 0.0
    rows = []
    for name, flat in shading_shapes(*m.tiles[0].shape[-2:]).items():
        tiles = [
            np.clip(np.rint(flat * (gk * t + ok)), 0, 65535).astype(np.uint16)
            for t, gk, ok in zip(m.tiles, g, o, strict=True)
        ]
        ts = Tileset.from_arrays(tiles, m.offsets_px)
        cells = []
        for ramp in ("auto", "centred"):
            c = ts.estimate_corrections(offsets=True, reference=5, ramp=ramp)
            ferr = np.sqrt(np.mean((c.flatfield[0] / flat - 1) ** 2))
            gerr = np.abs(c.gains[:, 0] * g - 1).max()
            cells.append(
                f"{ferr * 100:.2f} % / {gerr * 100:.1f} % / {rel(ts.correct(c).fuse(), vol) * 100:.2f} %"
            )
        dim = "2D" if shape[0] == 1 else "3D"
        rows.append(f"| {dim} | {name} | {cells[0]} | {cells[1]} |")
    return rows


def dark_rows(shape: tuple[int, int, int]) -> list[str]:
    from tilefuse.synthetic import cut_tiles, vignetting

    vol, _ = make_volume(shape, seed=2, dtype=np.float32)
    vol = vol.astype(float) * 20000 + 500
    m = cut_tiles(vol, (4, 4), overlap=0.15)
    flat = vignetting(m.tiles[0].shape[-2:], 0.4)
    ny, nx = flat.shape
    xx = np.arange(nx)[None, :] + np.zeros((ny, 1))
    g = np.random.default_rng(3).uniform(0.7, 1.4, 16)
    g[5] = 1.0
    rows = []
    for name, dark in (
        ("offset 400", np.full((ny, nx), 400.0)),
        ("gradient 300-500", 300 + 200 * xx / nx),
    ):
        tiles = [
            np.rint(flat * gk * t + dark).astype(np.uint16)
            for t, gk in zip(m.tiles, g, strict=True)
        ]
        ts = Tileset.from_arrays(tiles, m.offsets_px)
        cells = []
        for kw in (
            {},
            {"darkfield": dark},
            {"darkfield": True},
            {"darkfield": True, "offsets": True},
        ):
            c = ts.estimate_corrections(reference=5, **kw)
            ferr = np.sqrt(np.mean((c.flatfield[0] / flat - 1) ** 2))
            cells.append(f"{ferr * 100:.2f} % / {np.abs(c.gains[:, 0] * g - 1).max() * 100:.2f} %")
        dim = "2D" if shape[0] == 1 else "3D"
        rows.append(f"| {dim} | {name} | " + " | ".join(cells) + " |")
    return rows


def mist_tileset() -> Tileset:
    pos = re.compile(r"file: (\S+); corr: \S+; position: \((-?\d+), (-?\d+)\);")
    text = (MIST / "reference" / "global-positions-1.txt").read_text().splitlines()
    rows = [m for m in (pos.match(line) for line in text) if m]
    offs = [(0.0, float(m.group(3)), float(m.group(2))) for m in rows]
    return Tileset.from_tiff([MIST / m.group(1) for m in rows], offs)


def real_row(name: str, ts: Tileset) -> str:
    raw = ts.seam_metric().score
    default = ts.correct(ts.estimate_corrections()).seam_metric().score
    gains = ts.correct(ts.estimate_corrections(ramp="gains")).seam_metric().score
    return f"| {name} | {raw:.4f} | {default:.4f} | {gains:.4f} |"


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(
        "| mosaic (z, y, x) | blob density | flat-field RMS | max gain error | "
        "max gain error, true flat given | fused rel. RMS | fused, true flat given | "
        "fused uncorrected | seam metric raw -> corrected |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for shape, corner in (((1, 560, 560), 0.45), ((8, 480, 480), 0.35)):
        for density in (0.25, 1.0, 4.0):
            print(synthetic_row(shape, density, corner), flush=True)
    print()
    print(
        "| mosaic | flat-field | auto: flat RMS / max gain error / fused rel. RMS | centred: same |"
    )
    print("|---|---|---|---|")
    for shape in ((1, 560, 560), (8, 480, 480)):
        for row in shape_rows(shape):
            print(row, flush=True)
    print()
    print("| mosaic | dark level | ignored: flat RMS / max gain error | given | fitted "
          "(darkfield=True) | fitted, with offsets |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for shape in ((1, 560, 560), (8, 480, 480)):
        for row in dark_rows(shape):
            print(row, flush=True)
    print()
    print('| real mosaic | seam metric raw | corrected (default) | corrected, ramp="gains" |')
    print("|---|---|---|---|")
    if MIST.is_dir():
        print(real_row("NIST MIST 5 x 5 (2D, MIST positions)", mist_tileset()), flush=True)
    from tilefuse.demo import write_demo

    with tempfile.TemporaryDirectory() as d:
        demo = write_demo(d)
        print(real_row("tilefuse demo 3 x 3 (3D)", Tileset.from_tileconfig(demo.tileconfig)))


if __name__ == "__main__":
    main()
