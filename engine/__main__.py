"""Command line: `python -m engine {models,fetch,run,bench,gpucheck}`."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from engine.cli import Parser, error_boundary
from engine.errors import InputError


def cmd_models(args: argparse.Namespace) -> None:
    """List every VQGAN and perceptor with whether it is cached and its size."""
    from engine import cache
    from engine.factory import model_table

    rows = [r for r in model_table() if args.kind in (None, r["kind"])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"cache: {cache.cache_dir()}   user models file: {cache.user_models_file()}")
    for kind in ("vqgan", "perceptor"):
        kind_rows = [r for r in rows if r["kind"] == kind]
        if not kind_rows:
            continue
        print(f"\n{kind.upper()}S ({len(kind_rows)})")
        width = max(len(r["name"]) for r in kind_rows)
        for r in kind_rows:
            size = f"{r['size_mb']:8.1f} MB" if r["size_mb"] is not None else "       ? MB"
            state = "cached " if r["cached"] else "-      "
            flag = "  UNTRAINED (random weights, tests/demos only)" if r["untrained"] else ""
            aliases = f"  aliases: {', '.join(r['aliases'])}" if r["aliases"] and kind == "vqgan" else ""
            print(f"  {r['name']:<{width}}  {state} {size}  slug={r['slug']}{flag}{aliases}")


def cmd_fetch(args: argparse.Namespace) -> None:
    """Download (and verify) models ahead of time."""
    from engine.factory import fetch

    for name in args.names:
        for path in fetch(name, progress=not args.quiet, relock=args.relock):
            print(f"{name}: {path}")


def cmd_run(args: argparse.Namespace) -> None:
    """Run one optimisation (resuming it if it was interrupted)."""
    from engine.loop import execute
    from engine.settings import load_config

    print(execute(load_config(args.config, args.overrides), quiet=args.quiet))


def cmd_bench(args: argparse.Namespace) -> None:
    """Time the engine's step beside the bare model compute, the canonical fp32 notebook step and the
    hardware limit (random weights, no download); `--cells K`: K cells sharing one device."""
    from engine.bench import bench, cells, cells_report, report
    from engine.device import pick_device
    from engine.settings import load_config

    check_counts(args, cells=0, steps=1, warmup=0, repeats=1)
    overrides = ["cutouts=60", "vqgan_model=imagenet_16384", "perceptors=ViT-B-32:openai", *args.overrides]
    if args.device:
        overrides.append(f"device={args.device}")
    settings = load_config(args.config, overrides)
    both = (pick_device(settings.device).type == "cuda"
            and not any(o.startswith("precision=") for o in args.overrides))
    result = bench(settings, warmup=args.warmup, repeats=args.repeats, both_precisions=both)
    if args.cells:
        result["cells"] = [cells(replace(settings, precision=p), args.cells, steps=args.steps)
                           for p in result["precisions"]]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(report(result))
    for row in result.get("cells", []):
        print(cells_report(row))


def cmd_gpucheck(args: argparse.Namespace) -> None:
    """Check on a CUDA GPU what a CPU cannot show (determinism, syncs, bf16, layouts, bench, cluster)."""
    from engine.gpucheck import cuda_device, report

    print(report(cuda_device(args.device)))


def check_counts(args: argparse.Namespace, **least: int) -> None:
    """Refuse, before any work, an integer option below its least allowed value."""
    for name, low in least.items():
        value = getattr(args, name)
        if value < low:
            raise InputError(f"--{name} {value}: must be >= {low}")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list VQGAN models and CLIP perceptors")
    p.add_argument("--kind", choices=["vqgan", "perceptor"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("fetch", help="download models ahead of time")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--relock", action="store_true",
                   help="forget the models' recorded checksums and trust their files as they are now "
                        "(after a legitimate re-upload); the files are still checked as before")
    p.set_defaults(func=cmd_fetch)
    for name, func, text in (("run", cmd_run, "run one optimisation"),
                             ("bench", cmd_bench, "benchmark the step (random weights)")):
        p = sub.add_parser(name, help=text, description=func.__doc__)
        p.add_argument("--config", help="settings file: YAML/JSON, or a pytti _settings.txt")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="settings (values parsed as YAML)")
        if name == "run":
            p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        else:
            p.add_argument("--warmup", type=int, default=1)
            p.add_argument("--repeats", type=int, default=5)
            p.add_argument("--json", action="store_true")
            p.add_argument("--device", help="shorthand for device=...; on CUDA both fp32 and bf16 are timed "
                           "unless precision= is given")
            p.add_argument("--cells", type=int, default=0, metavar="K",
                           help="also run K cells as K processes sharing the device: cell-steps/s, peak memory")
            p.add_argument("--steps", type=int, default=10, help="timed steps per cell with --cells")
        p.set_defaults(func=func)
    p = sub.add_parser("gpucheck", help="check the CUDA path on this machine's GPU (about 10 minutes)",
                       description=cmd_gpucheck.__doc__)
    p.add_argument("--device", default="cuda", help="the CUDA device to check (default: cuda)")
    p.set_defaults(func=cmd_gpucheck)
    args = parser.parse_args(argv)
    return error_boundary(lambda: args.func(args), "interrupted: a run resumes from its last saved frame "
                          "when the same command is run again")


if __name__ == "__main__":
    sys.exit(main())
