"""The run folder, the one interface between the engine, the grid and the dashboard.

This package alone knows its format (docs/run-folder-format.md): the file names, frame n ↔ step,
the grid's cell names, pytti's folder rules, and how a folder reads back as a `RunRecord`. The
engine writes through `RunFolder`; the catalog, the scores and the export read through
`read_run`. It imports no torch, so a viewer installs and starts without it.
"""
from engine.runfolder.folder import (
    HashCache,
    RunFolder,
    RunFolderConflict,
    RunFolderDamaged,
    frame_problems,
)
from engine.runfolder.frames import Frame, read_frame, scene_weights
from engine.runfolder.meta import Meta, MetadataError, read_json_object, to_int
from engine.runfolder.names import (
    FORMAT,
    PERCEPTOR_SET_SEP,
    PYTTI_PERCEPTORS,
    CellName,
    cell_name,
    frame_count,
    frame_step,
    is_save_point,
    parse_cell_name,
    parse_family,
    saved_frame,
    split_rerun,
)
from engine.runfolder.record import RunRecord, is_run_folder, read_run, run_bases

__all__ = [
    "FORMAT", "PERCEPTOR_SET_SEP", "PYTTI_PERCEPTORS", "CellName", "Frame", "HashCache", "Meta", "MetadataError",
    "RunFolder", "RunFolderConflict", "RunFolderDamaged", "RunRecord", "cell_name", "frame_count",
    "frame_problems", "frame_step", "is_run_folder", "is_save_point", "parse_cell_name", "parse_family",
    "read_frame", "read_json_object", "read_run", "run_bases", "saved_frame", "scene_weights", "split_rerun", "to_int",
]
