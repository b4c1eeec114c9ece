"""The `compile` setting: the step's model compute through `torch.compile`, forward and backward.

What is compiled is `engine.step.model_loss`, a pure function of one step's inputs: VQGAN decode,
cutout rendering, each perceptor's image encoder, the prompt and TV losses. The random draws
(cutouts and their noise) and the straight-through quantisation stay eager, in the same order
as without compile, so a compiled run draws the same numbers; its frames may differ from an
eager run's in the last bits, and a rerun of either is byte-identical to itself.

- `off`, `on`, `auto`: `auto` compiles on CPU when the run has `AUTO_MIN_STEPS` steps and its model
  compute, steps × FLOP per step (counted on fake tensors, no compute), reaches `AUTO_MIN_PFLOP`;
  never on other devices (not measured there).
- Compile once: inductor's FX graph and AOT autograd caches live in the project's cache folder
  (`<cache>/inductor`, unless TORCHINDUCTOR_CACHE_DIR is set), so later runs of the same shape
  (the grid's cells of one shape) load what the first compiled.
- The compilation happens before the first step, on throwaway inputs of the run's shapes
  (`Compilation.warm_up`); if it fails, or a compiled call fails later, the step runs eager from
  then on, after one warning line naming the reason.
- CUDA: the compiler's CUDA-graph mode (static shapes: the cutouts' count and size are fixed per
  run); under `deterministic=true` also inductor's deterministic mode.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from engine import cache

if TYPE_CHECKING:
    from engine.step import Guide

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
# auto, on CPU: runs of at least AUTO_MIN_STEPS steps whose steps × FLOP per step reach AUTO_MIN_PFLOP,
# where the compilation repays itself (the measurements: docs/engine.md, Compile)
AUTO_MIN_STEPS = 100
AUTO_MIN_PFLOP = 0.2


def cache_folder() -> Path:
    """Where inductor keeps its compiled artefacts: TORCHINDUCTOR_CACHE_DIR, set (for this process
    and its children) to `<cache>/inductor` unless the user set it. Importing torch._dynamo sets it
    to torch's default (a folder in /tmp), so that value counts as not set."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get(CACHE_ENV)
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ[CACHE_ENV] = str(cache.cache_dir() / "inductor")
    return Path(os.environ[CACHE_ENV])


def compile_options(device: torch.device, deterministic: bool, cuda_graphs: bool = True) -> dict:
    """inductor's options for the step on CUDA: CUDA graphs (unless `cuda_graphs` is false), and
    under `deterministic=true` inductor's deterministic mode (no benchmarking that changes numerics)."""
    if device.type != "cuda":
        return {}
    return {"triton.cudagraphs": cuda_graphs, "deterministic": deterministic}


def step_flops(guide: Guide) -> int:
    """FLOPs of one step's forward and backward (torch's counter), traced on fake tensors: no compute."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from engine.step import start_latent, step_loss

    rng = torch.Generator(guide.vqgan.codebook.device).manual_seed(0)
    with FakeTensorMode(allow_non_fake_inputs=True), FlopCounterMode(display=False) as counter:
        total, _ = step_loss(guide, start_latent(guide, rng).z, 0, rng, None)
        total.backward()
    return counter.get_total_flops()


def decide(guide: Guide, device: torch.device) -> tuple[bool, str]:
    """Whether to compile the step, and why."""
    setting = guide.settings.compile
    if setting != "auto":
        return setting == "on", f"compile={setting}"
    if device.type != "cpu":
        return False, f"auto: not on {device.type} (measured on CPU only; compile=on compiles)"
    steps = len(guide.schedule)
    if steps < AUTO_MIN_STEPS:
        return False, f"auto: {steps} steps < {AUTO_MIN_STEPS}"
    try:
        pflop = steps * step_flops(guide) / 1e15
    except Exception as err:  # noqa: BLE001 (an op fake tensors cannot run: stay eager rather than fail)
        return False, f"auto: the step's FLOPs could not be counted ({type(err).__name__}: {err})"[:300]
    verdict = ">=" if pflop >= AUTO_MIN_PFLOP else "<"
    return pflop >= AUTO_MIN_PFLOP, f"auto: {steps} steps, {pflop:.3g} PFLOP {verdict} {AUTO_MIN_PFLOP:g} PFLOP"


class Compilation:
    """How the step's model compute runs: `model_loss` compiled, or eager (by decision or after a
    failure); called as `model_loss` is."""

    def __init__(self, fn: Callable | None, why: str, cuda_graphs: bool = False):
        self.fn, self.why, self.cuda_graphs = fn, why, cuda_graphs
        self.fallback: str | None = None
        self.seconds: float | None = None  # the warm-up: compilation and one step
        self.from_cache = False  # nothing compiled anew: loaded from inductor's cache (or this process's)

    @property
    def compiled(self) -> bool:
        return self.fn is not None and self.fallback is None

    def __call__(self, *args):
        from engine.step import model_loss

        if self.compiled:
            try:
                with _compile_config():
                    if self.cuda_graphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    return self.fn(*args)
            except Exception as err:  # noqa: BLE001 (any compiler failure: the step goes on eager)
                self.fall_back(err)
        return model_loss(*args)

    def fall_back(self, err: Exception) -> None:
        """Run eager from now on, saying why in one line (the innermost error's first line)."""
        names = [type(err).__name__]
        while (inner := getattr(err, "inner_exception", None) or err.__cause__) is not None:
            err = inner
            names.append(type(err).__name__)
        first = (str(err).strip().splitlines() or [""])[0][:300]
        self.fallback = f"{': '.join(dict.fromkeys(names))}: {first}"
        print(f"warning: torch.compile failed ({self.fallback}); the step runs eager", file=sys.stderr, flush=True)

    def warm_up(self, guide: Guide) -> None:
        """Compile now, forward and backward, on throwaway draws of the run's shapes; a failure
        (here the backward's too) falls back to eager."""
        from engine.step import start_latent, step_loss

        before = _counts()
        started = time.perf_counter()
        rng = torch.Generator(guide.vqgan.codebook.device).manual_seed(0)
        try:
            total, _ = step_loss(guide, start_latent(guide, rng).z, 0, rng, None)
            total.backward()
        except Exception as err:  # noqa: BLE001
            if not self.compiled:
                raise  # the eager step failed: not the compiler's doing
            self.fall_back(err)
        self.seconds = time.perf_counter() - started
        counted = {key: n - before[key] for key, n in _counts().items()}
        self.cuda_graphs = self.cuda_graphs and self.compiled and not counted["cudagraph_skips"]
        self.from_cache = self.compiled and not (counted["fxgraph_cache_miss"] or counted["fxgraph_cache_bypass"])

    def record(self) -> dict:
        """For the sidecar and metrics.json."""
        return {"step": self.compiled, "why": self.why, "cuda_graphs": self.cuda_graphs, "fallback": self.fallback,
                "seconds": None if self.seconds is None else round(self.seconds, 1), "from_cache": self.from_cache}


def _compile_config() -> contextlib.ExitStack:
    """torch's settings for compiling the step, scoped to its calls: the backward compiles with the
    forward (a backward that fails to compile fails in the call, and falls back); a recompile past
    dynamo's limit fails instead of running eager silently; AOT autograd's cache keeps graphs
    holding a custom autograd.Function (`clamp_with_grad`)."""
    from torch._dynamo import config as dynamo_config
    from torch._functorch import config as functorch_config

    stack = contextlib.ExitStack()
    stack.enter_context(dynamo_config.patch(fail_on_recompile_limit_hit=True))
    stack.enter_context(functorch_config.patch(force_non_lazy_backward_lowering=True,
                                               autograd_cache_allow_custom_autograd_functions=True))
    return stack


# ops inductor runs as aten's kernels instead of its own code: its group norm over a channels_last
# image (the VQGAN's) reduces each group in a pass of its own, many times aten's time
ATEN_OPS = ("native_group_norm", "native_group_norm_backward")


@functools.cache
def declare_aten_ops() -> None:
    """Tell inductor to run `ATEN_OPS` as aten's kernels, with the layouts it would choose unasked
    (the backward's inputs contiguous). Unasked, inductor makes the same fallback implicitly, but
    then fails the compile whenever the environment sets CI (torch's own CI check that an op with a
    decomposition is decomposed, which CI services trip)."""
    from torch._inductor.lowering import lowerings, make_fallback, require_contiguous

    for name in ATEN_OPS:
        op = getattr(torch.ops.aten, name).default
        if op not in lowerings:
            make_fallback(op, layout_constraint=require_contiguous if name.endswith("_backward") else None,
                          warn=False, override_decomp=True)


def bmm_of_one_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """aten.bmm whose second operand is one matrix repeated over the batch (stride 0), as one mm.

    nn.MultiheadAttention's input projection in open_clip's ViT is such a bmm over the token
    positions (50 × (60 cutouts × 768) @ (768 × 2304)), which reads the 7 MB weight once per
    position; one (3000 × 768) @ (768 × 2304) GEMM reads it once. Other bmms stay bmms."""
    if b.stride(0) != 0:
        return NotImplemented
    order = (1, 0, 2) if a.transpose(0, 1).is_contiguous() else (0, 1, 2)  # the rows in memory order
    rows = a.permute(order).reshape(-1, a.shape[2])
    return torch.mm(rows, b[0]).view(a.shape[order[0]], a.shape[order[1]], -1).permute(order).contiguous()


def patch_side(weight: torch.Tensor, stride: list[int], padding: list[int], dilation: list[int], transposed: bool,
               groups: int) -> int | None:
    """k when a 2D convolution cuts its input into non-overlapping k × k patches (stride k, no
    padding, no dilation, one group), which makes it one GEMM over the patches; else None."""
    k = weight.shape[-1]
    plain = not transposed and groups == 1 and not any(padding) and list(dilation) == [1, 1]
    return k if weight.dim() == 4 and weight.shape[-2] == k and list(stride) == [k, k] and plain else None


def convolution_of_patches(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
                           padding: list[int], dilation: list[int], transposed: bool, output_padding: list[int],
                           groups: int) -> torch.Tensor:
    """aten.convolution over non-overlapping patches (`patch_side`) as one GEMM.

    The ViT's patch embedding (32 × 32 patches of 60 cutouts) is one: oneDNN takes 4× the time of
    the GEMM for it, forward and backward (`convolution_backward_of_patches`); the VQGAN's 1 × 1
    convolutions are others. Other convolutions stay convolutions."""
    k = patch_side(weight, stride, padding, dilation, transposed, groups)
    if k is None or x.dim() != 4 or x.shape[-1] % k or x.shape[-2] % k:
        return NotImplemented
    n, c, h, w = x.shape
    rows = x.reshape(n, c, h // k, k, w // k, k).permute(0, 2, 4, 1, 3, 5).reshape(-1, c * k * k)
    kernel = weight.reshape(weight.shape[0], -1).t()
    out = torch.mm(rows, kernel) if bias is None else torch.addmm(bias, rows, kernel)
    return out.view(n, h // k, w // k, -1).permute(0, 3, 1, 2)


def convolution_backward_of_patches(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                                    bias_sizes: list[int] | None, stride: list[int], padding: list[int],
                                    dilation: list[int], transposed: bool, output_padding: list[int], groups: int,
                                    output_mask: list[bool]) -> tuple:
    """The input's gradient of `convolution_of_patches` as one GEMM (frozen weights: the step
    needs no other); a convolution that also wants its weights' gradient stays aten's."""
    k = patch_side(weight, stride, padding, dilation, transposed, groups)
    if k is None or output_mask[1] or output_mask[2] or x.shape[-1] % k or x.shape[-2] % k:
        return NotImplemented
    n, c, h, w = x.shape
    rows = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])
    patches = torch.mm(rows, weight.reshape(weight.shape[0], -1))
    return patches.view(n, h // k, w // k, c, k, k).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w), None, None


class DecompositionTable(dict):
    """inductor's decomposition table with this module's changes (`decompositions`). inductor puts
    the table a graph was compiled with into its cache keys by pickling it, and our functions do
    not pickle to stable bytes (the cache was bypassed): this table pickles as the call that makes it."""

    def __reduce__(self) -> tuple:
        return decompositions, ()


@functools.cache
def decompositions() -> DecompositionTable:
    """inductor's decompositions without those of `ATEN_OPS`, with ours: `bmm_of_one_matrix`,
    `convolution_of_patches`, `convolution_backward_of_patches`."""
    from torch._inductor.decomposition import select_decomp_table

    kept = {getattr(torch.ops.aten, name) for name in ATEN_OPS}
    table = DecompositionTable((op, fn) for op, fn in select_decomp_table().items()
                               if getattr(op, "overloadpacket", op) not in kept)
    table.update({torch.ops.aten.bmm.default: bmm_of_one_matrix,
                  torch.ops.aten.convolution.default: convolution_of_patches,
                  torch.ops.aten.convolution_backward.default: convolution_backward_of_patches})
    return table


def inductor(graph: torch.fx.GraphModule, inputs: list, options: dict | None = None) -> Callable:
    """torch.compile's backend: inductor with `decompositions()`, its config patched by `options`
    (`compile_options`). The table pickles by name only, so what it changes goes into inductor's
    cache keys as an entry of `unsafe_marked_cacheable_functions`, which names no function of the graph."""
    from torch._inductor.compile_fx import compile_fx

    declare_aten_ops()
    ours = [fn.__name__ for op, fn in decompositions().items() if fn.__module__ == __name__]
    salt = {"unsafe_marked_cacheable_functions": {f"{__name__}.decompositions": f"aten: {ATEN_OPS}; ours: {ours}"}}
    return compile_fx(graph, inputs, decompositions=decompositions(), config_patches={**salt, **(options or {})})


def _counts() -> dict[str, int]:
    """inductor's counts of CUDA graphs skipped and of its FX graph cache's hits, misses and bypasses."""
    from torch._dynamo.utils import counters
    return {key: counters["inductor"][key] for key in ("cudagraph_skips", "fxgraph_cache_hit", "fxgraph_cache_miss",
                                                       "fxgraph_cache_bypass")}


def compile_record(guide: Guide) -> dict | None:
    """How the step was computed (`Compilation.record`), None for a guide never prepared by `compile_guide`."""
    return guide.compilation.record() if guide.compilation is not None else None


def compile_guide(guide: Guide, device: torch.device, quiet: bool = True, cuda_graphs: bool = True) -> Compilation:
    """The run's `Compilation`, set on `guide` and, when compiling, warmed up (`cuda_graphs`: false
    compiles without CUDA graphs, for `engine gpucheck`'s comparison)."""
    from engine.step import model_loss

    wanted, why = decide(guide, device)
    if not wanted:
        guide.compilation = Compilation(None, why)
        return guide.compilation
    folder = cache_folder()
    if not quiet:
        print(f"compiling the step ({why}; minutes the first time for a shape, then cached in {folder})",
              file=sys.stderr, flush=True)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found" on CPU
    options = compile_options(device, guide.settings.deterministic, cuda_graphs)
    fn = torch.compile(model_loss, backend=inductor, dynamic=False, options=options or None)  # compiles at its first call
    guide.compilation = Compilation(fn, why, cuda_graphs=options.get("triton.cudagraphs", False))
    guide.compilation.warm_up(guide)
    return guide.compilation
