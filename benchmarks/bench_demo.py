"""Peak memory of ``tilefuse demo`` as the mosaic grows: it must not follow the data size.

    python benchmarks/bench_demo.py [--workdir /tmp/tilefuse-bench/demo] [--sizes 200MB 1GB]
                                    [--rows 6 --cols 6]

For each size, runs ``tilefuse demo <workdir>/<size> --rows R --cols C --size SIZE
--no-progress`` in a subprocess, measured with ``_measure.run_measured`` (wall time and
peak RSS of the process tree, sampled every 20 ms). The demo writes the TIFF tiles and
label tiles (generated block by block from a procedural sample), stitches them into
OME-Zarr (3 levels), deduplicates and fuses the labels, and checks the fused image
against the ground truth block by block; a run that does not match exits 1 and the
benchmark fails. Prints a Markdown table and writes <workdir>/demo.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from _measure import run_measured

log = logging.getLogger("bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/tilefuse-bench/demo")
    ap.add_argument("--sizes", nargs="+", default=["200MB", "1GB"])
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--cols", type=int, default=6)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        out = work / size
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "tilefuse.cli", "demo", out, "--no-progress"]
        cmd += ["--rows", args.rows, "--cols", args.cols, "--size", size]
        res = run_measured(cmd)
        tiles = sum(f.stat().st_size for f in out.glob("tile_*.tif"))
        rows.append({"size": size, "tiles_mb": round(tiles / 1e6), **res})
        log.info("%s", rows[-1])
        shutil.rmtree(out, ignore_errors=True)
    (work / "demo.json").write_text(json.dumps(rows, indent=2))
    print("| --size | image tiles written | wall | peak RSS |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['tiles_mb']} MB | {r['wall_s']:.0f} s | {r['peak_rss_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
