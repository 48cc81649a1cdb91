"""Reusable test suites for code that extends tilefuse (needs pytest).

`SourceTests` is the contract of a pixel source (`tilefuse.source.Source`).
A test module subclasses it once per source and provides two fixtures:
``source`` (a fresh source) and, when the truth is known, ``expected`` (the
full ``(c, z, y, x)`` array the source must read)::

    import pytest
    from tilefuse.testing import SourceTests

    class TestMySource(SourceTests):
        @pytest.fixture
        def expected(self):
            return np.arange(2 * 3 * 20 * 30, dtype=np.uint16).reshape(2, 3, 20, 30)

        @pytest.fixture
        def source(self, tmp_path, expected):
            write_my_format(tmp_path / "t.myf", expected)
            return MySource(tmp_path / "t.myf")

Every built-in source runs it (``tests/test_source_conformance.py``).
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tilefuse.errors import RegionError
from tilefuse.source import PixelSource, Source, full_region

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from tilefuse.source import Region

__all__ = ["SourceTests", "sample_regions"]


def sample_regions(shape: tuple[int, ...], n: int = 12, seed: int = 0) -> list[Region]:
    """Regions (z, y, x) of a shape: random boxes, single voxels at the corners, edges, empties."""
    rng = np.random.default_rng(seed)
    zyx = [int(v) for v in shape[-3:]]
    out: list[Region] = [full_region(tuple(zyx))]
    for _ in range(n):
        box = []
        for m in zyx:
            a = int(rng.integers(0, m))
            b = int(rng.integers(a + 1, m + 1))
            box.append(slice(a, b))
        out.append((box[0], box[1], box[2]))
    out.append((slice(0, 1), slice(0, 1), slice(0, 1)))
    out.append((slice(zyx[0] - 1, zyx[0]), slice(zyx[1] - 1, zyx[1]), slice(zyx[2] - 1, zyx[2])))
    out.append((slice(zyx[0] // 2, zyx[0]), slice(zyx[1] // 2, zyx[1]), slice(zyx[2] // 2, zyx[2])))
    out.append((slice(0, zyx[0]), slice(0, 0), slice(0, zyx[2])))  # empty in y
    return out


class SourceTests:
    """The contract every pixel source keeps; subclass and define ``source`` (and ``expected``).

    Checks: the shape is 4 positive ints and the dtype a numpy dtype, both
    matching what reads return; the full read equals ``expected``; every
    region read equals the same slice of the full read; reads past the end
    are clipped like numpy slicing and malformed regions raise `RegionError`;
    channel names match the channel count; a pickled copy (before and after
    the source opened its file) reads the same; `close` releases the handle
    and the next read reopens it; a ``with`` block closes it; threads reading
    at once get the same pixels as one reader.
    """

    @pytest.fixture
    def expected(self) -> NDArray[Any] | None:
        """The full ``(c, z, y, x)`` array the source holds (None: unknown)."""
        return None

    @pytest.fixture
    def source(self) -> Source:
        """A fresh source (subclasses define this fixture)."""
        msg = "define a `source` fixture in the subclass"
        raise NotImplementedError(msg)

    # -- shape, dtype, channels -----------------------------------------------------
    def test_is_a_source(self, source: Source) -> None:
        """It derives from `Source` and satisfies the `PixelSource` protocol."""
        assert isinstance(source, Source)
        assert isinstance(source, PixelSource)

    def test_shape_and_dtype(self, source: Source, expected: NDArray[Any] | None) -> None:
        """Shape is 4 positive ints, dtype a numpy dtype; the full read has both."""
        shape = source.shape
        assert isinstance(shape, tuple) and len(shape) == 4
        assert all(isinstance(n, int) and n >= 1 for n in shape), shape
        assert isinstance(source.dtype, np.dtype)
        assert source.n_channels == shape[0]
        full = source.read(full_region(shape))
        assert full.shape == shape
        assert full.dtype == source.dtype
        if expected is not None:
            assert shape == expected.shape
            assert source.dtype == expected.dtype

    def test_channel_names(self, source: Source) -> None:
        """Channel names are strings, none or one per channel."""
        names = tuple(source.channel_names)
        assert len(names) in (0, source.n_channels)
        assert all(isinstance(n, str) for n in names)

    def test_repr_names_the_type(self, source: Source) -> None:
        """``repr`` names the class."""
        assert type(source).__name__ in repr(source)

    # -- pixels -----------------------------------------------------------------------
    def test_full_read_matches_expected(
        self, source: Source, expected: NDArray[Any] | None
    ) -> None:
        """The full read equals ``expected``."""
        if expected is None:
            pytest.skip("no expected array for this source")
        np.testing.assert_array_equal(source.read(full_region(source.shape)), expected)

    def test_region_reads_equal_slices_of_the_full_read(self, source: Source) -> None:
        """Every sampled region equals the same slice of the full read."""
        full = source.read(full_region(source.shape))
        for region in sample_regions(source.shape):
            got = source.read(region)
            want = full[(slice(None), *region)]
            assert got.shape == want.shape, region
            assert got.dtype == source.dtype
            np.testing.assert_array_equal(got, want, err_msg=str(region))

    def test_numpy_bounds(self, source: Source) -> None:
        """Bounds past the end are clipped, negative ones count from the end (numpy)."""
        c, z, y, x = source.shape
        full = source.read(full_region(source.shape))
        past = source.read((slice(0, z + 5), slice(y // 2, y + 100), slice(None, None)))
        np.testing.assert_array_equal(past, full[:, :, y // 2 :])
        outside = source.read((slice(0, z), slice(y + 1, y + 9), slice(0, x)))
        assert outside.shape == (c, z, 0, x)
        neg = source.read((slice(-1, None), slice(0, y), slice(-2, None)))
        np.testing.assert_array_equal(neg, full[:, -1:, :, -2:])

    def test_malformed_regions_raise(self, source: Source) -> None:
        """Not 3 entries, a step, a non-slice: `RegionError` (also an IndexError)."""
        z, y, x = source.shape[1:]
        bad: list[Any] = [
            (slice(0, z), slice(0, y)),
            (slice(0, z), slice(0, y), slice(0, x), slice(0, 1)),
            (slice(0, z), slice(0, y, 2), slice(0, x)),
            (slice(0, z), "a", slice(0, x)),
        ]
        for region in bad:
            with pytest.raises(RegionError):
                source.read(region)
        with pytest.raises(IndexError):  # RegionError is also an IndexError
            source.read(bad[0])

    # -- lifecycle --------------------------------------------------------------------
    def test_pickle_round_trip(self, source: Source) -> None:
        """A pickled copy (made before or after the first read) reads the same."""
        fresh = pickle.loads(pickle.dumps(source))
        region = sample_regions(source.shape)[1]
        want = source.read(region)  # now the original has its handle open
        np.testing.assert_array_equal(fresh.read(region), want)
        again = pickle.loads(pickle.dumps(source))  # pickled while open
        assert again.shape == source.shape and again.dtype == source.dtype
        np.testing.assert_array_equal(again.read(region), want)
        for s in (fresh, again):
            s.close()

    def test_close_and_reopen(self, source: Source) -> None:
        """`close` releases the handle; the next read reopens it; twice is fine."""
        region = sample_regions(source.shape)[2]
        first = source.read(region)
        source.close()
        assert not source.is_open
        source.close()  # closing twice is fine
        np.testing.assert_array_equal(source.read(region), first)
        source.close()

    def test_context_manager(self, source: Source) -> None:
        """A ``with`` block returns the source and closes it at the end."""
        region = sample_regions(source.shape)[3]
        with source as s:
            assert s is source
            data = s.read(region)
        assert not source.is_open
        np.testing.assert_array_equal(source.read(region), data)
        source.close()

    def test_threads_read_the_same(self, source: Source) -> None:
        """Threads reading at once (from a closed source) get the serial result."""
        regions = sample_regions(source.shape, n=16, seed=1)
        serial = [source.read(r) for r in regions]
        source.close()
        with ThreadPoolExecutor(4) as ex:
            parallel = list(ex.map(source.read, regions * 2))
        for got, want in zip(parallel, serial * 2, strict=True):
            np.testing.assert_array_equal(got, want)
        source.close()
