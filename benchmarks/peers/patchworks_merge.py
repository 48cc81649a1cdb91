"""Peer benchmark: merging per-chunk labels with ``patchworks.merge_tile_labels``.

    python patchworks_merge.py --make-input IN.zarr [--seed 0] [--threshold 0.545] [--zarr-format 3]
    python patchworks_merge.py --input IN.zarr --out OUT.zarr [--workers N]
                               [--mode store|counts|dask] [--no-sequential] [--no-check]

Runs in its own venv (see requirements-patchworks.txt): patchworks 3.3.0 needs
zarr-python >= 3.1.3.

Input (what ``--make-input`` writes)
------------------------------------
IN.zarr is a zarr *group* (v3 by default, ``--zarr-format 2`` for v2) holding
one array ``labels``: int32, shape (64, 1024, 1024), chunks (64, 256, 256),
zstd level 1. It is a group, not a bare array, because patchworks opens a store
input as ``zarr.open_group(path)[input_component]`` (default ``"labels"``).
Every chunk holds ``scipy.ndimage.label`` (default structure: 6-connectivity,
faces only) of that chunk of the binary volume, run independently per chunk,
so the ids are *tile-local*: 1..n_i in every chunk, repeating across chunks.
That is patchworks' convention: it makes ids globally unique itself. The
per-chunk counts n_i (row-major chunk order, the order of patchworks'
``chunk_slices``) are stored in the array attribute ``label_counts``.

The binary volume is ``gaussian_filter(default_rng(seed).random(shape,
float32), sigma=2) > threshold``; seed 0 and threshold 0.545 give 10,088
6-connected objects over the whole volume (0.25 % foreground, largest object
288 voxels). The whole-volume ``ndimage.label`` result is saved as int32 in
``IN_truth.npy`` next to IN.zarr (``X.zarr`` -> ``X_truth.npy``).

patchworks.merge_tile_labels semantics (read in the installed source
``patchworks/_merge.py`` of 3.3.0 -- ``merge_tile_labels``,
``zarr_native_merge``, ``_make_globally_unique``, ``_scan_touching_pairs``,
``_build_relabel_lut``, ``_relabel_chunk_worker`` -- and the upstream docs
``docs/guide/merging.md`` / ``docs/examples/standalone_merge.md``)
--------------------------------------------------------------------------
* ``labeled`` is a dask array or a path to a zarr store (group + component).
  Ids are per chunk, local (1..n in every chunk); global ids also work, but
  they are renumbered anyway. Offsetting is done by patchworks, either
  - without ``label_counts``: a *serial* streaming pass reads every chunk,
    ``np.unique``-compacts its nonzero ids and writes them back as a fresh
    contiguous block ``base+1..base+n`` -- IN PLACE, in the input store (a
    store input is modified! hence the copy in ``--mode store``), or in the
    temporary stage store for a dask input; or
  - with ``label_counts`` (ids per chunk, each chunk dense 1..n_i): offsets
    are an exclusive cumsum and are added on the fly while scanning and
    relabelling; the input is only read.
  dtype: any integer dtype; the store is renumbered in its own dtype
  (OverflowError if the global count does not fit); a dask input narrower
  than 4 bytes is cast to int32 before staging. Labels here are int32.
* ``overlap``: only used for a dask input -- ``da.overlap.trim_overlap(labeled,
  depth=overlap, boundary="none")``, i.e. every block carries a halo of
  ``overlap`` voxels on each side along every axis (none beyond the array
  edge) which is cut off before staging. Ignored for a store input (its chunks
  must already be halo-free). 0 here.
* merge rule: by *touching*. For every interior chunk face the two voxel
  planes either side are read (threads, one chunk column per task), every
  pair of different nonzero ids facing each other is a link; links go to
  ``scipy.sparse.csgraph.connected_components``; each component maps to its
  smallest (global) id. ``connectivity=1`` (default) = faces only, 2 adds
  edge neighbours, 3 corners (as ``generate_binary_structure``); it must match
  how the tiles were labelled, so 1 here (ndimage.label default). Merge by
  overlap agreement (IoU >= ``iou_threshold``) happens only with
  ``halo_dir=`` (halo strips saved by ``patchworks.stage_tile``).
* output: group ``write_to`` (zarr.open_group(mode="a"): a new store is zarr
  v3, zarr-python's default format), array ``output_component`` ("labels"),
  chunks = input chunks (or ``output_chunks``), dtype = staged dtype (int32
  here; widened to int32/int64 only if the global count overflows it), zstd
  level 1. The relabel runs in a ``multiprocessing`` fork pool of
  ``n_workers`` processes (default ``min(4, cpus)``), one chunk per task, LUT
  memory-mapped from a temp .npy. Ids: with ``sequential_labels=False`` the
  smallest global id of each component (gappy); with True, 1..N (folded into
  the same LUT, no extra pass). Returns ``da.from_zarr(write_to, component)``,
  or ``(array, n_objects)`` with ``return_count=True`` (n_objects is None
  unless sequential).
* zarr: needs zarr-python >= 3.1.3; stores may be zarr v2 or v3 (codecs are
  chosen per the group's format), both are run through the same code.

Modes (what is timed: the ``merge_tile_labels`` call until it returns, when
the output is fully written; not imports, not the untimed prep below)
-------------------------------------------------------------------------
--mode store  (default) the documented "pre-written zarr" call,
              ``merge_tile_labels(COPY, write_to=OUT, sequential_labels=True)``.
              Because patchworks renumbers a store input in place, IN.zarr is
              first copied (untimed) to a scratch store next to OUT.
--mode counts same on IN.zarr itself plus ``label_counts=`` from its attrs:
              no renumber pass, input untouched.
--mode dask   ``merge_tile_labels(da.from_zarr(IN/labels), write_to=OUT)``:
              patchworks stages the dask array to a temp zarr (timed), then as
              in store mode.

Prints one JSON line on stdout: tool, version, seconds, mvox_per_s, n_labels
(distinct nonzero labels in OUT, counted after timing), mode, workers,
sequential, merge_peak_rss_mb (largest RSS of this process plus its children,
sampled every 20 ms during the timed call only) and matches_truth (the
foreground masks agree and the (truth, merged) nonzero pairs form a bijection)
when IN_truth.npy exists and --no-check is not given. n_labels and the check
are computed chunk by chunk after timing. Logging goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

log = logging.getLogger("patchworks_merge")

SHAPE = (64, 1024, 1024)
CHUNKS = (64, 256, 256)
SIGMA = 2.0
COMPONENT = "labels"


def truth_path(store: Path) -> Path:
    return store.with_name(store.name.removesuffix(".zarr") + "_truth.npy")


def _compressors(zarr_format: int) -> dict:
    if zarr_format == 2:
        import numcodecs

        return {"compressors": (numcodecs.Zstd(level=1),)}
    from zarr.codecs import ZstdCodec

    return {"compressors": (ZstdCodec(level=1),)}


def _chunk_slices(shape, chunks):
    grid = [range(0, s, c) for s, c in zip(shape, chunks, strict=True)]
    for start in itertools.product(*grid):
        yield tuple(slice(a, min(a + c, s)) for a, c, s in zip(start, chunks, shape, strict=True))


def make_input(
    path: Path,
    *,
    seed: int = 0,
    threshold: float = 0.545,
    shape: tuple[int, ...] = SHAPE,
    chunks: tuple[int, ...] = CHUNKS,
    zarr_format: int = 3,
) -> int:
    """Write the per-chunk-labelled input store and ``*_truth.npy``; return the object count."""
    from scipy import ndimage

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape, dtype=np.float32), SIGMA)
    binary = smooth > np.float32(threshold)
    del smooth
    truth, n_truth = ndimage.label(binary)
    truth = truth.astype(np.int32, copy=False)
    np.save(truth_path(path), truth)
    log.info(
        "binary volume: %.3f%% foreground, %d objects (whole-volume label) in %.1f s",
        100 * binary.mean(),
        n_truth,
        time.perf_counter() - t0,
    )
    del truth

    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    arr = root.create_array(
        COMPONENT, shape=shape, chunks=chunks, dtype=np.int32, **_compressors(zarr_format)
    )
    counts = []
    for sl in _chunk_slices(shape, chunks):
        lab, n = ndimage.label(binary[sl])  # default structure: faces only
        arr[sl] = lab.astype(np.int32, copy=False)
        counts.append(int(n))
    arr.attrs.update(
        {
            "label_counts": counts,
            "convention": "tile-local ids 1..n per chunk (scipy.ndimage.label per chunk)",
            "seed": seed,
            "sigma": SIGMA,
            "threshold": threshold,
            "n_objects_whole_volume": int(n_truth),
        }
    )
    log.info(
        "wrote %s (zarr v%d, %d chunks, %d per-chunk labels) in %.1f s",
        path,
        zarr_format,
        len(counts),
        sum(counts),
        time.perf_counter() - t0,
    )
    return int(n_truth)


def _open_labels(path: Path) -> zarr.Array:
    node = zarr.open(str(path), mode="r")
    return node if isinstance(node, zarr.Array) else node[COMPONENT]


def _scratch_copy(src: Path, near: Path) -> tuple[Path, Path]:
    """Copy the input store (patchworks renumbers a store input in place); return (store, cleanup)."""
    tmp = Path(tempfile.mkdtemp(prefix="pw_input_", dir=near.parent))
    dst = tmp / "in.zarr"
    node = zarr.open(str(src), mode="r")
    if isinstance(node, zarr.Array):  # a bare array: put it in a group as "labels"
        fmt = node.metadata.zarr_format
        shutil.copytree(src, dst / COMPONENT)
        zarr.open_group(str(dst), mode="a", zarr_format=fmt)
    else:
        shutil.copytree(src, dst)
    return dst, tmp


def count_and_check(merged: zarr.Array, truth: np.ndarray | None) -> tuple[int, bool | None]:
    """Distinct nonzero labels in ``merged``; with ``truth``, whether the partition equals it.

    Equal means: the foreground masks agree and the nonzero (truth, merged)
    pairs form a bijection. Chunk by chunk, so it adds little to the peak RSS.
    """
    ids, pairs, same_fg = [], [], True
    for sl in _chunk_slices(merged.shape, merged.chunks):
        m = np.asarray(merged[sl])
        fg = m > 0
        ids.append(np.unique(m[fg]))
        if truth is not None:
            t = np.asarray(truth[sl])
            same_fg &= bool(np.array_equal(fg, t > 0))
            pairs.append(np.unique(t[fg].astype(np.int64) << 32 | m[fg].astype(np.int64)))
    n_m = int(np.unique(np.concatenate(ids)).size)
    if truth is None:
        return n_m, None
    pairs_u = np.unique(np.concatenate(pairs))
    n_t = int(np.unique(pairs_u >> 32).size)
    log.info(
        "check: foreground equal %s, %d truth ids, %d merged ids, %d distinct pairs",
        same_fg,
        n_t,
        n_m,
        pairs_u.size,
    )
    return n_m, bool(same_fg and pairs_u.size == n_t == n_m)


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for q in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += q.memory_info().rss
    return total


def run(args: argparse.Namespace) -> dict:
    import dask.array as da
    import patchworks

    if args.out.exists():
        shutil.rmtree(args.out)
    src = _open_labels(args.input)
    nvox = int(np.prod(src.shape))
    workers = args.workers or min(4, os.cpu_count() or 1)
    kwargs = {"write_to": str(args.out), "n_workers": workers, "sequential_labels": args.sequential}

    cleanup = None
    if args.mode == "store":
        t = time.perf_counter()
        labeled, cleanup = _scratch_copy(args.input, args.out)
        log.info("copied input to %s in %.2f s (untimed)", labeled, time.perf_counter() - t)
        labeled = str(labeled)
    elif args.mode == "counts":
        kwargs["label_counts"] = list(src.attrs["label_counts"])
        labeled = str(args.input)
    else:
        labeled = da.from_zarr(src)
        kwargs["stage_dir"] = str(args.out.parent)  # same disk as the other modes
    log.info(
        "merge_tile_labels(%s, **%s)",
        type(labeled).__name__,
        {k: v for k, v in kwargs.items() if k != "label_counts"},
    )

    import threading

    import psutil

    me, peak, stop = psutil.Process(), [0], threading.Event()

    def sample() -> None:  # tree RSS (the relabel runs in forked workers)
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(me))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        t0 = time.perf_counter()
        patchworks.merge_tile_labels(labeled, **kwargs)
        seconds = time.perf_counter() - t0
    finally:
        stop.set()
        sampler.join()
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
    log.info("merge done in %.2f s", seconds)

    merged = zarr.open_group(str(args.out), mode="r")[COMPONENT]
    log.info(
        "output: %s %s chunks=%s zarr v%d",
        merged.dtype,
        merged.shape,
        merged.chunks,
        merged.metadata.zarr_format,
    )
    tp = truth_path(args.input)
    truth = np.load(tp, mmap_mode="r") if args.check and tp.exists() else None
    n_labels, matches = count_and_check(merged, truth)
    result = {
        "tool": "patchworks",
        "version": patchworks.__version__,
        "seconds": round(seconds, 3),
        "mvox_per_s": round(nvox / 1e6 / seconds, 2),
        "n_labels": n_labels,
        "mode": args.mode,
        "workers": workers,
        "sequential": args.sequential,
        "merge_peak_rss_mb": round(peak[0] / 2**20, 1),
    }
    if matches is not None:
        result["matches_truth"] = matches
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--make-input", type=Path, metavar="IN.zarr", help="write the input store and exit"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.545)
    p.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    p.add_argument("--input", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--workers", type=int, default=None, help="n_workers (default min(4, cpus))")
    p.add_argument("--mode", choices=("store", "counts", "dask"), default="store")
    p.add_argument("--no-sequential", dest="sequential", action="store_false")
    p.add_argument("--no-check", dest="check", action="store_false")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")

    if args.make_input:
        n = make_input(
            args.make_input, seed=args.seed, threshold=args.threshold, zarr_format=args.zarr_format
        )
        print(json.dumps({"input": str(args.make_input), "n_objects": n}), file=sys.stderr)
        return
    if not (args.input and args.out):
        p.error("--input and --out are required (or --make-input)")
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
