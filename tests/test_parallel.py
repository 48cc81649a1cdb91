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


class _CountingTask:
    """Appends every item it runs to a file (one line per call, from any process)."""

    def __init__(self, log: Path) -> None:
        self.log = str(log)

    def __call__(self, item: int) -> int:
        import time

        time.sleep(0.01)
        with open(self.log, "a") as f:
            f.write(f"{item}\n")
        return item * 2


def test_cluster_streams_and_a_lost_worker_costs_only_in_flight_tasks(tmp_path, client):
    import os
    import signal

    from tilefuse.parallel import cluster_slots, imap_unordered

    log = tmp_path / "calls.txt"
    items = list(range(200))
    seen = []
    killed = False
    for item, res in imap_unordered(_CountingTask(log), items, client=client):
        assert res == 2 * item
        seen.append(item)
        if len(seen) == 100 and not killed:
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
