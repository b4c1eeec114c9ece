"""Where a step's time goes: `torch.profiler` over the engine's step, eager and compiled
(`compile`), at the study's shape by default (real architectures, random weights).

Prints, per variant, the share of the step's CPU time by kind of work (convolutions, matmuls,
attention, cutout sampling, norms, fused kernels, other) and the ops that took the most. The
compiled variant builds its kernels with profiling hooks (`cpp.enable_kernel_profile`), a separate
compilation from a run's (minutes the first time).

    python benchmarks/profile_step.py [--steps 2] [--rows 12] [key=value ...]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench import guided_step, load_models  # noqa: E402
from engine.compiled import compile_guide  # noqa: E402
from engine.device import keep_freed_memory, set_determinism  # noqa: E402
from engine.settings import load_config  # noqa: E402
from engine.step import build_guide  # noqa: E402

STUDY = ["vqgan_model=imagenet_16384", "perceptors=ViT-B-32:openai", "width=256", "height=128", "cutouts=60",
         "device=cpu"]
KINDS = [  # (kind, substrings of op names), first match wins
    ("convolution", ("conv", "mkldnn")), ("attention", ("attention", "sdpa", "softmax")),
    ("matmul", ("addmm", "mm", "linear", "matmul", "bmm")), ("cutout sampling", ("grid_sampl", "index")),
    ("norms", ("norm",)), ("fused kernels (inductor)", ("cpp_fused", "graph_")),
]


def kind(name: str) -> str:
    lowered = name.lower()
    return next((k for k, keys in KINDS if any(key in lowered for key in keys)), "other")


def summary(events, rows: int) -> list[str]:
    """The profile's self CPU time by kind of work and its top ops."""
    ops = [e for e in events if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ops)
    by_kind: dict[str, float] = {}
    for e in ops:
        by_kind[kind(e.key)] = by_kind.get(kind(e.key), 0.0) + e.self_cpu_time_total
    lines = [f"    {k:<26} {t / total:6.1%}" for k, t in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    lines.append("    top ops (self CPU time):")
    for e in sorted(ops, key=lambda e: -e.self_cpu_time_total)[:rows]:
        lines.append(f"      {e.self_cpu_time_total / 1e6:8.3f} s {e.self_cpu_time_total / total:6.1%}  "
                     f"{e.count:5d}×  {e.key[:80]}")
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="profiled steps per variant (after one warm-up)")
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    settings = load_config(None, [*STUDY, *args.overrides])
    device = torch.device("cpu")
    set_determinism(settings.deterministic, device)
    keep_freed_memory()
    models = load_models(settings, device, settings.precision)
    torch._inductor.config.cpp.enable_kernel_profile = True
    for variant in ("off", "on"):
        guide = build_guide(replace(settings, compile=variant), *models)
        compile_guide(guide, device)
        step = guided_step(guide)
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        events = prof.key_averages()
        seconds = sum(e.self_cpu_time_total for e in events) / 1e6 / args.steps
        print(f"compile={variant}: {seconds:.2f} s of self CPU time per step "
              f"({guide.compilation.record()['why']}, compiled: {guide.compilation.compiled})")
        print("\n".join(summary(events, args.rows)))


if __name__ == "__main__":
    main(sys.argv[1:])
