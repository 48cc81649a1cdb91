"""The ``tilefuse`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

import numpy as np

from tilefuse._version import __version__
from tilefuse.blend import blend_names, label_safe_names
from tilefuse.correction import RAMPS
from tilefuse.errors import MissingTileError, OutputExistsError, ParameterError, TilefuseError
from tilefuse.options import ExecOptions, FusionOptions, OutputOptions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tilefuse.tileset import Tileset

__all__ = ["main"]

logger = logging.getLogger("tilefuse")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _open(args: argparse.Namespace) -> Tileset:
    from tilefuse.tileset import Tileset

    opts: dict[str, Any] = {}
    if getattr(args, "format", None):
        opts["format"] = args.format
    if getattr(args, "positions", None):
        opts["positions"] = args.positions
    if getattr(args, "voxel_size", None):
        opts["voxel_size"] = tuple(args.voxel_size)
    if getattr(args, "skip_missing", False):
        opts["skip_missing"] = True
    attrs = {"timepoint": "timepoint", "angle": "angle", "world_unit_um": "world_unit"}
    for key, attr in attrs.items():  # a reader that takes no such option refuses it by name
        if getattr(args, attr, None) is not None:
            opts[key] = tuple(v) if isinstance(v := getattr(args, attr), list) else v
    if getattr(args, "allow_incomplete", False):
        opts["allow_incomplete"] = True
    ts = Tileset.open(args.input, **opts)
    if "voxel_size" not in opts:
        _warn_default_voxel_size(args, opts, ts)
    if getattr(args, "channels", None):
        ts = ts.select_channels([int(c) if c.isdigit() else c for c in args.channels])
    if getattr(args, "output", None):
        from tilefuse.io.outputs import check_output_paths, input_paths

        # before anything is written: the output is never an input, inside one, or holding one
        # (a plain input folder may receive outputs: its files are checked one by one)
        given = Path(args.input)
        plain_folder = given.is_dir() and not any(
            (given / f).exists() for f in ("zarr.json", ".zgroup", ".zattrs")
        )
        check_output_paths(
            args.output, [*([] if plain_folder else [given]), *input_paths(ts.tiles)]
        )
    return ts


def _warn_default_voxel_size(args: argparse.Namespace, opts: dict[str, Any], ts: Tileset) -> None:
    """Warn when the reader's voxel size is a default, not a calibration read from the input."""
    import inspect

    from tilefuse.io.registry import find_reader, get_reader

    try:
        reader = get_reader(opts["format"]) if "format" in opts else find_reader(args.input, opts)
        param = inspect.signature(reader.load()).parameters.get("voxel_size")
    except Exception:  # the input opened; not knowing its reader only skips the warning
        return
    if param is not None and param.default not in (None, inspect.Parameter.empty):
        logger.warning(
            "%s holds no voxel size: using %s um (z, y, x); pass --voxel-size Z Y X",
            args.input,
            _fmt(ts.voxel_size.tolist()),
        )


def _input_name(path: str) -> str:
    """A name for the image, from the input (not the output): its folder or file stem."""
    p = Path(path).absolute()
    if p.is_file() and p.name.lower().startswith("tileconfiguration"):
        p = p.parent
    return p.name.split(".")[0] or "tilefuse"


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a tileset holds."""
    ts = _open(args)
    info = ts.summary()
    if getattr(args, "seams", False):
        info["seam_metric"] = _seams(ts, args)
    if args.json:
        _out(json.dumps(info, indent=2))
        return 0
    _out(f"input       {args.input}")
    _out(f"tiles       {info['tiles']}")
    _out(f"channels    {', '.join(info['channels'])}")
    _out(f"dtype       {info['dtype']}")
    unit = "pixel (no unit in the input)" if info.get("unit") == "pixel" else "um"
    _out(f"voxel size  {_fmt(info['voxel_size_um'])} {unit} (z, y, x)")
    _out(f"extent      {_fmt(info['extent_um'])} {unit} (z, y, x)")
    _out(f"overlaps    {info['overlaps']} pairs")
    for many, one in (("timepoints", "timepoint"), ("angles", "angle")):
        if many in info:
            ids = info[many]
            listed = ", ".join(str(i) for i in ids[:20]) + (", ..." if len(ids) > 20 else "")
            _out(f"{many:<11} {len(ids)}: {listed} (reading {one} {info[one]}; --{one} to choose)")
    _out("")
    _out(f"{'tile':<32} {'shape (z, y, x)':<20} offset um (z, y, x)")
    for t in info["tile_list"]:
        _out(f"{t['name']:<32} {tuple(t['shape'])!s:<20} {_fmt(t['offset_um'])}")
    for c, v in info.get("seam_metric", {}).items():
        _out(f"seam metric {c}: {v:.3f} (1 = seamless)")
    return 0


def _seams(ts: Tileset, args: argparse.Namespace) -> dict[str, float]:
    """Seam metric per channel, raw and (with --correct) corrected."""
    out = {}
    for c in range(ts.n_channels):
        out[f"channel {c}"] = float(ts.seam_metric(c).score)
    if getattr(args, "correct", None):
        cts = _corrected(ts, args.correct)
        for c in range(ts.n_channels):
            out[f"channel {c} corrected"] = float(cts.seam_metric(c).score)
    if getattr(args, "fused", None):
        for c in range(ts.n_channels):
            out[f"channel {c} in {args.fused}"] = float(ts.fused_seam_metric(args.fused, c).score)
    return out


def _corrected(ts: Tileset, spec: str) -> Tileset:
    """``--correct FILE.npz`` or ``--correct auto``."""
    return ts.correct(spec)


def _darkfield(args: argparse.Namespace) -> Any:
    """What `correct`'s dark-field options ask for (at most one of them)."""
    given = [x for x in (args.darkfield_file, args.dark_level) if x is not None]
    if len(given) + bool(args.darkfield) > 1:
        msg = "choose one of --darkfield, --darkfield-file and --dark-level"
        raise ParameterError(msg)
    return given[0] if given else args.darkfield


def cmd_correct(args: argparse.Namespace) -> int:
    """Estimate shading profiles and per-tile gains; save them (.npz) and a QC picture."""
    ts = _open(args)
    corr = ts.estimate_corrections(
        flatfield=args.flatfield if args.flatfield else not args.no_flatfield,
        darkfield=_darkfield(args),
        gains=not args.no_gains,
        offsets=args.offsets,
        reference=args.reference,
        max_planes=args.max_planes,
        ramp=args.ramp,
    )
    out = corr.save(args.output)
    _out(f"corrections:  {out}")
    if corr.gains is not None:
        g = corr.gains
        ref = corr.info["reference"]
        _out(f"gains:        {g.min():.4g} .. {g.max():.4g} (reference tile {ref})")
    before = {c: ts.seam_metric(c).score for c in range(ts.n_channels)}
    after = ts.correct(corr)
    for c, v in before.items():
        _out(f"seam metric channel {c}: {v:.3f} -> {after.seam_metric(c).score:.3f} (1 = seamless)")
    if args.qc_png:
        corr.to_png(args.qc_png)
        _out(f"QC picture:   {args.qc_png}")
    return 0


def _fusion_options(args: argparse.Namespace, **defaults: Any) -> FusionOptions:
    """`FusionOptions` from the command's arguments (those it has)."""
    keys = ("blend", "blend_width")
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    return FusionOptions(**{**defaults, **given})


def _output_options(args: argparse.Namespace, **defaults: Any) -> OutputOptions:
    """`OutputOptions` from the command's arguments (those it has)."""
    given: dict[str, Any] = {}
    for key in ("levels", "version", "compression", "name", "overwrite", "allow_large_output"):
        if getattr(args, key, None) is not None:
            given[key] = getattr(args, key)
    for key in ("chunks", "shards"):
        if getattr(args, key, None):
            given[key] = tuple(getattr(args, key))
    if "shards" not in given and given.get("version", "0.5") == "0.4":
        given["shards"] = False
    return OutputOptions(**{**defaults, **given})


def _exec_options(args: argparse.Namespace) -> ExecOptions:
    """`ExecOptions` from the command's arguments."""
    return ExecOptions(
        workers=getattr(args, "workers", None),
        client=getattr(args, "client", None),
        progress=not getattr(args, "no_progress", False),
    )


#: how long ``--scheduler`` waits for the scheduler to answer
SCHEDULER_TIMEOUT = "20s"


def _connect(address: str) -> Any:
    """A dask.distributed Client for ``--scheduler ADDRESS`` (a clear error when unreachable)."""
    try:
        from distributed import Client
    except ImportError as exc:
        msg = "--scheduler needs dask.distributed: pip install 'tilefuse[distributed]'"
        raise TilefuseError(msg) from exc
    try:
        return Client(address, timeout=SCHEDULER_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        msg = f"cannot reach the dask scheduler at {address} (--scheduler): {exc}"
        raise TilefuseError(msg) from None


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.6g}" for x in v) + ")"


def _register(ts: Tileset, args: argparse.Namespace) -> tuple[Tileset, Any]:
    reg, report = ts.register(
        channel=args.channel,
        preset=args.preset,
        min_ncc=args.min_ncc,
        workers=getattr(args, "workers", None),
        client=getattr(args, "client", None),
        progress=not getattr(args, "no_progress", False),
    )
    kept = sum(k.kept for k in report.links)
    move = float(np.abs(reg.offsets - ts.offsets).max(initial=0.0))
    logger.info(
        "registered %d tiles: %d of %d links kept, largest correction %.3g um",
        len(reg),
        kept,
        len(report.links),
        move,
    )
    return reg, report


def cmd_register(args: argparse.Namespace) -> int:
    """Register the tiles and write the result as BigStitcher XML."""
    ts = _open(args)
    if args.correct:
        ts = _corrected(ts, args.correct)
    reg, report = _register(ts, args)
    from_project = all("setups" in t.metadata for t in ts)
    if from_project:
        out = reg.to_bigstitcher_xml(args.output, report=report, overwrite=args.overwrite)
    else:  # a new project: per-tile BDV-HDF5 next to the XML
        _, out = reg.to_bdv(Path(args.output).with_suffix(".h5"), overwrite=args.overwrite)
    if args.report_png:
        report.to_png(args.report_png, reg)
    _out(f"registered positions: {out}")
    return 0


def _set_display_window(group: Any, ts: Tileset) -> None:
    """OMERO display window per channel: global 1-99.9 percentiles from a bounded sample."""
    window = ts.intensity_range((1.0, 99.9))
    pairs = [[float(lo), float(hi) if hi > lo else float(lo) + 1.0] for lo, hi in window]
    group.set_attribute("window", pairs if len(pairs) > 1 else pairs[0])


def cmd_stitch(args: argparse.Namespace) -> int:
    """Fuse a tileset into OME-Zarr."""
    ts = _open(args)
    if args.correct:
        ts = _corrected(ts, args.correct)
    if args.register:
        ts, _ = _register(ts, args)
    t0 = time.perf_counter()
    group = ts.fuse(
        args.output,
        options=_fusion_options(args),
        output_options=_output_options(args, name=_input_name(args.input)),
        exec_options=_exec_options(args),
    )
    _set_display_window(group, ts)
    shape = group[0].shape
    dt = time.perf_counter() - t0
    nbytes = int(np.prod(shape)) * group[0].dtype.itemsize
    logger.info(
        "wrote %s: %d level(s), level 0 %s %s, %.1f MB in %.1f s (%.1f MB/s)",
        args.output,
        group.n_levels,
        shape,
        group[0].dtype,
        nbytes / 1e6,
        dt,
        nbytes / 1e6 / dt,
    )
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    """Deduplicate per-tile label IDs and write globally consistent fused labels."""
    from tilefuse.objects import object_table

    ts = _open(args)
    mapping = ts.dedup_labels(
        min_overlap_voxels=args.min_overlap,
        min_overlap_fraction=args.min_fraction,
        mutual_best=args.mutual_best,
        workers=args.workers,
        client=args.client,
        progress=not args.no_progress,
    )
    n_local = sum(len(lut) for lut in mapping.luts)
    logger.info("%d per-tile labels -> %d objects", n_local, mapping.n_objects)
    if args.mapping:
        mapping.save(args.mapping)
    group = ts.fuse_labels(
        args.output,
        mapping=mapping,
        options=FusionOptions(blend=args.rule),
        resample="nearest" if args.resample_nearest else None,
        output_options=_output_options(args),
        exec_options=_exec_options(args),
    )
    assert not isinstance(group, np.ndarray)  # written to args.output
    _out(f"objects:       {mapping.n_objects} (from {n_local} per-tile labels in {len(ts)} tiles)")
    _out(f"fused labels:  {group.path} (levels {[tuple(a.shape) for a in group.levels]})")
    if args.table:
        table = object_table(group, workers=args.workers, client=args.client)
        table.to_csv(args.table)
        _out(f"objects table: {args.table} ({len(table)} rows)")
    return 0


def cmd_export_bdv(args: argparse.Namespace) -> int:
    """Export tiles (for BigStitcher) or the fused volume as BigDataViewer HDF5 + XML."""
    ts = _open(args)
    if args.correct:
        ts = _corrected(ts, args.correct)
    out = Path(args.output)
    fmt: Literal["hdf5", "n5"] = args.output_format or (
        "n5" if out.suffix.lower() == ".n5" else "hdf5"
    )
    if not args.fused:
        h5, xml = ts.to_bdv(
            out,
            output_options=_output_options(args),
            exec_options=_exec_options(args),
            format=fmt,
        )
        _out(f"{len(ts)} tiles -> {h5} + {xml} (open the XML in BigStitcher)")
        return 0
    h5, xml = ts.to_bdv(
        out,
        fused=True,
        options=_fusion_options(args),
        output_options=_output_options(args),
        exec_options=_exec_options(args),
        format=fmt,
    )
    _out(f"fused {len(ts)} tiles -> {h5} + {xml} (open the XML in BigDataViewer)")
    return 0


def _positive(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected an integer >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _parse_size(text: str) -> float:
    """``"2GB"``, ``"500M"``, ``"1.5g"`` or a plain number of bytes -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        msg = f"--size: expected a size such as 500MB or 2GB, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return float(m.group(1)) * 1000 ** " kmgt".index(m.group(2) or " ")


def _matches_sample(group: Any, sample: Any, block: int = 256) -> bool:
    """Compare level 0 of ``group`` with ``sample``, one (z, block, block) column at a time."""
    nz, ny, nx = sample.shape
    if tuple(group[0].shape) != (nz, ny, nx):
        return False
    for y in range(0, ny, block):
        for x in range(0, nx, block):
            region = (slice(0, nz), slice(y, min(y + block, ny)), slice(x, min(x + block, nx)))
            if not np.array_equal(group.read(region), sample.image(region)):
                logger.error("fused block %s differs from the ground truth", region)
                return False
    return True


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the synthetic mosaic and stitch it."""
    from tilefuse.demo import DEFAULT_TILE_SHAPE, tile_shape_for_size, write_demo
    from tilefuse.tileset import Tileset

    folder = Path(args.folder)
    grid = (args.rows, args.cols)
    tile_shape = tile_shape_for_size(args.size, grid) if args.size else DEFAULT_TILE_SHAPE
    t0 = time.perf_counter()
    demo = write_demo(folder, grid=grid, tile_shape=tile_shape, seed=args.seed)
    vs = (0.4, 0.17, 0.17)
    ts = Tileset.from_tileconfig(demo.tileconfig, voxel_size=vs)
    logger.info(
        "wrote %r in %.1f s, %d overlapping pairs",
        ts,
        time.perf_counter() - t0,
        len(ts.overlaps()),
    )
    out = folder / "fused.ome.zarr"
    t0 = time.perf_counter()
    progress = not args.no_progress
    group = ts.fuse(
        out,
        blend="linear",
        levels=3,
        workers=args.workers,
        progress=progress,
        overwrite=True,
        name="demo",
    )
    labels_ts = Tileset.from_tileconfig(demo.labels_tileconfig, voxel_size=vs)
    mapping = labels_ts.dedup_labels(progress=progress)
    cells = labels_ts.fuse_labels(
        out, mapping=mapping, name="cells", workers=args.workers, progress=progress
    )
    assert not isinstance(cells, np.ndarray)  # written into the store
    n_true = demo.sample.n_objects
    exact = _matches_sample(group, demo.sample)
    logger.info(
        "fused %s into %s in %.1f s; equals the ground-truth volume: %s",
        tuple(group[0].shape),
        out,
        time.perf_counter() - t0,
        exact,
    )
    _out(f"demo tiles:     {demo.tileconfig} ({len(ts)} tiles of {tile_shape})")
    _out(f"label tiles:    {demo.labels_tileconfig} ({len(labels_ts)} tiles, per-tile ids)")
    _out(
        f"objects:        {mapping.n_objects} after dedup ({n_true} in the ground truth), "
        f"fused into {cells.path}"
    )
    _out(f"fused OME-Zarr: {out} (levels {[tuple(a.shape) for a in group.levels]})")
    _out(f"matches ground truth exactly: {exact}")
    return 0 if exact and mapping.n_objects == n_true else 1


BLEND_HELP = (
    "how overlapping tiles combine: linear (feathered ramps), overwrite (the last tile wins), "
    "max, mean, or centre (each voxel from the tile whose centre is nearest: no blending, "
    "the choice for labels)"
)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Show option defaults (unless None/False or the help says it); keep epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit status 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        """Print ``PROG: error: MESSAGE (see PROG --help)`` on one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tilefuse`` command."""
    p = _Parser(
        prog="tilefuse",
        description="Stitch overlapping 3D microscope tiles. Errors print one line and exit 2; "
        "Ctrl-C exits 130 (rerun the same stitch or dedup command to resume).",
    )
    p.add_argument("--version", action="version", version=f"tilefuse {__version__}")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging; tracebacks on errors"
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    from tilefuse.io.registry import reader_names, supported_inputs

    formats = f"input formats (detected by suffix and content, or --format):\n{supported_inputs()}"

    def add_input(sp: argparse.ArgumentParser) -> None:
        sp.epilog = formats
        sp.add_argument("input", help="the tiles: a file or folder in one of the formats below")
        sp.add_argument(
            "--format", choices=reader_names(), help="read INPUT as this format (skip detection)"
        )
        sp.add_argument(
            "--positions",
            metavar="FILE",
            help="positions file (.csv or exm .npy) for a folder of tile files",
        )
        sp.add_argument(
            "--voxel-size",
            type=float,
            nargs=3,
            metavar=("Z", "Y", "X"),
            help="voxel size in micrometres (TileConfiguration positions are pixels)",
        )
        sp.add_argument(
            "--skip-missing", action="store_true", help="skip listed tiles that are absent"
        )
        sp.add_argument(
            "--timepoint", type=int, help="timepoint to read (ND2, OME-Zarr, BigStitcher; "
            "default: the first)"
        )  # fmt: skip
        sp.add_argument("--angle", type=int, help="BigStitcher angle id (when there are several)")
        sp.add_argument(
            "--channels", nargs="+", metavar="C", help="keep these channels (indices or names)"
        )
        sp.add_argument(
            "--world-unit",
            type=float,
            nargs=3,
            metavar=("Z", "Y", "X"),
            dest="world_unit",
            help="BigStitcher XML: micrometres per world unit (z, y, x); default: from the "
            "calibration transform, or the voxel size when there is none (pixel world)",
        )
        sp.add_argument(
            "--allow-incomplete",
            action="store_true",
            help="read an unfinished (interrupted) tilefuse store as input anyway",
        )

    def add_large(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--allow-large-output",
            action="store_true",
            help="write an output of more than 100x the tiles' voxels (refused by default)",
        )

    def add_scheduler(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--scheduler",
            metavar="ADDRESS",
            help="run on this dask.distributed scheduler (e.g. tcp://10.0.0.5:8786) instead of "
            "local threads; see docs/cluster.md",
        )

    def add_registration(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--channel", type=int, default=0, help="channel to register on")
        sp.add_argument(
            "--preset",
            default="strict",
            choices=["strict", "relaxed"],
            help="link acceptance rules: strict drops doubtful links, relaxed keeps more",
        )
        sp.add_argument(
            "--min-ncc", type=float, default=0.5, help="minimum correlation (NCC) of a kept link"
        )

    sp = sub.add_parser("info", help="describe a tileset")
    add_input(sp)
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.add_argument("--seams", action="store_true", help="measure the seam metric (1 = seamless)")
    sp.add_argument(
        "--correct", metavar="NPZ|auto", help="with --seams: also measure after these corrections"
    )
    sp.add_argument(
        "--fused",
        metavar="OME_ZARR",
        help="with --seams: also measure this fusion of the tiles, at the tile edges",
    )
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("correct", help="estimate flat-field and per-tile gains (.npz)")
    add_input(sp)
    sp.add_argument("-o", "--output", required=True, help="output corrections .npz")
    sp.add_argument("--flatfield", help="use this flat-field (.npy/.tif) instead of estimating")
    sp.add_argument("--no-flatfield", action="store_true", help="no shading correction")
    sp.add_argument(
        "--darkfield",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also estimate a dark-field (needs planes of varied brightness; default off)",
    )
    sp.add_argument("--darkfield-file", help="use this dark-field (.npy/.tif)")
    sp.add_argument(
        "--dark-level",
        type=float,
        metavar="COUNTS",
        help="a constant dark level to subtract (the camera's offset), instead of a dark-field",
    )
    sp.add_argument("--no-gains", action="store_true", help="no tile-to-tile equalisation")
    sp.add_argument("--offsets", action="store_true", help="also solve an offset per tile")
    sp.add_argument("--reference", type=int, help="tile kept at gain 1 (default: best linked)")
    sp.add_argument("--max-planes", type=int, default=200, help="planes sampled for shading")
    sp.add_argument(
        "--ramp",
        default="auto",
        choices=RAMPS,
        help="decide the flat-field's log-linear ramp (invisible to overlaps): auto (the "
        "sample's, where significant), centred (symmetric optics), content, gains (no gain "
        "trend across the mosaic); default auto",
    )
    sp.add_argument("--qc-png", help="write a QC picture of the profiles and gains here")
    sp.set_defaults(func=cmd_correct)

    sp = sub.add_parser("stitch", help="fuse a tileset into OME-Zarr")
    add_input(sp)
    sp.add_argument("-o", "--output", required=True, help="output .ome.zarr folder")
    sp.add_argument("--blend", default=FusionOptions.blend, choices=blend_names(), help=BLEND_HELP)
    sp.add_argument(
        "--blend-width",
        type=float,
        default=None,
        help="linear ramp width in micrometres (default: 10%% of the median tile extent)",
    )
    sp.add_argument(
        "--levels", type=_positive, default=3, help="pyramid levels (1 = full resolution)"
    )
    sp.add_argument(
        "--chunks",
        type=_positive,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="output chunk shape in voxels (default: chosen from the volume and dtype)",
    )
    sp.add_argument(
        "--shards",
        type=_positive,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="output shard shape, NGFF 0.5 only (default: chosen; one shard per work block)",
    )
    sp.add_argument(
        "--ngff-version",
        dest="version",
        default=OutputOptions.version,
        choices=["0.5", "0.4"],
        help="OME-NGFF version of the output (0.5: zarr v3, sharded; 0.4: zarr v2)",
    )
    sp.add_argument(
        "--compression",
        default=OutputOptions.compression,
        choices=["default", "fast", "archive", "none"],
        help="output codec: blosc-zstd1 (default), blosc-lz4 (fast), blosc-zstd5 (archive)",
    )
    sp.add_argument("--workers", type=_positive, default=None, help="threads (default: all CPUs)")
    add_scheduler(sp)
    sp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (only once the new one is complete)",
    )
    sp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_large(sp)
    add_registration(sp)
    sp.add_argument("--register", action="store_true", help="register the tiles before fusing")
    sp.add_argument(
        "--correct",
        metavar="NPZ|auto",
        help="intensity corrections from 'tilefuse correct', or 'auto' to estimate them",
    )
    sp.set_defaults(func=cmd_stitch)

    sp = sub.add_parser("register", help="register tiles; write BigStitcher XML")
    add_input(sp)
    sp.add_argument(
        "-o",
        "--output",
        required=True,
        help="output .xml (for a project input: a copy with a registration transform added and "
        "StitchingResults; otherwise a new project with per-tile BDV-HDF5 beside it)",
    )
    add_registration(sp)
    sp.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="threads for the pairwise step (default: all)",
    )
    add_scheduler(sp)
    sp.add_argument("--report-png", help="draw tiles and links coloured by quality here")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing output")
    sp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sp.add_argument(
        "--correct",
        metavar="NPZ|auto",
        help="intensity corrections from 'tilefuse correct', or 'auto' to estimate them",
    )
    sp.set_defaults(func=cmd_register)

    sp = sub.add_parser("dedup", help="give objects spanning several label tiles one ID")
    add_input(sp)
    sp.add_argument(
        "-o",
        "--output",
        required=True,
        help="an OME-Zarr image from 'stitch' (labels go to its labels/ group) or a new .ome.zarr",
    )
    sp.add_argument("--name", default="labels", help="label image name inside labels/")
    sp.add_argument("--min-overlap", type=int, default=1, help="min shared voxels for a link")
    sp.add_argument(
        "--min-fraction",
        type=float,
        default=0.5,
        help="min shared fraction of the smaller object within the overlap",
    )
    sp.add_argument("--mutual-best", action="store_true", help="link only mutual best partners")
    sp.add_argument(
        "--rule",
        default="centre",
        choices=label_safe_names(),
        help="where tiles overlap, take each voxel's label from the tile whose centre is "
        "nearest (centre) or from the last tile (overwrite); labels are never blended",
    )
    sp.add_argument(
        "--resample-nearest",
        action="store_true",
        help="place labels on an existing image of another voxel grid by nearest neighbour "
        "(default: refuse, naming both grids)",
    )
    sp.add_argument(
        "--levels", type=_positive, default=None, help="pyramid levels (default: image's)"
    )
    sp.add_argument("--table", help="write an objects table (CSV) here")
    sp.add_argument("--mapping", help="save the per-tile ID mapping (.npz) here")
    sp.add_argument("--workers", type=_positive, default=None, help="threads (default: all CPUs)")
    add_scheduler(sp)
    sp.add_argument("--overwrite", action="store_true", help="replace existing labels")
    sp.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    sp.set_defaults(func=cmd_dedup)

    sp = sub.add_parser("export-bdv", help="write BigDataViewer HDF5 + XML (per tile, or fused)")
    add_input(sp)
    sp.add_argument(
        "-o", "--output", required=True,
        help="output .h5, or .n5 folder (the .xml goes beside it)",
    )  # fmt: skip
    sp.add_argument(
        "--output-format",
        choices=["hdf5", "n5"],
        help="BigDataViewer HDF5 or N5 (one file per chunk; needs tilefuse[n5]); default: "
        "from the output suffix (.n5 -> n5). --format names the INPUT's format",
    )
    sp.add_argument("--fused", action="store_true", help="export the fused volume, not the tiles")
    sp.add_argument(
        "--blend",
        default=FusionOptions.blend,
        choices=blend_names(),
        help="with --fused: " + BLEND_HELP,
    )
    sp.add_argument(
        "--levels", type=_positive, default=None, help="max pyramid levels (default: BDV's)"
    )
    add_large(sp)
    sp.add_argument("--workers", type=_positive, default=None, help="threads (default: all CPUs)")
    add_scheduler(sp)
    sp.add_argument("--overwrite", action="store_true", help="replace an existing output")
    sp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sp.add_argument(
        "--correct",
        metavar="NPZ|auto",
        help="intensity corrections from 'tilefuse correct', or 'auto' to estimate them",
    )
    sp.set_defaults(func=cmd_export_bdv)

    sp = sub.add_parser(
        "demo",
        help="generate a synthetic mosaic and stitch it",
        description="Write a synthetic ExM-like mosaic (TIFF tiles, per-tile labels, Fiji "
        "TileConfiguration files) into FOLDER, stitch it into FOLDER/fused.ome.zarr, "
        "deduplicate the labels into its labels/cells, and check both against the ground "
        "truth (exit 1 if they differ). More rows/columns make a bigger sample; tiles are "
        "generated and checked block by block, so memory does not grow with --size.",
    )
    sp.add_argument("folder", help="output folder (created; its demo files are replaced)")
    sp.add_argument("--rows", type=_positive, default=3, help="tile rows (y)")
    sp.add_argument("--cols", type=_positive, default=3, help="tile columns (x)")
    sp.add_argument(
        "--size",
        type=_parse_size,
        default=None,
        help="total size of the image tiles, e.g. 500MB or 2GB (sets the tile size; "
        "default: tiles of 40 x 192 x 192 voxels)",
    )
    sp.add_argument("--seed", type=int, default=0, help="random seed of the sample")
    sp.add_argument("--workers", type=_positive, default=None, help="threads (default: all CPUs)")
    sp.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    sp.set_defaults(func=cmd_demo)
    return p


#: Python keyword names in library messages whose CLI flag is not ``--`` + the name
_API_FLAGS = {
    "world_unit_um": "--world-unit",
    "offsets": "--positions",
    "version": "--ngff-version",
    "min_overlap_voxels": "--min-overlap",
    "min_overlap_fraction": "--min-fraction",
}
#: commands whose interrupted output a rerun of the same command completes
_RESUMABLE = {"stitch", "dedup"}


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of one subcommand."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return cast("argparse.ArgumentParser", actions[0].choices[command])


def _flags_of(parser: argparse.ArgumentParser, command: str | None) -> dict[str, str]:
    """``{python_name: --flag}`` for the options of ``command``."""
    sub = _subparser(parser, command) if command else None
    flags: dict[str, str] = {}
    for action in sub._actions if sub is not None else []:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs:
            flags[action.dest] = longs[0]
            flags[longs[0][2:].replace("-", "_")] = longs[0]
    for name, flag in _API_FLAGS.items():
        if flag in flags.values():
            flags[name] = flag
    return flags


def _speak_cli(message: str, flags: dict[str, str]) -> str:
    """Rewrite library wording (``pass overwrite=True``) into the command's flags."""
    import re

    def flag(m: re.Match[str]) -> str:
        name = m.group(1)
        return (
            flags[name]
            + (" " if m.group(2) not in ("", "True") else "")
            + ("" if m.group(2) in ("", "True") else m.group(2))
        )

    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    if names:
        message = re.sub(rf"(?<![\w.-])({names})=(True\b|[^\s,;)]*)", flag, message)

    def option_list(m: re.Match[str]) -> str:  # "takes no option voxel_size; it takes a, b"
        words = [w.strip() for w in m.group(2).split(",")]
        return m.group(1) + ", ".join(flags.get(w, w) for w in words)

    message = re.sub(r"(takes no options? |it takes )([a-z_]+(?:, [a-z_]+)*)", option_list, message)
    return " ".join(message.split())  # one line


class _CliWords(logging.Filter):
    """Rewrite library wording into flags in log records too (warnings name --flags)."""

    def __init__(self, flags: dict[str, str]) -> None:
        super().__init__()
        self.flags = flags

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _speak_cli(record.getMessage(), self.flags), None
        return True


def _unknown_arguments(parser: argparse.ArgumentParser, command: str, extra: list[str]) -> None:
    """Refuse unknown arguments in one line, suggesting the nearest option of ``command``."""
    import difflib

    sub = _subparser(parser, command)
    known = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for arg in (a.split("=")[0] for a in extra if a.startswith("--")):
        if arg == "--version" and "--ngff-version" in known:
            hints.append("the NGFF version is --ngff-version; tilefuse --version is the program's")
        elif close := difflib.get_close_matches(arg, known, n=1):
            hints.append(f"did you mean {close[0]}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    sub.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


def _check_output_parent(args: argparse.Namespace) -> None:
    out = getattr(args, "output", None)
    if out is None:
        return
    parent = Path(out).absolute().parent
    if args.command in ("stitch", "dedup") and Path(out).is_file():
        msg = f"-o {out} is a file; {args.command} writes an OME-Zarr folder: choose another name"
        raise OutputExistsError(msg)
    if not parent.is_dir():
        msg = (
            f"-o {out}: the folder {parent} does not exist; create it first "
            "(tilefuse does not create it, so that a typo is not silently accepted)"
        )
        raise MissingTileError(msg)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Every error ends in one line on stderr and exit status 2: tilefuse's own errors, OS errors
    (a full disk, a read-only folder), unexpected ones (``-v`` shows the traceback). Ctrl-C
    exits 130, saying when a rerun of the same command resumes the output.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown_arguments(parser, args.command, extra)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    flags = _flags_of(parser, args.command)
    for handler in logging.getLogger().handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, _CliWords)]
        handler.addFilter(_CliWords(flags))
    logging.captureWarnings(True)  # Python warnings as one log line each, not two
    args.client = None
    try:
        _check_output_parent(args)
        if getattr(args, "scheduler", None):
            args.client = _connect(args.scheduler)
        return int(args.func(args))
    except KeyboardInterrupt:
        hint = (
            "; rerun the same command to resume"
            if args.command in _RESUMABLE
            else "; nothing was finished"
        )
        sys.stderr.write(f"tilefuse {args.command}: interrupted{hint}\n")
        # zarr's event loop reports the reads it abandoned as it shuts down: not news
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        return 130
    except BrokenPipeError:  # e.g. `tilefuse info ... | head`: stop writing, quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        sys.stderr.write(f"tilefuse {args.command}: error: output closed early (broken pipe)\n")
        return 2
    except Exception as e:
        if args.verbose:
            logger.exception("tilefuse %s failed", args.command)
        kind = "" if isinstance(e, TilefuseError) else f"{type(e).__name__}: "
        text = _speak_cli(f"{kind}{e}", flags)
        more = "" if isinstance(e, (TilefuseError, OSError)) or args.verbose else " (-v: traceback)"
        sys.stderr.write(f"tilefuse {args.command}: error: {text}{more}\n")
        return 2
    finally:
        if args.client is not None:
            args.client.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
