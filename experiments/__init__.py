"""The DVC grid pipeline: VQGAN models × CLIP perceptors × seeds (docs/grid.md).

Stage scripts, each run by dvc.yaml as `python -m experiments.<stage>` from the repository
root and reading params.yaml: `fetch_models`, `run_cell`, `score`. `grid` validates params and
names the cells, `demo` builds and runs the offline demo grid, `cluster` runs the pending
cells as Ray tasks (one GPU each) on one machine or a Ray cluster.
"""
