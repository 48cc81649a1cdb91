"""Fit BaSiCPy's flat-field to the benchmark stack (run in BaSiCPy's own venv).

    /work/venvs/basicpy/bin/python benchmarks/peers/basicpy_fit.py --data DIR

Reads every plane of every tile (``tile_*.npy``, (z, y, x)), stacks them as
(n, y, x) and runs ``BaSiC(get_darkfield=False).fit`` with its defaults. Prints
one JSON line (seconds of the fit, the stack's size) and saves the flat-field
to ``DIR/basicpy_flatfield.npy``.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    args = p.parse_args()
    from basicpy import BaSiC

    files = sorted(args.data.glob("tile_*.npy"))
    stack = np.concatenate([np.load(f) for f in files], axis=0)
    t0 = time.perf_counter()
    model = BaSiC(get_darkfield=False)
    model.fit(stack)
    seconds = time.perf_counter() - t0
    np.save(args.data / "basicpy_flatfield.npy", np.asarray(model.flatfield, dtype=np.float32))
    print(
        json.dumps(
            {
                "tool": "BaSiCPy",
                "version": version("basicpy"),
                "seconds": round(seconds, 3),
                "planes": int(stack.shape[0]),
            }
        )
    )


if __name__ == "__main__":
    main()
