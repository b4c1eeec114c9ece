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

import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from engine.cli import error_boundary
from engine.errors import StateError
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

_URL = re.compile(r"https?://[^\s,;)]+")


class ModelsUnavailable(StateError):
    """Models of the grid could not be fetched (exit 1, as `engine fetch`); the message says what to put where."""


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
    """Fetch every distinct model, then check the sizes against each VQGAN's factor (GridError);
    ModelsUnavailable says once what is missing (a table: model, file, where to put it) and the ways
    forward."""
    from engine.cache import cache_dir
    from engine.checkpoint import CheckpointError
    from engine.download import DownloadError

    records, failures = {}, []
    folders = _folders(cache_dir())
    for model in grid.models:
        print(f"fetch_models: {_label(model)}", flush=True)
        try:
            records[model.name] = fetch_model(model, progress=progress)
        except (DownloadError, FileNotFoundError, CheckpointError, OSError, ValueError) as err:
            failures.append((model, err))
    if failures:
        _remove_new_empty_folders(cache_dir(), folders)
        raise ModelsUnavailable(failure_report(failures, len(grid.models)))
    check_sizes(grid, records)
    return records


def _label(model: Model) -> str:
    return f"{'VQGAN' if model.kind == 'vqgan' else 'perceptor'} {model.name}"


def failure_report(failures: list[tuple[Model, Exception]], total: int) -> str:
    """What could not be fetched, once: the files that are missing as a table (model, file, where to
    put it) with why, every other problem with its message, then the two ways forward."""
    from engine.cache import cache_dir, user_models_file
    from engine.download import CacheMismatch, ChecksumMismatch, DownloadError
    from engine.factory import vqgan_paths
    from engine.registry import registry

    missing = [(m, e) for m, e in failures
               if isinstance(e, DownloadError) and not isinstance(e, (ChecksumMismatch, CacheMismatch))]
    lines = [f"{len(failures)} of {total} models could not be fetched, so no cell was started."]
    if missing:
        rows = [("model", "file", "where to put it")]
        for model, _ in missing:
            if model.kind == "vqgan":
                paths = [p for p in vqgan_paths(registry().vqgan(model.name)) if not p.exists()]
                rows += [(_label(model) if i == 0 else "", p.name, str(p)) for i, p in enumerate(paths)]
            else:
                rows.append((_label(model), "weights", "any path, named in the user models file as below"))
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        lines.append(f"Not downloaded ({_why(e for _, e in missing)}):")
        lines += [f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows]
        perceptors = [m.name for m, _ in missing if m.kind != "vqgan"]
        if perceptors:
            lines += [f"  {user_models_file()}:", "    perceptors:"]
            lines += [f"      '{name}': {{file: /path/to/weights}}" for name in perceptors]
    lines += [f"{_label(m)}: " + str(e).replace("\n", "\n    ") for m, e in failures if (m, e) not in missing]
    lines += ["Two ways forward:",
              "  1. Fetch them where there is internet and copy that machine's model cache to "
              f"{cache_dir()}\n     (or put each file where the table says), then run `dvc repro` again:",
              f"       python -m engine fetch {' '.join(m.name for m, _ in missing) or 'NAME ...'}",
              f"  2. Run the same pipeline now on UNTRAINED tiny models (random weights): {DEMO_COMMAND}"]
    return "\n".join(lines)


def _why(errors: Iterable[Exception]) -> str:
    """`reason: host, host; reason: host` over the URLs the downloads tried."""
    hosts: dict[str, list[str]] = {}
    for err in errors:
        attempts = getattr(err, "attempts", None) or [
            (url, "no connection" if "no connection" in str(err) else "failed") for url in _URL.findall(str(err))]
        for url, reason in attempts:
            host = urlsplit(url).hostname or url
            if host not in hosts.setdefault(reason, []):
                hosts[reason].append(host)
    return "; ".join(f"{reason}: {', '.join(names)}" for reason, names in hosts.items()) or "see above"


def _folders(root: Path) -> set[Path]:
    return {Path(d) for d, _, _ in os.walk(root)} if root.is_dir() else set()


def _remove_new_empty_folders(root: Path, before: set[Path]) -> None:
    """Folders that failed downloads made in the model cache, left empty: removed, deepest first."""
    for folder in sorted(_folders(root) - before, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty (another process's download): kept
            folder.rmdir()
    if root not in before:
        with contextlib.suppress(OSError):
            root.rmdir()


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
