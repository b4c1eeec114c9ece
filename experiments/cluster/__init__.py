"""Run the grid's pending cells as Ray tasks: one cell per task, each on its own GPU (or share).

    python -m experiments.cluster [--address auto|HOST:PORT] [--gpus-per-cell F] [--remote NAME]
                                  [--max-retries N] [--partial-dir DIR] [CELL ...]

From a clean git checkout with a DVC remote (docs/grid.md, "More than one machine"):

1. asks `dvc status` which `cell@...` stages need running (or only the CELL names or globs given);
2. makes sure the model stamps are on the remote: when `fetch_models` is pending it runs first,
   as one task (a model that cannot be fetched stops everything here, reported once);
3. runs one Ray task per cell. A task clones the repository at the current commit into its
   node's work folder, points the clone at the remote, runs `dvc repro --pull cell@X` (the
   stamps and any result already on the remote are pulled, not recomputed) and
   `dvc push --run-cache cell@X`. Ray gives it `--gpus-per-cell` GPUs and sets
   CUDA_VISIBLE_DEVICES to them; a fraction (0.25) packs cells on one GPU;
4. prints one line per cell started, finished or failed, and a total;
5. ends with `dvc repro --pull` here: every cell comes from the remote's run cache, only the scoring
   stages run. Then `dvc repro` runs nothing and `dvc status` is clean; commit dvc.lock and the metrics.

A task whose worker or node dies is retried (`--max-retries`) and resumes the cell from its last
saved frame: the cell works in `--partial-dir` (environment VQCLIP_PARTIAL_DIR), by default a
folder of the node's work folder; put it on storage every node mounts so retries on another node
resume too. A failure that retrying cannot fix (a model that cannot be fetched, bad settings,
disk full) is reported once with the cell's name and not retried.

Without `--address` a local Ray instance with this machine's GPUs runs the cells: one cell per
GPU on a multi-GPU box.

Modules: `plan` (the checks and what to run), `coordinator` (the tasks and their progress),
`task` (one task on its node: clone, run, push, classify failures), `process` (commands and
their guard), `restore` (the results into this checkout), `errors`, `cli`.
"""
from experiments.cluster.coordinator import DEFAULT_WORK_DIR, MODELS_STAGE, Report, run_cluster
from experiments.cluster.errors import CellCrashed, CellFailed, ClusterError
from experiments.cluster.task import TaskSpec, classify

__all__ = ["DEFAULT_WORK_DIR", "MODELS_STAGE", "CellCrashed", "CellFailed", "ClusterError", "Report", "TaskSpec",
           "classify", "run_cluster"]
