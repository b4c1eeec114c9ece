"""`python -m experiments.effects`: the effects of one experiment's runs under a root, as a table or
JSON; with `--grid params.yaml`, the DVC stage `effects`, from the grid's score files."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from engine.cli import Parser, error_boundary
from experiments.effects import (
    FRAMES,
    EffectsError,
    effects_of_runs,
    find_runs,
    pick_experiment,
    to_text,
)
from experiments.effects.stage import write_grid_effects
from experiments.scorefiles import BIAS_MATRIX, read_csv


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python -m experiments.effects", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", type=Path, help="a folder of run folders (ours or pytti's)")
    where.add_argument("--grid", type=Path, metavar="PARAMS",
                       help="the DVC stage: the grid of this params file from its score files, written to "
                            "experiments/scores/effects.json")
    parser.add_argument("--experiment", help="the experiment to analyse (default: the only one)")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    parser.add_argument("--frames", choices=FRAMES, default="final",
                        help="the final frame of each run (default), or the mean over its frames")
    parser.add_argument("--scores", type=Path,
                        help="the score stage's folder for similarities (default: <root>/../scores where it exists)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.grid is not None:
        return error_boundary(lambda: write_grid_effects(args.grid))
    return error_boundary(lambda: print_effects(args))


def print_effects(args: argparse.Namespace) -> None:
    """The command: the effects of one experiment under --root, as a table or JSON."""
    if not args.root.is_dir():
        raise EffectsError(f"--root {args.root}: no such folder")
    if args.scores is not None and not args.scores.is_dir():
        raise EffectsError(f"--scores {args.scores}: no such folder")
    runs = find_runs(args.root)
    experiment = pick_experiment(runs, args.experiment, args.root)
    scores = args.scores or args.root.resolve().parent / "scores"
    effects = effects_of_runs(runs, experiment, args.frames, read_csv(scores, BIAS_MATRIX))
    print(json.dumps(effects, indent=2) if args.json else to_text(effects))


if __name__ == "__main__":
    sys.exit(main())
