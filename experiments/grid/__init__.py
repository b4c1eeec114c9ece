"""The grid of params.yaml: VQGAN models × perceptor sets × seeds.

Every stage script reads params.yaml through `load_grid`, which validates the whole grid and
names its cells (docs/grid.md):

    experiment: exp_vqgan_base_perceptors       # folder-name prefix
    out_dir: experiments/images_out
    grid:
      vqgan_models:                             # slug: registry name
        imagenet: imagenet_16384
      perceptors:                               # the perceptor sets: slugs joined by '_': names joined by '+' (or a list)
        ViT-B32: "ViT-B-32:openai"
        ViT-B32_RN50: "ViT-B-32:openai+RN50:openai"
      seeds: [7, 8]                             # replicates beside settings.seed ([]: none)
    settings: {...}                             # engine settings shared by every cell

The cells of `settings.seed` (the study's seed) keep the study's names; each further seed n of
`grid.seeds` adds a replicate of every cell, `<cell>__seed-<n>`, made by stage
`replicate@<vqgan>-<perceptors>-<n>` (DVC templates have no conditionals, so the replicates
are a second stage group rather than a suffix that appears once a second seed is listed).
`init_image` and `target_images` files must lie in experiments/inputs/, a dependency of every cell.

The keys are the models' registry slugs because DVC's `matrix` iterates them: they become
stage names (`cell@imagenet-ViT-B32`), params paths (`grid.perceptors.ViT-B32`) and the
study's folder names (`exp_vqgan_base_perceptors__imagenet_ViT-B32_RN50`, engine.runfolder's
cell names).

Modules: `model` (cells, names, each cell's engine settings), `params` (reading params.yaml),
`checks` and `entries` (validation), `layout` (where the pipeline's files live), `cli`.
`python -m experiments.grid` checks params.yaml and lists the cells;
`python -m experiments.grid suggest NAME ...` prints the grid entries for model names.
"""
from experiments.grid.checks import build_grid
from experiments.grid.layout import (
    DEMO_COMMAND,
    INPUTS_DIR,
    METRICS_DIR,
    PARAMS_FILE,
    PARTIAL_ENV,
    SCORES_DIR,
    STAMPS_DIR,
    partial_dir,
)
from experiments.grid.model import CELL_KEYS, Cell, CellNotReady, Grid, GridError, Model
from experiments.grid.params import load_grid, read_params

__all__ = [
    "CELL_KEYS", "CellNotReady", "DEMO_COMMAND", "INPUTS_DIR", "METRICS_DIR", "PARAMS_FILE", "PARTIAL_ENV", "SCORES_DIR",
    "STAMPS_DIR", "Cell", "Grid", "GridError", "Model", "build_grid", "load_grid", "partial_dir", "read_params",
]
