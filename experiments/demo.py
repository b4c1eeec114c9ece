"""The offline demo grid: the real pipeline on UNTRAINED tiny models, in a fresh repository.

    python -m experiments.demo DIR [--no-run]

Creates DIR as a new git + DVC repository holding this project's dvc.yaml, stage scripts, plot
templates (and the offline page of `dvc plots show`) and engine, with a params.yaml that keeps the study's shared settings but runs
`tiny` and `tiny-gumbel` × `tiny-vit` and `tiny-rn` (random weights, generated offline) at
64×32 px for 20 steps; then runs `dvc repro` there and commits the result. Every file, run
folder and score it makes is labelled `demo_untrained`: the images and numbers say nothing
about any real checkpoint; they show the pipeline working end to end without downloads.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from engine.cli import Parser, error_boundary
from engine.errors import StateError
from engine.fsutil import describe_os_error
from experiments.grid import PARAMS_FILE, read_params
from experiments.plots import offline as plots_page

PACKAGE = Path(__file__).resolve().parent
PROJECT = PACKAGE.parent
ENGINE = PROJECT / "engine"
DEMO_EXPERIMENT = "demo_untrained"
DEMO_GRID = {
    "vqgan_models": {"tiny": "tiny", "tiny-gumbel": "tiny-gumbel"},
    "perceptors": {"tiny-vit": "tiny-vit", "tiny-rn": "tiny-rn"},
    "seeds": [],
}
# Small enough for a 2-core CPU: 2 scenes × 10 steps, a frame every 5 steps (4 frames per cell),
# motion from step 5. A larger learning rate than the models' defaults (0.1, GumbelVQ 0.15), so
# that 20 steps move the untrained latents across code boundaries and the cells' frames differ.
# No init or target images: the demo repository's experiments/inputs/ holds none.
DEMO_SETTINGS = {"width": 64, "height": 32, "cutouts": 4, "steps_per_frame": 5, "save_every": 5,
                 "steps_per_scene": 10, "interpolation_steps": 5, "pre_animation_steps": 5,
                 "learning_rate": 0.3, "init_image": None, "target_images": ""}
HEADER = """\
# OFFLINE DEMO GRID ON UNTRAINED MODELS. `tiny`, `tiny-gumbel`, `tiny-vit` and `tiny-rn` have
# random weights (generated locally, no download): the frames and scores made here say nothing
# about any real checkpoint. Made by `python -m experiments.demo`; the study's grid is the
# params.yaml of the project itself.
"""
README = """\
# UNTRAINED demo grid

Made by `python -m experiments.demo`: the project's grid pipeline (dvc.yaml, experiments/) on
tiny models with random weights, so that it runs offline in a few minutes. Nothing here says
anything about a real VQGAN or CLIP checkpoint.

    dvc repro              # nothing to do: already run
    dvc metrics show       # the summary: a row per measure (shares of variance, self-preference)
    dvc metrics show experiments/scores/self_preference.json   # any other score file, by name
    dvc plots show         # dvc_plots/index.html; renders offline
    python -m dashboard serve --root experiments/images_out

See docs/grid.md in the project.
"""


DVC_HINT = re.compile(r"To track the changes with git, run:|\tgit add |To enable auto staging, run:|"
                      r"\tdvc config core.autostage true|Use `dvc push` to send your updates")


class DemoError(StateError):
    """The demo repository cannot be made where asked (the message says why and what to do)."""


def demo_params(base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The project's params.yaml with the demo grid, experiment name and small sizes."""
    params = copy.deepcopy(dict(base if base is not None else read_params(PROJECT / PARAMS_FILE)))
    params["experiment"] = DEMO_EXPERIMENT
    params["grid"] = copy.deepcopy(DEMO_GRID)
    params["settings"] = {**params.get("settings", {}), **DEMO_SETTINGS}
    return params


def write_params(path: Path, params: Mapping[str, Any], header: str = HEADER) -> Path:
    path.write_text(header + yaml.safe_dump(dict(params), sort_keys=False, width=1000), encoding="utf-8")
    return path


def project_files() -> list[Path]:
    """The files a grid repository needs, relative to the project root: dvc.yaml, the stage
    scripts, the plot templates and the engine (the score stage depends on engine code)."""
    files = [Path("dvc.yaml"), Path(".dvcignore"), Path("experiments/.gitignore"), Path("experiments/inputs/README.md")]
    files += _sources(PACKAGE, "*.py") + _sources(PACKAGE / "plots", "*.json") + _sources(ENGINE, "*")
    missing = [str(f) for f in files if not (PROJECT / f).is_file()]
    if missing:
        raise DemoError(f"{PROJECT} lacks {', '.join(missing)}: run the demo from a source checkout "
                        "of the project (pip install -e .)")
    return files


def _sources(folder: Path, pattern: str) -> list[Path]:
    """The files matching `pattern` under `folder` (no bytecode), relative to the project root."""
    return sorted(p.relative_to(PROJECT) for p in folder.rglob(pattern)
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def _env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1"}


def _tool(directory: Path, *command: str) -> None:
    """Run git or dvc in `directory`; DemoError naming the command where it fails."""
    done = subprocess.run(command, cwd=directory, stdout=subprocess.DEVNULL, env=_env())
    if done.returncode:
        raise DemoError(f"`{' '.join(command)}` failed (exit {done.returncode}) in {directory}; check that git "
                        "and dvc work there, then remove the folder and try again")


def _git(directory: Path, *args: str) -> None:
    _tool(directory, "git", *args)


def _has_identity(directory: Path) -> bool:
    return all(subprocess.run(["git", "config", key], cwd=directory, capture_output=True).returncode == 0
               for key in ("user.name", "user.email"))


def create_demo(directory: str | Path, *, params: Mapping[str, Any] | None = None) -> Path:
    """A fresh git + DVC repository at `directory` (which must not exist or be empty) holding the
    grid pipeline with `params` (default: `demo_params()`), committed; nothing run yet."""
    directory = Path(directory).resolve()
    if directory.is_dir() and any(directory.iterdir()):
        raise DemoError(f"{directory} exists and is not empty; pick a new folder")
    if directory.exists() and not directory.is_dir():
        raise DemoError(f"{directory} is a file, not a folder; pick a new folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for rel in project_files():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PROJECT / rel, directory / rel)
    except OSError as err:
        raise DemoError(f"cannot make the demo repository {directory}: {describe_os_error(err)}; "
                        "pick a folder you can write") from err
    untrained = params is None
    write_params(directory / PARAMS_FILE, demo_params() if params is None else params,
                 HEADER if untrained else "")
    if untrained:
        (directory / "README.md").write_text(README, encoding="utf-8")
    (directory / ".gitignore").write_text(f"__pycache__/\n*.pyc\n/dvc_plots/\n/{plots_page.TEMPLATE}\n", encoding="utf-8")
    plots_page.write_template(directory / plots_page.TEMPLATE)
    _git(directory, "init", "-q")
    if not _has_identity(directory):
        _git(directory, "config", "user.name", "vqclip demo")
        _git(directory, "config", "user.email", "demo@localhost")
    _tool(directory, "dvc", "init", "-q")
    _tool(directory, "dvc", "config", "core.analytics", "false")
    _tool(directory, "dvc", "config", "plots.html_template", plots_page.DVC_CONFIG_VALUE)
    _git(directory, "add", "-A")
    _git(directory, "commit", "-q", "-m", "grid pipeline" + (" (UNTRAINED demo)" if untrained else ""))
    return directory


def run_demo(directory: str | Path) -> int:
    """Create the demo repository, `dvc repro` it and commit the results; returns dvc's exit code."""
    start = time.perf_counter()
    directory = create_demo(directory)
    print(f"demo: {directory}: UNTRAINED tiny models, {len(DEMO_GRID['vqgan_models'])} × "
          f"{len(DEMO_GRID['perceptors'])} cells; running `dvc repro`", flush=True)
    with subprocess.Popen(["dvc", "repro"], cwd=directory, env=_env(), stdout=subprocess.PIPE, text=True) as dvc:
        for line in without_hints(dvc.stdout):
            print(line, end="", flush=True)
    if dvc.returncode:
        print(f"error: `dvc repro` failed (exit {dvc.returncode}) in {directory}; fix the error above and run "
              "`dvc repro` there again", file=sys.stderr)
        return dvc.returncode
    _git(directory, "add", "-A")
    _git(directory, "commit", "-q", "-m", "UNTRAINED demo grid: results")
    print(f"\ndemo: done in {time.perf_counter() - start:.0f} s; everything is committed in {directory} (git log). "
          "The frames and scores are from UNTRAINED models. Next:\n"
          f"  cd {directory}\n"
          "  dvc metrics show     # the summary: per measure, the VQGAN's and perceptor set's shares; self-preference\n"
          "  dvc plots show       # dvc_plots/index.html, renders offline: bias heatmap, statistics over the steps\n"
          "  python -m dashboard serve --root experiments/images_out")
    return 0


def without_hints(lines: Iterable[str]) -> Iterator[str]:
    """DVC's output less its closing hints (`git add ...`, autostage, `dvc push`), which the demo has
    acted on (it commits) or that do not apply (no remote); a blank line before a hint goes with it."""
    blank: list[str] = []
    for line in lines:
        if not line.strip():
            blank.append(line)
            continue
        if not DVC_HINT.match(line):
            yield from blank
            yield line
        blank = []
    yield from blank


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m experiments.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="a new folder for the demo repository")
    parser.add_argument("--no-run", action="store_true", help="create the repository, do not run it")
    args = parser.parse_args(argv)
    if args.no_run:
        return error_boundary(lambda: print(create_demo(args.directory)))
    return error_boundary(lambda: run_demo(args.directory))

if __name__ == "__main__":
    sys.exit(main())
