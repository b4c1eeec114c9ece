"""How far precision=bf16 drifts from fp32: the study's settings (params.yaml) on random-weight real
architectures, the same seed and the same weights, N steps of the engine's loop in each precision.

Prints the per-step total-loss difference (mean and max of |bf16 - fp32|, relative to the fp32
loss) and the PSNR of bf16's final frame against fp32's. Slow on a CPU; on a CPU without bf16
instructions run it with ENGINE_CPU_BF16=emulate (very slow: use --steps, --cutouts, small sizes).

    python benchmarks/bf16_drift.py [--steps 200] [key=value ...]
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench import load_models  # noqa: E402
from engine.device import pick_device, set_determinism  # noqa: E402
from engine.precision import prepare_models  # noqa: E402
from engine.loop import optimise  # noqa: E402
from engine.runfolder import RunFolder  # noqa: E402
from engine.settings import Settings, load_config  # noqa: E402
from engine.step import build_guide  # noqa: E402

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def study_settings(steps: int, overrides: list[str]) -> Settings:
    """params.yaml's shared settings, cut to the first scene's first `steps` steps (one scene is
    active alone for its first 1000 steps in the study), with `overrides` on top."""
    shared = yaml.safe_load(PARAMS.read_text())["settings"]
    shared.update(scenes=shared["scenes"].split("||")[0].strip(), steps_per_scene=steps, device="cpu",
                  vqgan_model="imagenet_16384", perceptors=["ViT-B-32:openai"])
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(shared, f)
    return load_config(f.name, [f"save_every={steps}", *overrides])


def run_once(settings: Settings, models, out_dir: Path) -> tuple[list[float], np.ndarray, float]:
    """Losses per step, the final frame and the wall time of one run of the engine's loop."""
    device = pick_device(settings.device)
    folder = RunFolder(str(out_dir), settings.precision)
    folder.path.mkdir(parents=True)
    t0 = time.perf_counter()
    optimise(build_guide(settings, *models), folder, device, quiet=True)
    with open(folder.losses, newline="") as f:
        losses = [float(row["total"]) for row in csv.DictReader(f)]
    return losses, iio.imread(list(folder.frame_paths().values())[-1]).astype(np.float64), time.perf_counter() - t0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    base = study_settings(args.steps, args.overrides)
    device = pick_device(base.device)
    set_determinism(base.deterministic)
    fp32_models = load_models(base, device, "fp32")
    bf16_models = copy.deepcopy(fp32_models)  # the same random weights
    prepare_models("bf16", device, *bf16_models)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision, models in (("fp32", fp32_models), ("bf16", bf16_models)):
            settings = Settings(**{**base.to_dict(), "precision": precision})
            results[precision] = run_once(settings, models, Path(tmp))
    (l32, f32, t32), (l16, f16, t16) = results["fp32"], results["bf16"]
    diff = np.abs(np.array(l16) - np.array(l32))
    rel = diff / np.maximum(np.abs(np.array(l32)), 1e-12)
    report = {
        "settings": {k: getattr(base, k) for k in ("vqgan_model", "perceptors", "width", "height", "cutouts",
                                                   "steps_per_scene", "seed")},
        "weights": "random (untrained)", "steps": len(l32),
        "loss_fp32_first_last": [l32[0], l32[-1]], "loss_bf16_first_last": [l16[0], l16[-1]],
        "abs_loss_diff_mean": float(diff.mean()), "abs_loss_diff_max": float(diff.max()),
        "rel_loss_diff_mean": float(rel.mean()), "rel_loss_diff_max": float(rel.max()),
        "abs_loss_diff_per_step": [round(float(d), 6) for d in diff],
        "final_frame_psnr_db": psnr(f16, f32), "wall_s": {"fp32": t32, "bf16": t16},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
