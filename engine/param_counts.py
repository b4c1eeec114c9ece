"""Parameter counts of open_clip architectures, for the sizes `engine models` shows before a
perceptor's weights are downloaded (fp32 weights: 4 bytes a parameter).

open_clip's built-in architectures are counted once into `param_counts.json` beside this module
(`python -m engine.param_counts` rewrites it; null: open_clip could not build it there); any other architecture (a newer open_clip's, a
user's) is counted on first use by building it on the meta device (no memory, ~0.15 s).
"""
from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import open_clip
import torch

from engine.tiny import quiet_open_clip

TABLE = Path(__file__).with_name("param_counts.json")
BYTES_PER_PARAM = 4  # fp32 weights files


@cache
def _table() -> dict[str, int | None]:
    try:
        return json.loads(TABLE.read_text())
    except (OSError, ValueError):
        return {}


@cache
def count_parameters(arch: str) -> int | None:
    """The parameter count of an open_clip architecture, built on the meta device (None when
    open_clip cannot build it here, e.g. it needs `transformers`)."""
    try:
        with quiet_open_clip(), torch.device("meta"):  # built without memory: no weights are allocated
            model = open_clip.create_model(arch, pretrained=None, device="meta")
    except Exception:  # open_clip raises many kinds for an architecture it cannot build
        return None
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def parameters(arch: str) -> int | None:
    """The architecture's parameter count: from the table (null there: open_clip could not build
    it when the table was written), else counted (cached per architecture)."""
    table = _table()
    return table[arch] if arch in table else count_parameters(arch)


def size_mb(arch: str) -> float | None:
    """The size of the architecture's fp32 weights in MB (2**20 bytes), or None where unknown."""
    count = parameters(arch)
    return count * BYTES_PER_PARAM / 2**20 if count else None


def write_table() -> None:
    """Count every open_clip built-in architecture into `TABLE`."""
    archs = sorted({arch for arch, _ in open_clip.list_pretrained()})
    counts = {arch: count_parameters(arch) for arch in archs}
    TABLE.write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
    counted = sum(n is not None for n in counts.values())
    print(f"{TABLE}: {counted} of {len(archs)} architectures counted (open_clip {open_clip.__version__}, "
          f"torch {torch.__version__})", file=sys.stderr)


if __name__ == "__main__":
    write_table()
