"""Import an optional dependency, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from tilefuse.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` naming the extra that provides it.

    Parameters
    ----------
    module : str
        The module to import, e.g. ``"matplotlib.pyplot"``.
    extra : str
        The tilefuse extra that installs it, e.g. ``"plot"``.
    feature : str
        What needs it, for the message, e.g. ``"Report.to_png"``.

    Returns
    -------
    ModuleType
        The imported module.

    Raises
    ------
    ImportError
        When the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        msg = f"{feature} needs {top}: pip install 'tilefuse[{extra}]' (or pip install {top})"
        raise MissingDependencyError(msg) from e
