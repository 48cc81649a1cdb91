"""The one executor seam: threads by default, a dask.distributed Client when given."""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

__all__ = ["default_workers", "imap_unordered"]

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


def _apply(item: Any, task: Callable[[Any], Any]) -> Any:
    return task(item)


def _run_client(
    func: Callable[[T], R], items: Sequence[T], client: Any, bar: tqdm[Any]
) -> Iterator[tuple[T, R]]:
    from distributed import as_completed

    # ship the (possibly large) task object to every worker once, not once per task
    [shared] = client.scatter([func], broadcast=True, hash=False)
    futures = client.map(_apply, list(items), task=shared, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for fut in as_completed(futures):
            res = fut.result()
            bar.update()
            yield items[index[fut.key]], res
    finally:
        client.cancel(futures)
