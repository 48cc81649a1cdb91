"""Benchmark I/O backends and codecs for tilefuse's sharded OME-Zarr (zarr v3) writer.

    python benchmarks/bench_backends.py [--size 128 1024 1024] [--repeats 2]

Layout as tilefuse writes it: uint16, inner chunks (32, 128, 128), shards
(64, 512, 512); every task writes exactly one whole shard (``array[region] = data``)
from a pool of 2 threads. Backends:

- ``zarr-python``: zarr-python alone, default ``BatchedCodecPipeline``;
- ``zarrs``: zarr-python with the Rust codec pipeline of the ``zarrs`` package
  (``codec_pipeline.path = "zarrs.ZarrsCodecPipeline"``, ``strict`` so that it
  never falls back silently to the Python pipeline);
- ``tensorstore``: driver ``zarr3`` with a ``sharding_indexed`` codec, same layout.

For each (backend, codec): write MB/s (uncompressed MB / wall s into a fresh
array), full-read MB/s, both best of --repeats rounds (each round runs every
case once, so load spikes hit all cases alike); compression ratio (uncompressed
bytes / bytes of all files in the store); a round-trip check with the backend
itself and a check that plain zarr-python reads the store back identically.
Input: a synthetic microscopy-like volume, generated once into /tmp as .npy and
memory-mapped. No fsync: the figures are encode/decode costs, not disk speed.
Prints a Markdown table on stdout; progress goes to stderr.
"""

import argparse
import itertools
import logging
import platform
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import zarr

log = logging.getLogger("bench_backends")

CHUNKS = (32, 128, 128)
SHARDS = (64, 512, 512)
WORKERS = 2
PYTHON_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"
ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"


def blosc(cname: str, clevel: int) -> dict:
    cfg = {"cname": cname, "clevel": clevel, "shuffle": "shuffle", "typesize": 2, "blocksize": 0}
    return {"name": "blosc", "configuration": cfg}


# zarr v3 bytes->bytes codec metadata, understood as-is by zarr-python and tensorstore
CODECS = {
    "blosc-zstd-1 + shuffle (current default)": blosc("zstd", 1),
    "blosc-lz4-5 + shuffle": blosc("lz4", 5),
    "zstd-3": {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
    "blosc-zstd-5 + shuffle": blosc("zstd", 5),
}


def make_data(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Microscopy-like uint16: smooth background + sparse bright blobs + shot noise."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage as ndi

    log.info("generating %s: smooth background", shape)
    lam = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=(2, 6, 6))
    lam *= 80.0 / lam.std()
    lam += 300.0  # autofluorescence background, a few hundred counts
    log.info("generating: blobs")
    kz, ky, kx = np.ogrid[-4:5, -12:13, -12:13]
    kernel = np.exp(-(kz**2 / (2 * 1.5**2) + (ky**2 + kx**2) / (2 * 4.0**2))).astype(np.float32)
    n_blobs = max(1, int(np.prod(shape) / 2e5))
    for _ in range(n_blobs):  # nuclei-like spots, 500-8000 counts above background
        at = [int(rng.integers(0, max(1, s - k))) for s, k in zip(shape, kernel.shape, strict=True)]
        dst = lam[tuple(slice(c, c + k) for c, k in zip(at, kernel.shape, strict=True))]
        dst += rng.uniform(500, 8000) * kernel[tuple(slice(0, d) for d in dst.shape)]
    log.info("generating: Poisson noise + camera offset")
    out = np.empty(shape, dtype=np.uint16)
    for z in range(shape[0]):  # slab by slab to keep memory low
        out[z] = np.clip(rng.poisson(np.maximum(lam[z], 0)) + 100, 0, 65535)
    return out


def shard_regions(shape) -> list[tuple[slice, ...]]:
    starts = [range(0, s, c) for s, c in zip(shape, SHARDS, strict=True)]
    return [
        tuple(slice(o, min(o + c, s)) for o, c, s in zip(origin, SHARDS, shape, strict=True))
        for origin in itertools.product(*starts)
    ]


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- backends: create(path, shape, codec) -> write(region, block); open_read(path) -> ndarray


def zarr_create(path, shape, codec):
    kw = {"dtype": "uint16", "chunks": CHUNKS, "shards": SHARDS, "fill_value": 0}
    arr = zarr.create_array(str(path), shape=shape, compressors=[codec], overwrite=True, **kw)
    log.debug("pipeline %s", type(arr.async_array.codec_pipeline).__name__)

    def write(region, block):
        arr[region] = block

    return write


def zarr_read(path):
    return zarr.open_array(str(path), mode="r")[...]


def ts_spec(path, shape=None, codec=None):
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    if shape is None:
        return {**spec, "open": True}
    index_codecs = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
    sharding = {
        "chunk_shape": list(CHUNKS),
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, codec],
        "index_codecs": index_codecs,
        "index_location": "end",
    }
    metadata = {
        "shape": list(shape),
        "data_type": "uint16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(SHARDS)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "sharding_indexed", "configuration": sharding}],
    }
    return {**spec, "metadata": metadata, "create": True, "delete_existing": True}


def ts_create(path, shape, codec):
    import tensorstore as ts

    arr = ts.open(ts_spec(path, shape, codec)).result()

    def write(region, block):
        arr[region].write(block).result()

    return write


def ts_read(path):
    import tensorstore as ts

    return ts.open(ts_spec(path)).result().read().result()


BACKENDS = {  # name: (create, read, zarr config while it runs, package that must be present)
    "zarr-python": (zarr_create, zarr_read, {"codec_pipeline.path": PYTHON_PIPELINE}, "zarr"),
    "zarrs": (
        zarr_create,
        zarr_read,
        {"codec_pipeline.path": ZARRS_PIPELINE, "codec_pipeline.strict": True},
        "zarrs",
    ),
    "tensorstore": (ts_create, ts_read, {}, "tensorstore"),
}


def pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def run_once(name: str, codec: dict, data: np.ndarray, path: Path) -> dict:
    """Write `data` shard by shard into a fresh array, read it all back, check it."""
    create, read, cfg, _ = BACKENDS[name]
    regions = shard_regions(data.shape)
    shutil.rmtree(path, ignore_errors=True)
    with zarr.config.set(cfg):
        write = create(path, data.shape, codec)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda r: write(r, data[r]), regions))
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = read(path)
        t_read = time.perf_counter() - t0
        same = bool(np.array_equal(back, data))
        del back
    with zarr.config.set({"codec_pipeline.path": PYTHON_PIPELINE}):
        same_zarr = bool(np.array_equal(zarr_read(path), data))
    res = {"write_s": t_write, "read_s": t_read, "nbytes": store_bytes(path)}
    res |= {"same": same, "same_zarr": same_zarr}
    shutil.rmtree(path, ignore_errors=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=3, default=[128, 1024, 1024], metavar=("Z", "Y", "X"))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data", type=Path, help="input .npy (default /tmp/tilefuse_bench_ZxYxX.npy)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tilefuse_bench_backends"))
    p.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    shape = tuple(args.size)
    npy = args.data or Path(f"/tmp/tilefuse_bench_{'x'.join(map(str, shape))}.npy")
    if not npy.exists():
        np.save(npy, make_data(shape))
    data = np.load(npy, mmap_mode="r")
    if data.shape != shape or data.dtype != np.uint16:
        p.error(f"{npy}: {data.shape} {data.dtype}, want {shape} uint16")
    _ = int(np.asarray(data).sum(dtype=np.uint64))  # warm the page cache
    args.workdir.mkdir(parents=True, exist_ok=True)

    names = [n for n in args.backends if pkg_version(BACKENDS[n][3])]
    for n in set(args.backends) - set(names):
        log.warning("%s: package %s not installed, skipped", n, BACKENDS[n][3])
    runs: dict[tuple[str, str], list[dict]] = {}
    for i in range(args.repeats):  # rounds interleave the cases, so load spikes hit all alike
        for name, (label, codec) in itertools.product(names, CODECS.items()):
            r = run_once(name, codec, data, args.workdir / "bench.zarr")
            log.info("round %d  %-11s  %-41s %s", i + 1, name, label, r)
            runs.setdefault((name, label), []).append(r)

    vers = ", ".join(
        f"{n} {pkg_version(n)}"
        for n in ("zarr", "zarrs", "tensorstore", "numcodecs", "numpy")
        if pkg_version(n)
    )
    print(
        f"Data {shape} uint16 ({data.nbytes / 1e6:.0f} MB), chunks {CHUNKS}, shards {SHARDS}, "
        f"{WORKERS} writer threads, best of {args.repeats}. Python {platform.python_version()}, "
        f"{vers}.\n"
    )
    print("| backend | codec | write MB/s | read MB/s | ratio | round-trip | zarr-python reads |")
    print("|---|---|---:|---:|---:|---|---|")
    mb, ok = data.nbytes / 1e6, {True: "ok", False: "MISMATCH"}
    for (name, label), rs in runs.items():
        write, read = mb / min(r["write_s"] for r in rs), mb / min(r["read_s"] for r in rs)
        ratio = data.nbytes / rs[0]["nbytes"]
        same, same_zarr = all(r["same"] for r in rs), all(r["same_zarr"] for r in rs)
        print(
            f"| {name} | {label} | {write:.0f} | {read:.0f} | {ratio:.2f} "
            f"| {ok[same]} | {ok[same_zarr]} |"
        )
    return 0 if all(r["same"] and r["same_zarr"] for rs in runs.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
