"""Run a benchmark command in a subprocess; report its JSON line, wall time and peak RSS.

Peak RSS is the largest sum of resident memory over the process and all its
children, sampled every 20 ms with psutil (so multi-process tools are counted
whole).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = Path("/work/peers-venv/bin/python")
#: optional: the project's environment plus zarrs (see docs/backends.md)
ZARRS_PYTHON = Path("/work/backend-venv/bin/python")
ZARRS_ENV = {"ZARR_CODEC_PIPELINE__PATH": "zarrs.ZarrsCodecPipeline"}


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_measured(cmd: list[str], timeout: float = 3600, env: dict | None = None) -> dict:
    """Run ``cmd``; return its last JSON stdout line plus ``wall_s`` and ``peak_rss_mb``."""
    log.info("running: %s", " ".join(map(str, cmd)))
    t0 = time.perf_counter()
    full_env = None if env is None else {**os.environ, **env}
    proc = subprocess.Popen(
        list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env
    )
    ps = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, tree_rss(ps))
            except psutil.Error:
                break
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate(timeout=timeout)
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(err[-4000:])
        raise RuntimeError(f"benchmark command failed ({proc.returncode}): {cmd}")
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    result["wall_s"] = round(wall, 2)
    result["peak_rss_mb"] = round(peak / 2**20, 1)
    return result


def peers_python() -> str:
    if not PEERS_PYTHON.exists():
        raise SystemExit(
            f"peer tools venv not found at {PEERS_PYTHON}; create it with "
            "benchmarks/peers/requirements.txt (see that file)"
        )
    return str(PEERS_PYTHON)
