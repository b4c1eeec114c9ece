"""Command line: `python -m engine {models,fetch,run,bench,gpucheck}`."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import fields, replace
from typing import Any

from engine.cli import Parser, error_boundary
from engine.errors import InputError


def cmd_models(args: argparse.Namespace) -> None:
    """List every VQGAN and perceptor with whether it is cached, its size and its aliases; the
    untrained tiny models apart."""
    from engine import cache
    from engine.factory import model_table

    rows = [r for r in model_table() if args.kind in (None, r["kind"])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"cache: {cache.cache_dir()}   user models file: {cache.user_models_file()}")
    trained = {kind: [r for r in rows if r["kind"] == kind and not r["untrained"]] for kind in ("vqgan", "perceptor")}
    sections = [("VQGANS", trained["vqgan"], ""),
                ("PERCEPTORS", sorted(trained["perceptor"], key=lambda r: not r["aliases"]),
                 ": pytti's (OpenAI CLIP) first, with pytti's names as aliases"),
                ("UNTRAINED TINY MODELS", [r for r in rows if r["untrained"]],
                 ": random weights generated here, for tests and demos only")]
    for title, section, note in sections:
        if not section:
            continue
        print(f"\n{title} ({len(section)}){note}")
        width = max(len(r["name"]) for r in section)
        for r in section:
            size = f"{r['size_mb']:8.1f} MB" if r["size_mb"] is not None else "       ? MB"
            state = "cached " if r["cached"] else "-      "
            aliases = [a for a in r["aliases"] if a != r["name"]]
            also = f"  aliases: {', '.join(aliases)}" if aliases else ""
            kind = f"  {r['kind']}" if r["untrained"] else ""
            print(f"  {r['name']:<{width}}  {state} {size}  slug={r['slug']}{kind}{also}")


def cmd_fetch(args: argparse.Namespace) -> None:
    """Download (and verify) models ahead of time."""
    from engine.factory import fetch

    for name in args.names:
        for path in fetch(name, progress=not args.quiet, relock=args.relock):
            print(f"{name}: {path}")


def cmd_run(args: argparse.Namespace) -> None:
    """Run one optimisation (resuming it if it was interrupted)."""
    from engine.settings import load_config

    settings = load_config(args.config, args.overrides)  # bad settings are refused before torch loads
    from engine.loop import execute

    print(execute(settings, quiet=args.quiet))


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


SETTINGS_DOC = "docs/engine.md"
_NAME_WIDTH = 30  # `key=default` column of the settings listing


def settings_epilog(width: int = 100) -> str:
    """Every setting as `key=default  meaning`, grouped as docs/engine.md groups them."""
    from engine.settings import SETTING_GROUPS, Settings

    meaning = {f.name: f.metadata["meaning"] for f in fields(Settings)}
    defaults = Settings().to_dict()
    lines = [f"settings (key=value; values are read as YAML; {SETTINGS_DOC} explains each one):"]
    for group, names in SETTING_GROUPS.items():
        lines.append(f"\n{group}:")
        for name in names:
            key = f"  {name}={_yaml_value(defaults[name])}"
            text = textwrap.wrap(meaning[name], width - _NAME_WIDTH - 2)
            if len(key) < _NAME_WIDTH:
                lines.append(f"{key:<{_NAME_WIDTH}}  {text[0]}")
                text = text[1:]
            else:
                lines.append(key)
            lines += [" " * (_NAME_WIDTH + 2) + rest for rest in text]
    return "\n".join(lines)


def _yaml_value(value: Any) -> str:
    """A default as it would be typed after `key=`."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list):
        return "+".join(value)
    if value == "":
        return '""'
    return f"'{value}'" if isinstance(value, str) and " " in value else str(value)


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
        p = sub.add_parser(name, help=text, description=func.__doc__, epilog=settings_epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="settings file: YAML/JSON, or a pytti _settings.txt")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, listed below (later ones win)")
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
