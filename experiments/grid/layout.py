"""Where the grid's files live, relative to the repository root (where dvc.yaml is and the stages run)."""
from __future__ import annotations

import os
from pathlib import Path

PARAMS_FILE = "params.yaml"
STAMPS_DIR = Path("experiments/model_stamps")  # fetch_models: one stamp per grid entry
METRICS_DIR = Path("experiments/metrics")  # each cell's metrics.json, as a DVC metric
SCORES_DIR = Path("experiments/scores")  # score: bias matrix and image statistics
INPUTS_DIR = Path("experiments/inputs")  # init_image and target_images files: a dependency of every cell
PARTIAL_ENV = "VQCLIP_PARTIAL_DIR"  # moves the cells in progress, e.g. to storage every cluster node mounts
DEFAULT_PARTIAL_DIR = Path("experiments/.partial")
DEMO_COMMAND = "python -m experiments.demo /tmp/demo-grid"


def partial_dir() -> Path:
    """Where cells in progress live (resumable) until they are moved into out_dir: $VQCLIP_PARTIAL_DIR,
    read now, else experiments/.partial."""
    return Path(os.environ.get(PARTIAL_ENV) or DEFAULT_PARTIAL_DIR)
