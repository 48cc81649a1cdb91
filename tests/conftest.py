"""Shared fixtures: the real data folder and synthetic ground-truth mosaics."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tilefuse.source import ArraySource

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def locate_real_data(shared: Path = SHARED_DATA, downloader=None) -> tuple[Path | None, str]:
    """The real files: ``shared`` when it holds them all, else the tilefuse.data cache.

    Returns the folder (or None) and, when None, the reason to skip: it names the data registry
    (``tilefuse.data``) that would have fetched the files.
    """
    from tilefuse import data

    try:
        return data.find(shared, downloader=downloader), ""
    except Exception as e:  # offline, pooch missing, a bad download: all mean "no data here"
        return None, (
            f"real test data: {shared} is absent and the tilefuse.data registry "
            f"({len(data.REGISTRY)} public files, fetched with pooch) could not fetch it: "
            f"{type(e).__name__}: {e}"
        )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real files: ../shared/data, or the same files fetched by the tilefuse.data registry."""
    root, reason = locate_real_data()
    if root is None:
        pytest.skip(reason)
    return root


class CountingSource(ArraySource):
    """An array source that records every region read (to prove reads are partial)."""

    def __init__(self, array, fail_after: int | None = None) -> None:
        super().__init__(array)
        self.regions: list[tuple[slice, ...]] = []
        self.fail_after = fail_after
        self._lock = threading.Lock()

    def read(self, region):
        with self._lock:
            if self.fail_after is not None and len(self.regions) >= self.fail_after:
                raise RuntimeError("simulated crash while reading a tile")
            self.regions.append(region)
        return super().read(region)

    def voxels_read(self) -> list[int]:
        return [int(np.prod([s.stop - s.start for s in r])) for r in self.regions]


def smooth_volume(shape, seed=0, dtype=np.float32):
    """A smooth (low-frequency) volume: sums of long-wavelength sinusoids."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    vol = np.zeros(shape)
    for _ in range(3):
        k = rng.uniform(0.01, 0.05, 3)
        ph = rng.uniform(0, 2 * np.pi, 3)
        vol += np.sin(k[0] * z + ph[0]) * np.sin(k[1] * y + ph[1]) * np.sin(k[2] * x + ph[2])
    vol = (vol - vol.min()) / np.ptp(vol)
    if np.issubdtype(np.dtype(dtype), np.integer):
        vol = np.rint(vol * 1000 + 100)
    return vol.astype(dtype)
