"""dvc.yaml's cell stages, which follow grid.vary's settings.

DVC's `matrix` makes the product of its axes itself, so adding or removing a level of a varied
setting needs no edit of dvc.yaml: each varied setting is one more axis of the `cell` and
`replicate` stage groups (`<setting>: ${grid.vary.<setting>}`), and each cell declares only its own
levels as params. Only the list of varied settings shapes the groups; `write_cell_stages` puts
them between the markers of dvc.yaml (`python -m experiments.grid` calls it), and `fetch_models`
refuses to start while they lag behind params.yaml. Without `vary` the groups are the study's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from engine.fsutil import atomic_write
from engine.runfolder.names import folder_key
from experiments.grid.model import GridError

BEGIN = "  # >>> cell stages: `python -m experiments.grid` writes them for grid.vary; edit params.yaml, not here\n"
END = "  # <<< cell stages\n"

_GROUP = """  {name}:
    # {what}
    matrix:
      vqgan: ${{grid.vqgan_models}}
      perceptors: ${{grid.perceptors}}{matrix}
    cmd: python -m experiments.run_cell ${{item.vqgan}} ${{item.perceptors}}{args}
    deps:
      - experiments/run_cell.py
      - experiments/grid/model.py           # the cell's engine settings
      - experiments/inputs
      - experiments/model_stamps/vqgan-${{item.vqgan}}.json
      - experiments/model_stamps/perceptors-${{item.perceptors}}.json
    params:
      - experiment
      - out_dir
      - settings
      - grid.vqgan_models.${{item.vqgan}}
      - grid.perceptors.${{item.perceptors}}{params}
    outs:
      - ${{out_dir}}/{cell}
      - experiments/metrics/{cell}.json
"""


def cell_stages(vary: Sequence[str]) -> str:
    """The text of the `cell` and `replicate` stage groups for the varied settings `vary`, in order."""
    axes = "".join(f"\n      {s}: ${{grid.vary.{s}}}" for s in vary)
    args = "".join(f" --vary {s}=${{item.{s}}}" for s in vary)
    params = "".join(f"\n      - grid.vary.{s}.${{item.{s}}}" for s in vary)
    cell = "${experiment}__${item.vqgan}_${item.perceptors}"
    if vary:
        cell += "__" + "_".join(f"{folder_key(s)}-${{item.{s}}}" for s in vary)
    what = ("One optimisation per VQGAN × perceptor set" + "".join(f" × {s}" for s in vary)
            + " at settings.seed: the study's cells and names.\n    # Each reads only its own grid entries; "
              "experiments/inputs holds init_image and target_images.")
    return "\n".join([
        _GROUP.format(name="cell", what=what, matrix=axes, args=args, params=params, cell=cell),
        _GROUP.format(name="replicate", what="The same cell at each further seed of grid.seeds (none by default): "
                      "folder <cell>__seed-<n>.", matrix=axes + "\n      seed: ${grid.seeds}",
                      args=args + " --seed ${item.seed}", params=params, cell=cell + "__seed-${item.seed}")])


def _split(text: str, path: Path) -> tuple[str, str, str]:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise GridError(f"{path}: the markers of the cell stages ({BEGIN.strip()!r} ... {END.strip()!r}) are "
                        "missing or repeated; restore them from the project's dvc.yaml")
    head, rest = text.split(BEGIN)
    body, tail = rest.split(END)
    return head, body, tail


def cell_stages_lag(path: Path, vary: Sequence[str]) -> bool:
    """Whether dvc.yaml at `path` holds other cell stages than `vary` makes."""
    return _split(path.read_text(encoding="utf-8"), path)[1] != cell_stages(vary)


def write_cell_stages(path: Path, vary: Sequence[str]) -> bool:
    """Write the cell stages for `vary` into dvc.yaml at `path`; whether anything changed."""
    head, body, tail = _split(path.read_text(encoding="utf-8"), path)
    if body == cell_stages(vary):
        return False
    atomic_write(path, head + BEGIN + cell_stages(vary) + END + tail)
    return True
