"""Peak memory of loading an imagenet_16384-sized taming checkpoint, against the weights it keeps.

Builds a replica of imagenet_16384's file (random weights of its real ddconfig, the discriminator
and LPIPS weights beside them, two Adam states: about 980 MB, in Lightning 1.0.8's layout) in a
temporary folder, then loads it with `engine.vqgan.load_vqgan_files` in a fresh subprocess and
prints how far the resident set grew (peak, with every kept weight read once) next to the bytes of
the weights the VQGAN keeps. Goal: at most 1.5x. The folder is deleted afterwards.

    python benchmarks/checkpoint_memory.py [--legacy]

`--legacy` writes the replica in the legacy (non-zip) format, which cannot be memory-mapped.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import torch  # noqa: E402
import yaml  # noqa: E402

from checkpoint_fixtures import lightning_dump, lightning_names  # noqa: E402
from engine.pretrained import PRETRAINED_VQGANS  # noqa: E402
from engine.vqgan import build_vqgan, parse_config  # noqa: E402

# Shapes beside the VQGAN in the real file: taming's NLayerDiscriminator (ndf 64, 3 layers) and
# LPIPS (VGG16 features plus its five 1x1 heads); only their sizes matter here.
_DISCRIMINATOR = [(64, 3, 4, 4), (64,), (128, 64, 4, 4), (128,), (128,), (256, 128, 4, 4), (256,), (256,),
                  (512, 256, 4, 4), (512,), (512,), (1, 512, 4, 4), (1,)]
_VGG = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256), (512, 256),
        (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]

_CHILD = """
import json, resource, sys, time
import torch
import engine.factory  # everything a run has imported before it loads a model (open_clip, taming)
from engine.vqgan import load_vqgan_files

def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

before = rss_kb("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
t0 = time.perf_counter()
model = load_vqgan_files(sys.argv[1], sys.argv[2])
load_s = time.perf_counter() - t0
kept = sum(t.numel() * t.element_size() for t in model.state_dict().values())
checksum = sum(float(t.sum()) for t in model.state_dict().values())  # every weight read once
print(json.dumps({"rss_before_mb": before / 1024, "peak_mb": rss_kb("VmHWM:") / 1024,
                  "kept_mb": kept / 2**20, "load_s": load_s, "checksum": checksum}))
"""


def write_replica(folder: Path, legacy: bool) -> tuple[Path, Path]:
    """imagenet_16384's config and a same-sized Lightning checkpoint of random weights."""
    section = next(s for s in PRETRAINED_VQGANS if s.name == "imagenet_16384").architecture
    state = dict(build_vqgan(parse_config(section, "imagenet_16384")).state_dict())
    for i, shape in enumerate(_DISCRIMINATOR):
        state[f"loss.discriminator.main.{i}.weight"] = torch.randn(shape)
    for i, (out, inp) in enumerate(_VGG):
        state[f"loss.perceptual_loss.net.slice.{i}.weight"] = torch.randn(out, inp, 3, 3)
    config, ckpt = folder / "model.yaml", folder / "last.ckpt"
    config.write_text(yaml.safe_dump({"model": section}))
    with lightning_names():
        torch.save(lightning_dump(state, "attributedict"), ckpt, _use_new_zipfile_serialization=not legacy)
    return config, ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legacy", action="store_true", help="write the replica in the legacy non-zip format")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ckpt-memory-") as tmp:
        config, ckpt = write_replica(Path(tmp), args.legacy)
        size_mb = ckpt.stat().st_size / 2**20
        out = subprocess.run([sys.executable, "-c", _CHILD, str(config), str(ckpt)], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    grown = result["peak_mb"] - result["rss_before_mb"]
    print(f"replica of imagenet_16384 ({'legacy' if args.legacy else 'zip'} format): {size_mb:.0f} MB file")
    print(f"  weights kept      {result['kept_mb']:.0f} MB")
    print(f"  peak RSS growth   {grown:.0f} MB while loading and reading every kept weight "
          f"({grown / result['kept_mb']:.2f}x the kept weights; goal <= 1.5x)")
    print(f"  load time         {result['load_s']:.1f} s")


if __name__ == "__main__":
    main()
