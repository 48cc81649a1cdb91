from pathlib import Path

import distributed
import numpy as np
import pytest

from tilefuse import Tileset
from tilefuse.io.tiff import write_tiff
from tilefuse.synthetic import cut_tiles, make_volume


def store_bytes(path: Path) -> dict[str, bytes]:
    """Every chunk/shard file of the store (metadata excluded), by relative path."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in ("zarr.json", ".zattrs", ".zarray", ".zgroup")
    }


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_local_cluster_writes_the_same_bytes_as_threads(tmp_path, client):
    vol, _ = make_volume((16, 200, 220), seed=31)
    m = cut_tiles(vol, (3, 3), overlap=0.2)
    files = [write_tiff(tmp_path / f"t{i}.tif", t) for i, t in enumerate(m.tiles)]
    ts = Tileset.from_tiff(files, m.offsets_px * [0.4, 0.2, 0.2], voxel_size=(0.4, 0.2, 0.2))
    kw = {"blend": "linear", "levels": 2, "chunks": (8, 32, 32), "shards": (16, 64, 64)}
    threaded = ts.fuse(tmp_path / "threads.ome.zarr", workers=2, **kw)
    dask_run = ts.fuse(tmp_path / "dask.ome.zarr", client=client, **kw)
    np.testing.assert_array_equal(dask_run.read(), threaded.read())
    a, b = store_bytes(tmp_path / "threads.ome.zarr"), store_bytes(tmp_path / "dask.ome.zarr")
    assert a.keys() == b.keys() and len(a) > 8
    assert a == b
    # in-memory result through the cluster too
    np.testing.assert_array_equal(ts.fuse(client=client, blend="linear"), threaded.read())
    np.testing.assert_array_equal(threaded.read(), vol)


def test_per_tile_bdv_export_reads_on_the_cluster(tmp_path, client):
    """Tiles exported for BigStitcher: blocks read by the cluster's workers, written here;
    every dataset equals the serial export's and the tiles themselves."""
    import h5py

    vol, _ = make_volume((12, 150, 170), seed=32)
    m = cut_tiles(vol, (2, 2), overlap=0.2)
    files = [write_tiff(tmp_path / f"t{i}.tif", t) for i, t in enumerate(m.tiles)]
    ts = Tileset.from_tiff(files, m.offsets_px)
    serial, _ = ts.to_bdv(tmp_path / "serial.h5", workers=1, chunks=(4, 32, 32))
    on_cluster, _ = ts.to_bdv(tmp_path / "cluster.h5", client=client, chunks=(4, 32, 32))

    def datasets(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda name, obj: (
                    out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
        return out

    a, b = datasets(serial), datasets(on_cluster)
    assert a.keys() == b.keys() and len(a) >= 4 * 3
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for k, tile in enumerate(m.tiles):
        np.testing.assert_array_equal(b[f"t00000/s{k:02d}/0/cells"].view(np.uint16), tile)


class _CountingTask:
    """Appends every item it runs to a file (one line per call, from any process)."""

    def __init__(self, log: Path) -> None:
        self.log = str(log)

    def __call__(self, item: int) -> int:
        import time

        time.sleep(0.3)  # slower than a task's target length: one item per task
        with open(self.log, "a") as f:
            f.write(f"{item}\n")
        return item * 2


def test_cluster_streams_and_a_lost_worker_costs_only_in_flight_tasks(tmp_path, client):
    import os
    import signal

    from tilefuse.parallel import cluster_slots, imap_unordered

    log = tmp_path / "calls.txt"
    items = list(range(40))
    seen = []
    killed = False
    for item, res in imap_unordered(_CountingTask(log), items, client=client):
        assert res == 2 * item
        seen.append(item)
        if len(seen) == 20 and not killed:
            victim = sorted(client.scheduler_info()["workers"])[0]
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
            killed = True
    assert sorted(seen) == items  # every item exactly once
    calls = [int(v) for v in log.read_text().split()]
    recomputed = len(calls) - len(items)
    window = 2 * cluster_slots(client)
    assert 0 <= recomputed <= window
    # the client kept no finished futures
    assert not client.futures


@pytest.fixture
def cli_cluster():
    """A scheduler and two single-threaded worker processes started like a user would (CLI)."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    dask_cli = shutil.which("dask") or pytest.fail("the dask command is missing (distributed)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    common = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            **common,
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                [dask_cli, "worker", address, "--nworkers", "2", "--nthreads", "1",
                 "--no-dashboard", "--host", "127.0.0.1"],
                **common,
            )
        )  # fmt: skip
        with distributed.Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        del sys, time


@pytest.mark.slow
def test_cli_scheduler_matches_threads_byte_for_byte(tmp_path, cli_cluster):
    from tilefuse.cli import main
    from tilefuse.io.tileconfig import write_tileconfig

    vol, _ = make_volume((12, 150, 160), seed=8)
    m = cut_tiles(vol, (2, 2), overlap=0.2)
    files = [write_tiff(tmp_path / f"t{i}.tif", t) for i, t in enumerate(m.tiles)]
    cfg = write_tileconfig(
        tmp_path / "TileConfiguration.txt", [f.name for f in files], m.offsets_px
    )
    common = [str(cfg), "--voxel-size", "1", "1", "1", "--levels", "2", "--no-progress"]
    assert main(["stitch", *common, "-o", str(tmp_path / "t.ome.zarr"), "--workers", "2"]) == 0
    out = tmp_path / "d.ome.zarr"
    assert main(["stitch", *common, "-o", str(out), "--scheduler", cli_cluster]) == 0
    a, b = store_bytes(tmp_path / "t.ome.zarr"), store_bytes(out)
    assert a.keys() == b.keys() and a == b
    # register with the cluster too: same links as threads
    xml_t, xml_d = tmp_path / "t.xml", tmp_path / "d.xml"
    assert main(["register", *common[:5], "-o", str(xml_t), "--no-progress"]) == 0
    assert main(["register", *common[:5], "-o", str(xml_d), "--scheduler", cli_cluster,
                 "--no-progress"]) == 0  # fmt: skip
    t, d = Tileset.open(xml_t), Tileset.open(xml_d)
    np.testing.assert_allclose(t.offsets, d.offsets, atol=1e-9)


def test_cli_scheduler_unreachable_is_one_clear_error(tmp_path, capsys, monkeypatch):
    import socket

    from tilefuse import cli
    from tilefuse.cli import main

    monkeypatch.setattr(cli, "SCHEDULER_TIMEOUT", "2s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    vol, _ = make_volume((4, 40, 40), seed=1)
    f = write_tiff(tmp_path / "a.tif", vol)
    args = ["stitch", str(f), "-o", str(tmp_path / "x.ome.zarr"), "--no-progress"]
    assert main([*args, "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert "--scheduler" in err and f"127.0.0.1:{port}" in err
    assert not (tmp_path / "x.ome.zarr").exists()


def test_lazy_generated_mosaic_fuses_to_its_sample():
    from tilefuse.geometry import affine_from_offset
    from tilefuse.synthetic import SampleTile, SyntheticSample
    from tilefuse.tile import Tile

    sample = SyntheticSample((10, 90, 100), seed=2, blob_radius=3)
    starts = [(0, y, x) for y in (0, 40) for x in (0, 45)]
    shape = (10, 50, 55)

    def tiles(**kw):
        return Tileset([
            Tile(SampleTile(sample, s, shape, **kw), affine_from_offset((1, 1, 1), s), index=i)
            for i, s in enumerate(starts)
        ])  # fmt: skip

    images = tiles()
    np.testing.assert_array_equal(images.fuse(blend="linear"), sample.image((slice(None),) * 3))
    labels = tiles(kind="labels", label_offset=3_000_000_000)
    fused = labels.fuse_labels()
    truth = sample.labels((slice(None),) * 3).astype(np.uint64)
    truth[truth > 0] += 3_000_000_000
    np.testing.assert_array_equal(fused, truth)


def test_dedup_and_label_fusion_on_the_cluster_match_threads(client):
    from tilefuse.geometry import affine_from_offset
    from tilefuse.synthetic import SampleTile, SyntheticSample
    from tilefuse.tile import Tile

    sample = SyntheticSample((8, 90, 100), seed=6, blob_radius=3, n_blobs=60)
    starts = [(0, y, x) for y in (0, 40) for x in (0, 45)]
    labels = Tileset([
        Tile(SampleTile(sample, s, (8, 50, 55), kind="labels", label_offset=3_000_000_000),
             affine_from_offset((1, 1, 1), s), index=i)
        for i, s in enumerate(starts)
    ])  # fmt: skip
    local = labels.dedup_labels(workers=2)
    remote = labels.dedup_labels(client=client)
    assert remote.luts == local.luts and remote.n_objects == local.n_objects
    np.testing.assert_array_equal(remote.merges, local.merges)
    assert local.n_objects == len(np.unique(sample.labels((slice(None),) * 3))) - 1
    np.testing.assert_array_equal(
        labels.fuse_labels(mapping=remote, client=client), labels.fuse_labels(mapping=local)
    )
