"""Write SpimData XML: round trips of existing projects, keeping everything tilefuse does not model.

The parsed lxml tree of the original file is copied and changed in place, so
every element tilefuse does not model (StitchingResults, ViewInterestPoints,
BoundingBoxes, IntensityAdjustments, PointSpreadFunctions, unknown ones)
survives. New registrations are *added* as a named ``<ViewTransform>`` at the
top of a view's list (applied last, as BigStitcher does), never rewriting the
prior transforms. Array texts are normalised to single-space separated
numbers (the Java reader rejects leading whitespace); values are unchanged.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tilefuse.errors import OutputExistsError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from tilefuse.io.spimdata import SpimData

__all__ = ["BIGSTITCHER_EXTRAS", "relative_path", "write_spimdata"]

#: root children BigStitcher always writes (empty ones are harmless for BigDataViewer)
BIGSTITCHER_EXTRAS = (
    "ViewInterestPoints",
    "BoundingBoxes",
    "PointSpreadFunctions",
    "StitchingResults",
    "IntensityAdjustments",
)
_ARRAYS = (".//ViewTransform/affine", ".//ViewSetup/size", ".//ViewSetup/voxelSize/size")


def _fmt(values: ArrayLike) -> str:
    return " ".join(repr(float(v)) for v in np.asarray(values, dtype=float).ravel())


def write_spimdata(
    sd: SpimData,
    path: str | os.PathLike[str],
    *,
    add_transforms: dict[tuple[int, int], tuple[str, ArrayLike]] | None = None,
    pairwise: list[dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a (possibly changed) copy of a parsed project.

    Parameters
    ----------
    sd : SpimData
        A project read with `tilefuse.io.spimdata.read_spimdata`.
    path : str or PathLike
        Output XML. Relative image paths stay valid: when the output is in
        another folder, ``<BasePath>`` is recomputed relative to it (the
        project stays portable: move the XML and images together).
    add_transforms : dict, optional
        ``(timepoint, setup) -> (name, affine)`` with ``affine`` a 3x4 or
        4x4 XYZ matrix in world units, inserted as the view's first
        ``<ViewTransform>`` (applied last).
    pairwise : list of dict, optional
        Pairwise results to add to ``<StitchingResults>``, each with keys
        ``setup_a``, ``setup_b``, ``timepoint``, ``shift_xyz`` (3 numbers,
        world units), ``correlation``, ``hash`` and ``bbox_xyz`` (6 numbers:
        min x y z, max x y z, world units).
    overwrite : bool
        Replace an existing file (never the file ``sd`` was read from).

    Returns
    -------
    Path
    """
    from lxml import etree

    path = Path(path)
    if path.exists() and (not overwrite or path.resolve() == sd.path.resolve()):
        msg = f"output exists: {path} (the input project is never overwritten)"
        raise OutputExistsError(msg)
    tree = copy.deepcopy(sd.tree)
    root = tree.getroot()
    # never carry a DOCTYPE or (unresolved) entity references into our output
    for ent in list(root.iter(etree.Entity)):
        _drop_keeping_tail(ent)
    for xpath in _ARRAYS:
        for el in root.iterfind(xpath):
            if el.text and el.text.strip():
                el.text = " ".join(el.text.split())
    regs = {
        (int(r.get("timepoint")), int(r.get("setup"))): r
        for r in root.iterfind(".//ViewRegistrations/ViewRegistration")
    }
    for key, (name, affine) in (add_transforms or {}).items():
        reg = regs.get(key)
        if reg is None:
            reg = etree.SubElement(
                root.find("ViewRegistrations"),
                "ViewRegistration",
                timepoint=str(key[0]),
                setup=str(key[1]),
            )
            regs[key] = reg
        tr = etree.Element("ViewTransform", type="affine")
        etree.SubElement(tr, "Name").text = name
        etree.SubElement(tr, "affine").text = _fmt(np.asarray(affine, dtype=float)[:3, :4])
        reg.insert(0, tr)
    if path.parent.resolve() != sd.path.parent.resolve() and isinstance(sd.base_path, Path):
        base = root.find("BasePath")
        if base is None:
            base = etree.Element("BasePath")
            root.insert(0, base)
        base.set("type", "relative")
        base.text = relative_path(sd.base_path, path.parent)
        if Path(base.text).is_absolute():  # no relative form (another drive)
            base.set("type", "absolute")
    for tag in BIGSTITCHER_EXTRAS:
        if root.find(tag) is None:
            etree.SubElement(root, tag)
    results = root.find("StitchingResults")
    for pr in pairwise or []:
        el = etree.SubElement(
            results,
            "PairwiseResult",
            view_setup_a=str(pr["setup_a"]),
            view_setup_b=str(pr["setup_b"]),
            tp_a=str(pr["timepoint"]),
            tp_b=str(pr["timepoint"]),
        )
        etree.SubElement(el, "shift").text = _fmt(translation_xyz_from_xyz(pr["shift_xyz"]))
        etree.SubElement(el, "correlation").text = repr(float(pr["correlation"]))
        etree.SubElement(el, "hash").text = repr(float(pr["hash"]))
        etree.SubElement(el, "overlap_boundingbox").text = _fmt(pr["bbox_xyz"])
    etree.indent(tree, space="  ")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    # the root element alone: the input's <!DOCTYPE> (and its entity declarations) stay behind
    tmp.write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
    os.replace(tmp, path)
    return path


def relative_path(target: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """``target`` relative to the folder ``start``, POSIX separators (``.`` for the same folder).

    Falls back to the absolute path when there is no relative one (another drive).
    """
    t, s = Path(target).resolve(), Path(start).resolve()
    try:
        rel = os.path.relpath(t, s)
    except ValueError:  # different drives on Windows
        return t.as_posix()
    return Path(rel).as_posix()


def _drop_keeping_tail(node: Any) -> None:
    """Remove an lxml node, keeping the text that follows it."""
    parent = node.getparent()
    if node.tail:
        prev = node.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + node.tail
        else:
            parent.text = (parent.text or "") + node.tail
    parent.remove(node)


def translation_xyz_from_xyz(shift_xyz: Any) -> Any:
    """A 3x4 translation matrix from an XYZ shift."""
    a = np.zeros((3, 4))
    a[:, :3] = np.eye(3)
    a[:, 3] = np.asarray(shift_xyz, dtype=float)
    return a


def registration_hash(model_a: Any, model_b: Any) -> float:
    """BigStitcher's ``PairwiseStitchingResult.calculateHash``: sum of A_k + 13 B_k."""
    a = np.asarray(model_a, dtype=float)[:3, :4].ravel()
    b = np.asarray(model_b, dtype=float)[:3, :4].ravel()
    total = 0.0
    for x, y in zip(a, b, strict=True):
        total += x + 13 * y
    return total


def translation_xyz(delta_zyx_world: Any) -> Any:
    """A 3x4 XYZ translation matrix for a (z, y, x) shift in world units."""
    a = np.zeros((3, 4))
    a[:, :3] = np.eye(3)
    a[:, 3] = np.asarray(delta_zyx_world, dtype=float)[::-1]
    return a
