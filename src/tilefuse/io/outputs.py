"""Output safety shared by every writer: locks, input/output overlap, write beside then swap.

- `StoreLock`: an exclusive lock file beside an output (``<name>.tilefuse-lock``)
  naming its owner (host, pid, start time). The owner also holds an advisory
  ``flock`` on it, so a lock whose process died (``kill -9``, a crash, a
  reboot) is stale by construction and the next writer takes it over; a live
  holder makes the second writer fail at once with `StoreLockedError`.
- `check_output_paths`: an output is never equal to, inside, or containing an
  input file or store.
- `staging_path` / `swap_into_place`: ``overwrite`` writes the new output
  beside the old one and replaces it only once complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tilefuse.errors import OutputOverlapError, StoreLockedError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "StoreLock",
    "check_output_paths",
    "input_paths",
    "staging_path",
    "swap_into_place",
]

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".tilefuse-lock"
STAGING_SUFFIX = ".tilefuse-new"
OLD_SUFFIX = ".tilefuse-old"


class StoreLock:
    """An exclusive, crash-safe lock on one output path.

    Parameters
    ----------
    target : str or PathLike
        The output (store folder or file) to protect. The lock file is
        ``<target>.tilefuse-lock`` in the same folder.

    Raises
    ------
    StoreLockedError
        From `acquire` (or ``with``) when a live writer holds the lock.

    Examples
    --------
    >>> with StoreLock("fused.ome.zarr"):  # doctest: +SKIP
    ...     write_the_store()
    """

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        self.path = self.target.with_name(self.target.name + LOCK_SUFFIX)
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        """Take the lock (re-entrant within one `StoreLock` object)."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                msg = f"{self.target} is being written by {holder} (lock file {self.path})"
                raise StoreLockedError(msg) from None
            # the file may have been removed (released) between open and flock: retry
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            stale = _read_holder(fd)
            if stale != "an unknown process":
                logger.warning("%s: taking over a stale lock of %s", self.target, stale)
            owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(owner).encode(), 0)
            except OSError:  # a full disk: the flock still holds; the owner stays unnamed
                logger.debug("%s: could not record the lock owner", self.path)
            self._fd = fd
            return self
        msg = f"{self.path}: could not take the lock (it keeps changing)"  # pragma: no cover
        raise StoreLockedError(msg)  # pragma: no cover

    def release(self) -> None:
        """Give the lock up and remove the lock file."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __getstate__(self) -> dict[str, Any]:
        # a lock belongs to the process that took it; a copy (pickled to a worker) holds nothing
        return {"target": self.target, "path": self.path, "_fd": None}


def _read_holder(fd: int) -> str:
    """Who a lock file names as its owner, in words."""
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode()) if raw else None
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict):
        return "an unknown process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("since", 0))))
    return f"pid {info.get('pid')} on {info.get('host')} (since {since})"


def input_paths(tiles: Iterable[Any]) -> list[Path]:
    """Every file or store the tiles read from (their sources' and metadata's paths)."""
    found: dict[str, Path] = {}
    for t in tiles:
        cands: list[Any] = []
        meta = getattr(t, "metadata", {}) or {}
        for key in ("path", "store"):
            if meta.get(key):
                cands.append(meta[key])
        src = getattr(t, "source", None)
        for _ in range(16):  # walk wrapper sources (channel subsets, label maps, downscales)
            if src is None:
                break
            if getattr(src, "path", None) is not None:
                cands.append(src.path)
            src = getattr(src, "source", None)
        for c in cands:
            p = Path(c)
            found.setdefault(str(p), p)
    return list(found.values())


def check_output_paths(output: str | os.PathLike[str], inputs: Iterable[Any]) -> None:
    """Refuse an output that is, contains, or lies inside any input.

    Raises
    ------
    OutputOverlapError
        Naming the output and the input it collides with.
    """
    out = Path(output).resolve()
    for p in inputs:
        q = Path(p).resolve()
        if out == q:
            how = "is"
        elif q in out.parents:
            how = "is inside"
        elif out in q.parents:
            how = "contains"
        else:
            continue
        msg = f"output {output} {how} the input {p}; choose another output path"
        raise OutputOverlapError(msg)


def staging_path(target: str | os.PathLike[str]) -> Path:
    """Where ``overwrite`` builds a replacement for ``target`` (beside it)."""
    target = Path(target)
    return target.with_name(target.name + STAGING_SUFFIX)


def swap_into_place(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Replace ``target`` by the complete ``new`` (files: atomic; folders: two renames).

    A crash between the two renames of a folder leaves ``<target>.tilefuse-old``
    and ``new``; `recover_swap` (called by the next writer) finishes the swap.
    """
    new, target = Path(new), Path(target)
    if new.is_dir():
        old = target.with_name(target.name + OLD_SUFFIX)
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.rename(target, old)
        os.rename(new, target)
        if old.exists():
            shutil.rmtree(old)
    else:
        os.replace(new, target)


def recover_swap(target: str | os.PathLike[str], is_complete: Any) -> None:
    """Finish a folder swap that a crash interrupted (call with the target's lock held).

    Parameters
    ----------
    target : path
        The output.
    is_complete : callable
        ``is_complete(path) -> bool`` for the staged replacement.
    """
    target = Path(target)
    old = target.with_name(target.name + OLD_SUFFIX)
    new = staging_path(target)
    if not old.exists():
        return
    if not target.exists() and new.exists() and is_complete(new):
        os.rename(new, target)
    if target.exists():
        shutil.rmtree(old)
    else:  # the replacement never completed: put the previous output back
        os.rename(old, target)


@contextlib.contextmanager
def locked(target: str | os.PathLike[str]) -> Iterator[StoreLock]:
    """``with locked(path):`` hold `StoreLock` on ``path`` for the block."""
    lock = StoreLock(target)
    with lock:
        yield lock
