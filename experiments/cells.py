"""A grid's finished cells as the scoring stages read them: each cell's run (`engine.runfolder`'s
record: frames with their steps and scene weights, the scenes' prompts) and its frames' pixels."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from experiments.grid import Cell, CellNotReady, Grid

if TYPE_CHECKING:
    from engine.runfolder import RunRecord


def read_cell(grid: Grid, cell: Cell) -> RunRecord:
    """The complete run of a cell; CellNotReady naming the cell, what is wrong and what to do."""
    from engine.runfolder import read_run

    folder = grid.cell_dir(cell)
    if not folder.is_dir():
        raise CellNotReady(f"cell {cell.name}: no folder {folder}; run `dvc repro {cell.stage}` (or `dvc pull "
                        f"{cell.stage}` where it was pushed) to make it")
    record = read_run(folder)
    if record.status == "damaged":
        raise CellNotReady(f"cell {cell.name}: {folder} is damaged ({record.reason}); restore it with "
                        f"`dvc checkout {cell.stage}`, or re-run it with `dvc repro --force {cell.stage}`")
    if record.status != "complete":
        raise CellNotReady(f"cell {cell.name}: {folder} holds no complete run ({record.reason}); run "
                        f"`dvc repro {cell.stage}` to finish it")
    return record


def read_cells(grid: Grid) -> dict[str, RunRecord]:
    """Every cell's complete run, by cell name; CellNotReady for the first that is not there."""
    return {cell.name: read_cell(grid, cell) for cell in grid.cells}


def frame_pixels(record: RunRecord) -> list[np.ndarray]:
    """The run's frames as (H, W, 3) uint8 arrays, frame 1 first, each checked against the run's size
    before it is decoded; CellNotReady names a frame that is not the run's."""
    from engine.fsutil import BadFile
    from engine.runfolder import read_frame

    try:
        return [read_frame(record.folder / frame.name, record.frame_size) for frame in record.frames]
    except BadFile as err:
        raise CellNotReady(f"cell {record.base}: {err}; restore the cell's folder (`dvc checkout`) or re-run it") from None
