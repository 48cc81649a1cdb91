"""The type checker passes on src/ (configuration: ``[tool.mypy]`` in pyproject.toml).

Part of every full test run, so a change that breaks the package's types fails
here as well as in ``.ci/run``. Incremental: the cache in ``.mypy_cache`` makes
reruns take a few seconds.
"""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_is_clean_on_src():
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--no-error-summary",
            "--hide-error-context",
            str(ROOT / "src" / "tilefuse"),
        ]
    )
    assert status == 0, f"mypy found type errors in src/:\n{stdout}{stderr}"
