"""Stage `fetch_models`: check the grid, then get every model of it once, before any cell runs.

Each distinct model is downloaded and verified (or, for the tiny untrained models, generated)
through the engine's model cache, once however many cells use it. Then one small stamp per
grid entry is written to experiments/model_stamps/ (`vqgan-<slug>.json`,
`perceptors-<key>.json`): the models' names and sha256, nothing machine-specific. Each cell
depends on its two stamps only, so adding a model to the grid rewrites the stamps of the
other entries with the same content and none of their cells re-runs.

If a model cannot be fetched (offline, dead mirror) the stage fails listing every such model,
so `dvc repro` stops before any cell starts.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from engine.cli import error_boundary
from engine.runfolder import parse_cell_name
from experiments.grid import (
    DEMO_COMMAND,
    PARAMS_FILE,
    STAMPS_DIR,
    Grid,
    GridError,
    Model,
    load_grid,
)
from experiments.grid.dvcyaml import write_cell_stages


def fetch_model(model: Model, *, progress: bool = True) -> dict:
    """Make sure one model's files are in the cache; return its stamp record."""
    from engine.factory import fetch_perceptor, fetch_vqgan, model_sha256
    from engine.registry import registry

    record = {"name": model.name, "slug": model.slug, "untrained": model.untrained}
    if model.kind == "vqgan":
        source = registry().vqgan(model.name)
        config, checkpoint = fetch_vqgan(source, progress=progress)
        record["config_sha256"] = model_sha256(f"vqgan/{model.name}/config", config)
        record["checkpoint_sha256"] = model_sha256(f"vqgan/{model.name}/checkpoint", checkpoint)
        record["factor"] = vqgan_factor(config)
    else:
        source = registry().perceptor(model.name)
        weights = fetch_perceptor(source, progress=progress)
        record["sha256"] = model_sha256(f"clip/{model.name}", weights)
    return record


def vqgan_factor(config: Path) -> int:
    """The downsampling factor of a VQGAN, from its config (no weights loaded)."""
    from engine.vqgan import downsampling_factor, read_config

    return downsampling_factor(read_config(config)["params"]["ddconfig"])


def fetch_all(grid: Grid, *, progress: bool = True) -> dict[str, dict]:
    """Fetch every distinct model, then check the sizes against each VQGAN's factor; GridError
    lists every failure."""
    from engine.checkpoint import CheckpointError
    from engine.download import DownloadError

    records, failures = {}, []
    for model in grid.models:
        label = f"{'VQGAN' if model.kind == 'vqgan' else 'perceptor'} {model.name}"
        print(f"fetch_models: {label}", flush=True)
        try:
            records[model.name] = fetch_model(model, progress=progress)
        except (DownloadError, FileNotFoundError, CheckpointError, OSError, ValueError) as err:
            failures.append(f"{label}: {err}")
    if failures:
        raise GridError(
            f"{len(failures)} of {len(grid.models)} models could not be fetched, so no cell was started:\n"
            + "\n".join("  - " + f.replace("\n", "\n      ") for f in failures)
            + "\nOffline? Put the files in place as the messages say, or try the pipeline end to end on "
            f"UNTRAINED tiny models with the offline demo grid:\n  {DEMO_COMMAND}")
    check_sizes(grid, records)
    return records


def check_sizes(grid: Grid, records: dict[str, dict]) -> None:
    """GridError unless the width and height are multiples of every VQGAN's downsampling factor."""
    from engine.settings import Settings

    problems = []
    for model in grid.vqgans.values():
        factor = records[model.name]["factor"]
        for name in ("width", "height"):
            value = grid.settings.get(name, getattr(Settings(), name))
            if value % factor:
                problems.append(f"settings.{name}={value} is not a multiple of {factor}, the downsampling "
                                f"factor of VQGAN {model.name!r}")
    if problems:
        raise GridError("\n".join(problems))


def write_stamps(grid: Grid, records: dict[str, dict], folder: Path = STAMPS_DIR) -> list[Path]:
    """One stamp per grid entry; the folder is rewritten from scratch."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = []
    for slug, model in grid.vqgans.items():
        written.append(_write(folder / f"vqgan-{slug}.json", {"entry": slug, "models": [records[model.name]]}))
    for key, models in grid.perceptor_sets.items():
        written.append(_write(folder / f"perceptors-{key}.json",
                              {"entry": key, "models": [records[m.name] for m in models]}))
    return written


def _write(path: Path, data: dict) -> Path:
    from engine.fsutil import atomic_write

    return atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def stale_cells(grid: Grid) -> list[Path]:
    """Cell folders of this experiment under out_dir that are no longer in the grid."""
    out = Path(grid.out_dir)
    if not out.is_dir():
        return []
    current = {c.name for c in grid.cells}
    return sorted(p for p in out.iterdir() if p.is_dir() and p.name not in current
                  and (cell := parse_cell_name(p.name)) is not None and cell.experiment == grid.experiment)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    params = args[0] if args else PARAMS_FILE
    return error_boundary(lambda: fetch_and_stamp(params))


def fetch_and_stamp(params: str) -> int:
    """The stage: every model of the grid ready, one stamp per grid entry."""
    grid = load_grid(params)
    dvc_yaml = Path(params).parent / "dvc.yaml"
    if dvc_yaml.is_file() and write_cell_stages(dvc_yaml, list(grid.vary)):
        raise GridError(f"{dvc_yaml}'s cell stages did not vary what grid.vary varies "
                        f"({', '.join(grid.vary) or 'nothing'}); they are rewritten now: run `dvc repro` again")
    if grid.untrained:
        print("fetch_models: this grid uses UNTRAINED tiny models (random weights); its images and scores "
              "say nothing about real checkpoints", flush=True)
    records = fetch_all(grid, progress=sys.stderr.isatty())
    stamps = write_stamps(grid, records)
    print(f"fetch_models: {len(records)} models ready; {len(stamps)} stamps in {STAMPS_DIR}; "
          f"{len(grid.cells)} cells")
    for path in stale_cells(grid):
        print(f"fetch_models: note: {path} is not in the grid any more (DVC no longer tracks it; "
              "the scoring ignores it); delete it when you no longer need it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
