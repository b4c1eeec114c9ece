"""Command line: `python -m dashboard {catalog,serve,export} --root DIR ...`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli import Parser, error_boundary
from engine.errors import InputError

from .grid import AXES, SETTING, current_axis


def level(value: str) -> tuple[str, str]:
    """(setting, level) of `--level SETTING=LEVEL`."""
    setting, sep, chosen = value.partition("=")
    if not (setting and sep and chosen):
        raise argparse.ArgumentTypeError(f"{value}: give SETTING=LEVEL, e.g. scenes=city")
    return setting, chosen


def build_parser() -> argparse.ArgumentParser:
    """The command line's three commands and their options."""
    parser = Parser(prog="python -m dashboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    catalog = commands.add_parser("catalog", help="list the runs under a root folder")
    catalog.add_argument("--json", action="store_true",
                         help="print every field as JSON (loss tables only with --losses)")
    catalog.add_argument("--losses", action="store_true",
                         help="read each run's losses.csv (the loss tables, the loss at each "
                              "frame, the last loss of unfinished runs)")

    serve = commands.add_parser("serve", help="serve the dashboard")
    serve.add_argument("--port", type=int, default=5006)
    serve.add_argument("--address", default="127.0.0.1",
                       help="interface to bind (default localhost only; 0.0.0.0 exposes it)")
    serve.add_argument("--allow-websocket-origin", action="append", default=[],
                       metavar="HOST[:PORT]", help="another origin allowed to open the app")
    serve.add_argument("--scores", help="folder of score files (default <root>/../scores)")
    serve.add_argument("--show", action="store_true", help="open a browser")

    export = commands.add_parser("export", help="write a static page that plays the grid offline")
    export.add_argument("--out", required=True, help="folder (index.html + assets/) or X.html")
    export.add_argument("--rows", type=current_axis, default="vqgan",
                        help=f"row axis: {', '.join(AXES)}, a varied setting (scenes) or {SETTING}<key>")
    export.add_argument("--cols", type=current_axis, default="perceptor_set", help="column axis, as --rows")
    export.add_argument("--width", type=int, default=256, help="frame width in the sheets (px)")
    export.add_argument("--format", choices=["webp", "jpeg"], default="webp")
    export.add_argument("--quality", type=int, default=80)
    export.add_argument("--title", help="page title (default: VQGAN+CLIP grid: <experiments>)")
    export.add_argument("--compact", action="store_true",
                        help="fit a docs column of about 760 px: tiles scale to the page width")
    for option, what in (("--experiment", "experiment"), ("--vqgan", "VQGAN"),
                         ("--perceptor", "perceptor")):
        export.add_argument(option, action="append", metavar=what.upper(),
                            help=f"export only runs of this {what} (repeat for several; "
                                 "as the page's filters: default all)")
    export.add_argument("--level", action="append", type=level, metavar="SETTING=LEVEL",
                        help="export only runs at this level of a varied setting (repeat for several; "
                             "runs that did not vary it stay)")

    for sub in (catalog, serve, export):
        sub.add_argument("--root", required=True, help="folder of run folders")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return error_boundary(lambda: command(args))


def command(args: argparse.Namespace) -> None:
    """Run the parsed command."""
    if not Path(args.root).is_dir():
        raise InputError(f"--root {args.root}: no such folder; give the folder that holds the run "
                         "folders (or one run folder)")
    if args.command == "catalog":
        from .catalog import to_json, to_table
        from .state import RootState

        state = RootState.open(args.root)
        df = state.catalog()
        if args.losses:
            df = state.losses(df)
        print(to_json(df, args.losses) if args.json else to_table(df))
    elif args.command == "serve":
        from .server import serve as run_server

        run_server(args.root, args.scores, args.port, args.address, args.allow_websocket_origin,
                   args.show)
    else:
        from .export import export as write_export
        from .export import export_size

        levels: dict[str, list[str]] = {}
        for setting, chosen in args.level or ():
            levels.setdefault(setting, []).append(chosen)
        path = write_export(args.root, args.out, args.rows, args.cols, args.width, args.format,
                            args.quality, args.title, args.compact, experiments=args.experiment,
                            vqgans=args.vqgan, perceptors=args.perceptor, levels=levels or None)
        print(f"wrote {path} ({export_size(args.out) / 1e6:.1f} MB)")

if __name__ == "__main__":
    sys.exit(main())
