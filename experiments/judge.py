"""Stage `judge`: every cell's frames judged by every perceptor of the grid (the judges), the one
stage that loads CLIP models.

A frame's similarity under a judge is the cosine similarity of its image embedding to its scene
prompt:

- the scene prompt is the scene's positive-weight prompts, as the run recorded them (the scene
  suffix's negative `text`/`watermark` prompts are left out), their similarities averaged with the
  prompt weights;
- the scenes are weighted as the run's frame table records them at the frame's step (inside a
  scene transition two scenes share the weight);
- the image embedding is the mean of the unit embeddings of square windows that cover the
  frame (side = the frame's shorter side, ceil(long/short) windows evenly spaced: two for the
  study's 256×128), each resized to the judge's input size, renormalised.

A cell's similarity is the mean over its frames. A perceptor set that scores high under its own
judge but low under the others has found that perceptor's blind spots rather than the prompt:
experiments/bias.py turns the similarities into each judge's self-preference, in the judge's
own spread, with a 95 % interval over the grid's seeds.

Per judge it also measures how far apart the final frames of every two VQGANs (and every two
levels of each other factor) are in that judge's eyes, CMMD, and how varied each cell's final
frames are over the seeds, the Vendi score (experiments/setdistances.py).

Writes into experiments/scores/ (experiments/scorefiles.py): bias_matrix.csv, bias.json,
self_preference.json and cmmd.json.
"""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from engine.cli import error_boundary
from experiments.bias import self_preference, standardise, summary
from experiments.cells import frame_pixels, read_cells
from experiments.grid import PARAMS_FILE, SCORES_DIR, Grid, load_grid
from experiments.scorefiles import (
    BIAS,
    BIAS_COLUMNS,
    BIAS_MATRIX,
    CMMD,
    SELF_PREFERENCE,
    rounded,
    write_csv,
    write_json,
)
from experiments.setdistances import cmmd, vendi

if TYPE_CHECKING:
    from engine.runfolder import RunRecord

BATCH = 32


def windows(height: int, width: int) -> list[tuple[int, int, int]]:
    """Square windows (top, left, side) covering an image, evenly spaced along its long side."""
    side, long = min(height, width), max(height, width)
    count = math.ceil(long / side)
    offsets = [round(i * (long - side) / (count - 1)) for i in range(count)] if count > 1 else [0]
    return [(0, o, side) if width >= height else (o, 0, side) for o in offsets]


def embed_frames(perceptor: Any, frames: list[np.ndarray]) -> Any:
    """Frames (H, W, 3) uint8 → (N, D) unit embeddings: mean of square windows' embeddings."""
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(frames), BATCH):
        batch = torch.from_numpy(np.stack(frames[start:start + BATCH])).permute(0, 3, 1, 2).float() / 255
        batch = batch.to(perceptor.device)
        crops = [F.interpolate(batch[:, :, t:t + side, l:l + side], size=perceptor.input_size, mode="bilinear",
                               align_corners=False, antialias=True)
                 for t, l, side in windows(batch.shape[2], batch.shape[3])]
        with torch.no_grad():
            embeds = torch.stack([perceptor.encode_image(c) for c in crops]).mean(0)
        out.append(F.normalize(embeds, dim=-1).cpu())
    return torch.cat(out)


def frame_similarities(perceptor: Any, record: RunRecord, images: Any) -> list[float]:
    """Each frame's similarity to its scene prompt under one judge (`images`: the frames' embeddings)."""
    scenes = [[(text, weight) for text, weight in scene if weight > 0] for scene in record.meta.scenes]
    texts = [text for scene in scenes for text, _ in scene]
    if not texts:
        return [float("nan")] * len(images)
    sims = (images @ perceptor.encode_text(texts).cpu().T).numpy()  # (frames, texts)
    per_scene, i = [], 0
    for scene in scenes:
        weights = np.array([w for _, w in scene])
        per_scene.append(sims[:, i:i + len(scene)] @ weights / weights.sum() if scene else np.full(len(images), np.nan))
        i += len(scene)
    return [float(sum(weight * per_scene[k][f] for k, weight in enumerate(frame.scenes) if weight))
            for f, frame in enumerate(record.frames)]


def judge_cells(grid: Grid, records: dict[str, RunRecord],
                device: str | None) -> tuple[dict[tuple[str, str], float], dict[str, dict[str, np.ndarray]]]:
    """(cell name, judge slug) → the cell's mean similarity under that judge, and judge slug → cell name →
    the embedding of the cell's final frame; one judge loaded at a time."""
    from engine.device import pick_device
    from engine.factory import load_perceptor

    torch_device = pick_device(device or grid.settings.get("device", "auto"))
    pixels = {name: frame_pixels(record) for name, record in records.items()}
    similarity: dict[tuple[str, str], float] = {}
    finals: dict[str, dict[str, np.ndarray]] = {}
    for judge in grid.judges:
        print(f"judge: {len(records)} cells judged by {judge.name}", flush=True)
        perceptor = load_perceptor(judge.name, torch_device, progress=False)
        for name, record in records.items():
            images = embed_frames(perceptor, pixels[name])
            values = [v for v in frame_similarities(perceptor, record, images) if not math.isnan(v)]
            similarity[name, judge.slug] = float(np.mean(values)) if values else float("nan")
            finals.setdefault(judge.slug, {})[name] = images[-1].numpy()
        del perceptor
    return similarity, finals


def set_distances(grid: Grid, finals: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Per judge, the CMMD between the final frames of every two levels of each factor (VQGAN,
    perceptor set, each varied setting), and per cell the Vendi score of its final frames over the
    grid's seeds (null with one seed): experiments/setdistances.py."""
    levels = {"vqgan": lambda c: c.vqgan.slug, "perceptor_set": lambda c: c.perceptor_set,
              **{s: (lambda c, s=s: dict(c.varied)[s]) for s in grid.vary}}
    replicates: dict[str, list[str]] = {}
    for cell in grid.cells:
        replicates.setdefault(replace(cell, seed=grid.seeds[0], replicate=False).name, []).append(cell.name)
    out: dict[str, Any] = {"cmmd": {}, "vendi": {}}
    for judge, by_cell in finals.items():
        out["cmmd"][judge] = {}
        for factor, level_of in levels.items():
            sets: dict[str, list[np.ndarray]] = {}
            for cell in grid.cells:
                sets.setdefault(level_of(cell), []).append(by_cell[cell.name])
            out["cmmd"][judge][factor] = {a: {b: rounded(cmmd(np.stack(sets[a]), np.stack(sets[b])))
                                              for b in sets if b != a} for a in sets}
        out["vendi"][judge] = {base: rounded(vendi(np.stack([by_cell[n] for n in names])))
                               for base, names in replicates.items()}
    return out


def bias_table(grid: Grid, similarity: dict[tuple[str, str], float]) -> pd.DataFrame:
    """The bias matrix: a row per cell and judge with z-scores within each judge, seed and level of
    the varied settings (a column each, here; the file keeps them in the cell's name)."""
    rows = [[c.name, c.vqgan.slug, c.perceptor_set, c.seed, j.slug, similarity[c.name, j.slug],
             *(level for _, level in c.varied)] for c in grid.cells for j in grid.judges]
    return standardise(pd.DataFrame(rows, columns=[*BIAS_COLUMNS[:-1], *grid.vary]), list(grid.vary))


def nested_means(bias: pd.DataFrame) -> dict:
    """{vqgan: {perceptor set: {judge: mean similarity over seeds}}}."""
    result: dict = {}
    means = bias.groupby(["vqgan", "perceptor_set", "judge"], sort=False)["similarity"].mean()
    for (vqgan, perceptor_set, judge), value in means.items():
        result.setdefault(vqgan, {}).setdefault(perceptor_set, {})[judge] = rounded(value)
    return result


def preference_metrics(bias: pd.DataFrame, conditions: Sequence[str] = ()) -> dict:
    """Self-preference per judge and per VQGAN (experiments/bias.py), within each level of the
    varied settings `conditions` (self_preference.json)."""
    prefs = self_preference(bias, conditions)
    return {f"{by}s": {row[by]: {k: (rounded(row[k]) if k != "seeds" else int(row[k]))
                                 for k in ("mean", "low", "high", "seeds")}
                       for row in summary(prefs, by).to_dict("records")}
            for by in ("judge", "vqgan")}


def judge(grid: Grid, folder: Path = SCORES_DIR, *, device: str | None = None) -> dict[str, Path]:
    """Judge every cell of the grid with every judge; write the judge stage's score files."""
    similarity, finals = judge_cells(grid, read_cells(grid), device)
    bias = bias_table(grid, similarity)
    folder.mkdir(parents=True, exist_ok=True)
    return {BIAS_MATRIX: write_csv(folder / BIAS_MATRIX, bias, BIAS_COLUMNS),
            BIAS: write_json(folder / BIAS, nested_means(bias)),
            CMMD: write_json(folder / CMMD, set_distances(grid, finals)),
            SELF_PREFERENCE: write_json(folder / SELF_PREFERENCE, preference_metrics(bias, list(grid.vary)))}


def judge_grid(params: str) -> None:
    """The stage: judge the grid of `params` and say what was written."""
    grid = load_grid(params)
    paths = judge(grid)
    print(f"judge: {len(grid.cells)} cells × judges {', '.join(j.slug for j in grid.judges)} -> "
          f"{', '.join(str(p) for p in paths.values())}")
    if grid.untrained:
        print("judge: UNTRAINED models: these numbers only show that the pipeline works")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return error_boundary(lambda: judge_grid(args[0] if args else PARAMS_FILE))


if __name__ == "__main__":
    sys.exit(main())
