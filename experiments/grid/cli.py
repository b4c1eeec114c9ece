"""`python -m experiments.grid`: check params.yaml and list the cells; `suggest` prints grid entries."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli import Parser, error_boundary
from experiments.grid.dvcyaml import write_cell_stages
from experiments.grid.entries import resolve, suggest_entries
from experiments.grid.layout import PARAMS_FILE
from experiments.grid.model import Grid, GridError
from experiments.grid.params import load_grid


def suggest(names: list[str]) -> int:
    """Print the grid entries of model names (VQGANs, or perceptors joined by '+'); 1 if one is unknown."""
    from engine.registry import registry

    try:
        reg = registry()
    except ValueError as err:  # a broken user models file
        raise GridError(str(err)) from err
    problems: list[str] = []
    vqgans, perceptors = [], []
    for name in names:
        parts = name.split("+")
        if len(parts) == 1 and resolve("vqgan", name, reg, name, []) is not None:
            vqgans.append(name)
        elif all(resolve("perceptor", p, reg, name, problems) for p in parts):
            perceptors.append(name)
    for title, kind, found in (("vqgan_models", "vqgan", vqgans), ("perceptors", "perceptor", perceptors)):
        if found:
            print(f"  {title}:")
            for entry in suggest_entries(kind, found, reg):
                print(f"    {entry}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def print_cells(grid: Grid) -> None:
    """The grid's size, then one row per cell: folder, VQGAN, perceptors, each varied setting's
    level, seed, DVC stage."""
    flag = "  (UNTRAINED models: says nothing about real checkpoints)" if grid.untrained else ""
    varied = "".join(f"{len(levels)} {setting} × " for setting, levels in grid.vary.items())
    print(f"{len(grid.cells)} cells = {len(grid.vqgans)} VQGANs × {len(grid.perceptor_sets)} perceptor sets × "
          f"{varied}{len(grid.seeds)} seed{'s' * (len(grid.seeds) > 1)} ({', '.join(map(str, grid.seeds))}){flag}")
    print(f"cell folders in {grid.out_dir}/")
    rows = [("cell", "vqgan", "perceptors", *grid.vary, "seed", "DVC stage")]
    rows += [(c.name, c.vqgan.name, "+".join(p.name for p in c.perceptors), *(level for _, level in c.varied),
              str(c.seed), c.stage) for c in grid.cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[-1])


def check(params: str) -> None:
    """Validate params.yaml, make dvc.yaml's cell stages vary what grid.vary varies, list the cells."""
    grid = load_grid(params)
    dvc_yaml = Path(params).parent / "dvc.yaml"
    if dvc_yaml.is_file() and write_cell_stages(dvc_yaml, list(grid.vary)):
        print(f"{dvc_yaml}: cell stages rewritten to vary {', '.join(grid.vary) or 'nothing'} (grid.vary)")
    print_cells(grid)


def main(argv: list[str] | None = None) -> int:
    from experiments import grid as package

    parser = Parser(prog="python -m experiments.grid", description=package.__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=PARAMS_FILE)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("check", help="validate params.yaml, write dvc.yaml's cell stages for grid.vary, list the "
                   "cells (default)")
    names = sub.add_parser("suggest", help="print grid entries for model names (join perceptors with '+')")
    names.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "suggest":
        return error_boundary(lambda: suggest(args.names))
    return error_boundary(lambda: check(args.params))
