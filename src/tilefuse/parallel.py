"""The one executor seam: threads by default, a dask.distributed Client when given."""

from __future__ import annotations

import logging
import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

__all__ = ["cluster_slots", "default_workers", "imap_unordered", "map_in_order", "tune_cluster"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Number of threads to use: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def imap_unordered(
    func: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int | None = None,
    client: Any = None,
    progress: bool = False,
    desc: str = "",
    unit: str = "block",
) -> Iterator[tuple[T, R]]:
    """Run ``func`` on every item; yield ``(item, result)`` as tasks finish.

    Parameters
    ----------
    func : callable
        Called once per item. With a client it must be picklable.
    items : sequence
        Work items (e.g. output block indices).
    workers : int, optional
        Threads (default: the CPUs available). ``1`` runs inline.
    client : distributed.Client, optional
        Run the tasks on this dask cluster instead of local threads.
    progress : bool
        Show a tqdm progress bar.
    desc, unit : str
        Progress bar labels.

    Yields
    ------
    (item, result)
        In completion order. At most ``2 * workers`` tasks are in flight, so
        memory stays bounded by the task size times the worker count.
    """
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, leave=False)
    try:
        if client is not None:
            yield from _run_client(func, items, client, bar)
            return
        n = workers or default_workers()
        if n <= 1:
            for it in items:
                res = func(it)
                bar.update()
                yield it, res
            return
        yield from _run_threads(func, items, n, bar)
    finally:
        bar.close()


def map_in_order(
    func: Callable[[int], R],
    n: int,
    *,
    workers: int | None = None,
    client: Any = None,
    progress: bool = False,
    desc: str = "",
    unit: str = "item",
) -> list[R]:
    """``[func(0), ..., func(n - 1)]``, computed through `imap_unordered` (any order, same list).

    For per-tile or per-pair steps whose results are combined in a fixed order
    (so the outcome does not depend on which task finished first).
    """
    done = dict(
        imap_unordered(
            func, range(n), workers=workers, client=client, progress=progress, desc=desc, unit=unit
        )
    )
    return [done[k] for k in range(n)]


def _run_threads(
    func: Callable[[T], R], items: Iterable[T], n: int, bar: tqdm[Any]
) -> Iterator[tuple[T, R]]:
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="tilefuse") as pool:
        pending: dict[Future[R], T] = {}
        it = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < 2 * n:
                    try:
                        item = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[pool.submit(func, item)] = item
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    res = fut.result()
                    bar.update()
                    yield item, res
        finally:
            for fut in pending:
                fut.cancel()


#: at most this many tasks per run on a cluster: blocks are batched into tasks beyond it
MAX_TASKS = 20_000
#: times a task lost with a worker is resubmitted before the run fails
MAX_RETRIES = 3


#: a cluster task should run at least this long (s): quick items are batched up to it
TASK_SECONDS = 0.25
#: ... but no more items per task than this (unless MAX_TASKS needs more): bounded client memory
MAX_BATCH = 1024


def _apply_batch(
    batch: list[Any], task: Callable[[Any], Any]
) -> tuple[float, list[tuple[Any, Any]]]:
    import time

    t0 = time.perf_counter()
    out = [(item, task(item)) for item in batch]
    return time.perf_counter() - t0, out


class _Batcher(Generic[T]):
    """Hands out items in tasks: at most ``max_tasks`` of them, and enough to keep slots busy.

    Starts with the smallest batch that respects ``max_tasks`` (one block per
    task for ordinary runs, so a lost worker costs little) and grows the batch
    when tasks turn out quick (under `TASK_SECONDS`), so per-task overhead
    never dominates.
    """

    def __init__(self, items: Sequence[T], n_slots: int, max_tasks: int) -> None:
        self.items, self.next = items, 0
        self.size = max(1, -(-len(items) // max_tasks))
        self.limit = max(self.size, min(len(items) // (4 * n_slots), MAX_BATCH))
        self.size = min(self.size, max(1, self.limit))

    def take(self) -> list[T] | None:
        if self.next >= len(self.items):
            return None
        batch = list(self.items[self.next : self.next + self.size])
        self.next += len(batch)
        return batch

    def observe(self, seconds: float, n: int) -> None:
        """A task of ``n`` items ran ``seconds``: grow the batch if tasks are too quick."""
        per_item = seconds / max(n, 1)
        if per_item * self.size < TASK_SECONDS:
            want = int(TASK_SECONDS / max(per_item, 1e-6))
            self.size = max(self.size, min(want, self.limit, 2 * self.size))


def _batches(items: Sequence[T], n_slots: int, max_tasks: int) -> list[list[T]]:
    """The initial batching (before any task has been timed), as a list."""
    b = _Batcher(items, n_slots, max_tasks)
    out: list[list[T]] = []
    while (batch := b.take()) is not None:
        out.append(batch)
    return out


def cluster_slots(client: Any) -> int:
    """Worker threads of a dask cluster (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # pragma: no cover - a client that cannot tell
        return 1


def _tune_malloc() -> bool:
    """Let glibc keep freed block buffers instead of returning them to the OS at once.

    dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which
    also freezes glibc's mmap threshold at 128 KiB: every block buffer is then
    a fresh mmap and fusion spends its time in page faults (2.2x slower than
    threads, measured). Raising both thresholds at run time restores the
    speed. The values (32 and 64 MiB) are the largest glibc would pick by itself.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(ok)


def tune_cluster(client: Any) -> None:
    """Tune the memory allocator of every worker of ``client``, now and when workers restart."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class MallocTuning(WorkerPlugin):
        name = "tilefuse-malloc"

        def setup(self, worker: Any) -> None:
            _tune_malloc()

    try:
        client.register_plugin(MallocTuning(), name=MallocTuning.name)
    except Exception as exc:  # pragma: no cover - old or unusual clusters still run
        logger.warning("could not tune the workers' memory allocator: %s", exc)


def _run_client(
    func: Callable[[T], R], items: Sequence[T], client: Any, bar: tqdm[Any]
) -> Iterator[tuple[T, R]]:
    """Stream tasks through a cluster: a bounded window in flight, futures released when done.

    Items are batched so that a run has at most `MAX_TASKS` tasks, and quick
    items are batched further (see `_Batcher`); at most ``2 * slots`` tasks are
    in flight; a finished task's future is released at once, so the client
    holds O(window) state and a worker lost later costs only its in-flight
    tasks (finished blocks are in the store, not in worker memory, and are
    never recomputed).
    """
    from concurrent.futures import CancelledError

    from distributed import as_completed

    slots = cluster_slots(client)
    tune_cluster(client)
    # ship the (possibly large) task object to every worker once, not once per task
    shared = client.scatter([func], broadcast=True, hash=False)[0]
    batches = _Batcher(items, slots, MAX_TASKS)
    window = 2 * slots
    pending = as_completed()
    in_flight: dict[Any, tuple[list[T], int]] = {}

    def submit(batch: list[T] | None = None, tries: int = 0) -> bool:
        batch = batches.take() if batch is None else batch
        if batch is None:
            return False
        fut = client.submit(_apply_batch, batch, task=shared, pure=False)
        in_flight[fut] = (batch, tries)
        pending.add(fut)
        return True

    try:
        while len(in_flight) < window and submit():
            pass
        for fut in pending:
            batch, tries = in_flight.pop(fut)
            try:
                seconds, results = fut.result()
            except CancelledError:
                # a worker loss can take a task (or the scattered task object) with it:
                # run the batch again (blocks are written whole, so a rerun is harmless)
                if tries >= MAX_RETRIES:
                    raise
                logger.warning("a cluster task was lost; resubmitting %d item(s)", len(batch))
                if shared.status != "finished":
                    shared = client.scatter([func], broadcast=True, hash=False)[0]
                submit(batch, tries + 1)
                continue
            finally:
                fut.release()
                del fut
            batches.observe(seconds, len(batch))
            submit()
            for item, res in results:
                bar.update()
                yield item, res
    finally:
        if in_flight:
            client.cancel(list(in_flight))
