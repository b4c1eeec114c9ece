"""Stages `cell@<vqgan>-<perceptor set>[-<level>...]` and `replicate@...-<seed>`: one optimisation of the grid.

    python -m experiments.run_cell VQGAN_SLUG PERCEPTOR_SET [--vary SETTING=LEVEL ...] [--seed N]

The cell's engine settings are params.yaml's `settings` plus its VQGAN, its perceptors, its level
of each setting of grid.vary, its seed (default settings.seed; N from grid.seeds for a replicate)
and its file namespace, the cell's name (`<experiment>__<vqgan>_<perceptors>`, then
`__<key>-<level>_...` for the varied settings and `__seed-<N>` for a replicate). The run works
in the partial folder (experiments/.partial/, or $VQCLIP_PARTIAL_DIR) and is moved to
`<out_dir>/<cell>/` (the stage's DVC output) only when complete: DVC deletes a stage's outputs
before running it, so an interrupted cell would otherwise lose its frames; this way the next
`dvc repro` resumes it from its last saved frame. The engine records `<out_dir>` as the run's
`out_dir` from the start, so the moved folder needs no edit. Its metrics.json is copied to
experiments/metrics/<cell>.json, a DVC metric.

One process per cell: the cell's lock (`.<cell>.cell.lock` in the partial folder) is held from
before the run until the cell is in place, so a second `run_cell` of the same cell (say, from
a new `dvc repro` while an orphaned one still runs) exits at once naming the holder's PID.
The finished folder is replaced only by a partial run that is complete with verified frames.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli import Parser, error_boundary
from experiments.grid import PARAMS_FILE, load_grid, partial_dir

if TYPE_CHECKING:
    from engine.settings import Settings


def run_cell(vqgan: str, set_key: str, params: str | Path = PARAMS_FILE, *, seed: int | None = None,
             varied: dict[str, str] | None = None,
             quiet: bool = True) -> Path:
    """Run one cell (resuming its partial run if any) and return its folder under out_dir."""
    from engine.locks import exclusive_lock
    from engine.settings import resolve_settings

    grid = load_grid(params)
    cell = grid.cell(vqgan, set_key, seed, varied)
    partial = partial_dir()
    settings = resolve_settings({**grid.engine_settings(cell, out_dir=partial), "allow_overwrite": True})
    untrained = " (UNTRAINED models)" if cell.untrained else ""
    print(f"cell {cell.name}: VQGAN {cell.vqgan.name} × perceptors {' + '.join(p.name for p in cell.perceptors)}, "
          f"seed {settings.seed}{untrained}", flush=True)
    with exclusive_lock(partial / f".{cell.name}.cell.lock", what=f"grid cell {cell.name}"):
        final = _run_and_move(settings, grid.cell_dir(cell), grid.out_dir, quiet)
    metrics = grid.metrics_file(cell)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(final / "metrics.json", metrics)
    print(f"cell {cell.name}: done -> {final}", flush=True)
    return final


def _run_and_move(settings: Settings, final: Path, out_dir: str, quiet: bool) -> Path:
    """Run (or resume) the cell in its partial folder; once complete and verified, move it to `final`."""
    from engine.loop import execute
    from engine.runfolder import RunFolder, RunFolderDamaged

    partial = RunFolder(settings.out_dir, settings.file_namespace)
    execute(settings, quiet=quiet, final_out_dir=out_dir)
    problems = partial.completion_problems()
    if problems:  # execute() returns only complete runs; this guards the finished cell all the same
        raise RunFolderDamaged(f"{partial.path}: {'; '.join(problems)}; the finished cell was left as it was")
    if final.exists():  # DVC removed it already; a manual run may not have
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(partial.path), str(final))
    return final


def _level(text: str) -> tuple[str, str]:
    setting, sep, level = text.partition("=")
    if not sep or not setting or not level:
        raise argparse.ArgumentTypeError(f"--vary {text!r}: expected SETTING=LEVEL, a level slug of grid.vary")
    return setting, level


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m experiments.run_cell", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vqgan", help="a key of grid.vqgan_models")
    parser.add_argument("set_key", metavar="PERCEPTOR_SET", help="a key of grid.perceptors (a perceptor set)")
    parser.add_argument("--seed", type=int, help="a seed of grid.seeds (default: settings.seed)")
    parser.add_argument("--vary", action="append", default=[], type=_level, metavar="SETTING=LEVEL",
                        help="the cell's level of a setting of grid.vary (one per varied setting)")
    parser.add_argument("--params", default=PARAMS_FILE)
    args = parser.parse_args(argv)
    quiet = not sys.stderr.isatty() or bool(os.environ.get("VQCLIP_QUIET"))
    return error_boundary(lambda: run_cell(args.vqgan, args.set_key, args.params, seed=args.seed,
                                                   varied=dict(args.vary), quiet=quiet),
                          "interrupted: the cell resumes from its last saved frame at the next `dvc repro`")

if __name__ == "__main__":
    sys.exit(main())
