"""One run: load the models, take the run folder's lock, then optimise (or resume, or recognise
the run as done) and write the folder through `engine.runfolder` (docs/run-folder-format.md).

The loop (`optimise`) waits for the device only at save points: there the losses since the last
one are logged (losses.csv `step` = steps done), the averaged image is saved as the next frame
with its row of the frame table (step, scene weights, loss, SHA-256) and the resume state is
written, all by one background writer, in that order. Steps are addressed by their 0-based
`index`; `done` counts the steps done (`index + 1`).
"""
from __future__ import annotations

import platform
import secrets
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import open_clip
import torch
from tqdm.auto import tqdm

import engine
from engine import runfolder
from engine.budget import check_memory
from engine.compiled import compile_guide, compile_record
from engine.device import keep_freed_memory, peak_memory_mb, pick_device, reset_peak_memory, set_determinism
from engine.factory import load_perceptor, load_vqgan
from engine.fsutil import atomic_write_json
from engine.locks import exclusive_lock
from engine.notebook import Preview
from engine.perceptor import Perceptor
from engine.precision import check_precision, fp32_math, prepare_models
from engine.resume import host_copy, load_resume_state, save_state_job
from engine.runfolder import Frame, RunFolder, RunFolderDamaged
from engine.settings import SEED_MAX, Settings, check_size_for_factor
from engine.step import (Guide, Latent, build_guide, is_move, move, new_optimiser, render, scene_at, scene_count,
                         start_latent, take_step)
from engine.video import write_video
from engine.vqgan import VQGAN
from engine.writer import BackgroundWriter, save_frame_job, to_uint8


@dataclass
class Progress:
    """What the run has done: the steps done when it (re)started, wall time before this process, one
    loss row per step done (`[steps done, scene, total, *per prompt]`) and the frame table so far."""

    start: int = 0
    wall_before: float = 0.0
    rows: list[list[float]] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.started


def execute(settings: Settings, *, quiet: bool = False, final_out_dir: str | None = None) -> Path:
    """Run (or resume, or recognise as done) one optimisation; return its folder.

    One writer per folder: its lock (`RunFolder.lock_file`) is held from before the folder is
    looked at until the run ends; a second writer gets `LockHeld` naming the holder's PID.
    `final_out_dir`: where the complete run will be moved (the grid's cells), recorded as the
    sidecar's `out_dir` while the run works in `settings.out_dir`.
    """
    device = prepare_device(settings)
    vqgan, perceptors = load_models(settings, device, quiet)
    folder = RunFolder(settings.out_dir, settings.file_namespace)
    with exclusive_lock(folder.lock_file, what=f"run folder {folder.path}"):
        mode = folder.check_settings(settings.to_dict(), settings.allow_overwrite)
        folder.clean_temp_files()  # only now is the folder known to hold this run
        if mode == "complete" and still_complete(folder, quiet):
            return folder.path
        settings = settle_seed(settings, folder)
        guide = build_guide(settings, vqgan, perceptors)
        compile_guide(guide, device, quiet)
        if mode == "new":
            folder.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder.sidecar, sidecar(settings, guide, device, final_out_dir))
        return optimise(guide, folder, device, quiet=quiet, preview=Preview.for_settings(settings))


def prepare_device(settings: Settings) -> torch.device:
    """The run's device, with its precision checked and determinism set."""
    device = pick_device(settings.device)
    check_precision(settings.precision, device)
    set_determinism(settings.deterministic, device)
    if device.type == "cpu":
        keep_freed_memory()
    return device


def load_models(settings: Settings, device: torch.device, quiet: bool) -> tuple[VQGAN, list[Perceptor]]:
    """The run's VQGAN and perceptors on `device`, prepared for its precision."""
    vqgan = load_vqgan(settings.vqgan_model, device, progress=not quiet)
    check_size_for_factor(settings, vqgan.factor)
    perceptors = [load_perceptor(name, device, progress=not quiet) for name in settings.perceptors]
    prepare_models(settings.precision, device, vqgan, perceptors)
    check_memory(settings, vqgan, perceptors, device)  # a size the device cannot hold, before it is allocated
    reset_peak_memory(device)  # the run's peak: from its models as cast, not the fp32 weights or earlier runs
    return vqgan, perceptors


def still_complete(folder: RunFolder, quiet: bool) -> bool:
    """Whether a finished run's frames are all as recorded; if not, it is reopened to re-render."""
    problems = folder.completion_problems()
    if not problems:
        if not quiet:
            print(f"{folder.path}: already complete with these settings; nothing to do")
        return True
    warn(folder, problems, "re-rendering the run from step 0 (frames are deterministic)")
    folder.reopen()
    return False


def settle_seed(settings: Settings, folder: RunFolder) -> Settings:
    """`seed=-1`: the folder's run keeps its seed; a new run draws one."""
    if settings.seed != -1:
        return settings
    old = (folder.read_sidecar() or {}).get("seed")
    kept = isinstance(old, int) and not isinstance(old, bool) and 0 <= old <= SEED_MAX
    return replace(settings, seed=old if kept else secrets.randbelow(2**31))


def warn(folder: RunFolder, problems: list[str], action: str) -> None:
    print(f"{folder.path}: {'; '.join(problems)}; {action}", file=sys.stderr, flush=True)


def sidecar(settings: Settings, guide: Guide, device: torch.device, final_out_dir: str | None = None) -> dict:
    """The run's settings sidecar: everything needed to know and repeat what was run."""
    recorded = settings.to_dict() | ({"out_dir": final_out_dir} if final_out_dir is not None else {})
    return {
        "format": runfolder.FORMAT,
        "settings": recorded,
        "seed": settings.seed,
        "models": {"vqgan": {**guide.vqgan.info.as_dict(), "factor": guide.vqgan.factor},  # pixels per latent cell
                   "perceptors": [p.info.as_dict() for p in guide.perceptors]},
        "prompts": [{"scene": p.scene, "text": p.text, "weight": p.weight,
                     "stop": None if p.stop == float("-inf") else p.stop, "label": p.label} for p in guide.prompts],
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "open_clip": open_clip.__version__, "engine": engine.__version__},
        "device": str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        "deterministic": settings.deterministic,
        "fp32_math": fp32_math(),  # CUDA fp32 matmuls and convolutions: "ieee" (true fp32) or "tf32"
        "compiled": compile_record(guide),  # how this run's first process computed its step
    }


def optimise(guide: Guide, folder: RunFolder, device: torch.device, *, quiet: bool = False,
             preview: Preview | None = None) -> Path:
    """The loop. Resumes from `folder`'s resume state when there is one; `preview`: a notebook's
    inline previews (`display_every`), which read the device only when one is due."""
    s, steps = guide.settings, len(guide.schedule)
    rng = torch.Generator(device).manual_seed(s.seed)
    latent = start_latent(guide, rng)
    optimiser = new_optimiser(guide, latent)
    progress = restore_or_start(folder, device, latent, optimiser, rng)
    pending: list[torch.Tensor] = []  # per step since the last save point: [total, *per prompt], on the device
    writer = BackgroundWriter()
    bar = tqdm(total=steps, initial=progress.start, disable=quiet, unit="step", desc=s.file_namespace)
    try:
        for index in range(progress.start, steps):
            if is_move(s, index):
                if guide.motion is not None:
                    move(guide, latent)
                if s.reset_lr_each_frame:
                    optimiser = new_optimiser(guide, latent)
            total, per_prompt = take_step(guide, latent, optimiser, index, rng)
            pending.append(torch.cat([total.detach()[None], per_prompt.detach()]))
            bar.update()
            done = index + 1
            if preview is not None and preview.due(done):
                show_preview(guide, latent, preview, done, total)
            if runfolder.is_save_point(done, s.save_every, steps):  # the only place the loop waits
                log_losses(guide, progress, pending, done)
                bar.set_postfix(loss=f"{progress.rows[-1][2]:.4f}")
                save_point(guide, folder, writer, latent, progress, done)
                writer.submit(save_state_job(folder, resume_state(device, latent, optimiser, rng, progress, done),
                                             progress.frames))
    finally:
        bar.close()
        writer.close()
    return finish(guide, folder, device, progress)


def show_preview(guide: Guide, latent: Latent, preview: Preview, done: int, total: torch.Tensor) -> None:
    """Show the image (the averaged one, as saved) after `done` steps with that step's loss."""
    with torch.no_grad():
        pixels = to_uint8(render(guide, latent.ema.average))
    preview.show(done, pixels, float(total))


def restore_or_start(folder: RunFolder, device: torch.device, latent: Latent, optimiser: torch.optim.Optimizer,
                     rng: torch.Generator) -> Progress:
    """Restore the latent, Adam and the RNG from the folder's newest usable resume state (its
    tensors load on the host; Adam's `step` counters stay there), or start at step 0."""
    state, problems = load_resume_state(folder, device)
    progress = Progress()
    if state is not None:
        latent.restore(state, device)
        optimiser.load_state_dict(state["optimiser"])
        rng.set_state(state["rng_state"])
        progress = Progress(state["step"], state["wall_time_s"], state["losses"],
                            [Frame(**row) for row in state["frames"]])
    if problems:
        warn(folder, problems, f"resuming from step {progress.start}" if progress.start
             else "restarting from step 0 (frames are deterministic)")
    return progress


def log_losses(guide: Guide, progress: Progress, pending: list[torch.Tensor], done: int) -> None:
    """Move the pending steps' losses to the host (the one sync) as rows `[steps done, scene, ...]`."""
    losses = torch.stack(pending).cpu().tolist()
    first = done - len(pending)
    progress.rows += [[index + 1, scene_at(guide, index), *values] for index, values in enumerate(losses, first)]
    pending.clear()


def save_point(guide: Guide, folder: RunFolder, writer: BackgroundWriter, latent: Latent, progress: Progress,
               done: int) -> None:
    """Queue the frame saved once `done` steps are done (the averaged image) with its row of the
    frame table (the step, that step's scene weights and loss), and losses.csv."""
    s = guide.settings
    with torch.no_grad():
        pixels = to_uint8(render(guide, latent.ema.average))
    n = runfolder.saved_frame(done, s.save_every)
    scenes = runfolder.scene_weights(done - 1, scene_count(guide), s.steps_per_scene, s.interpolation_steps)
    frame = runfolder.Frame(n, folder.frame(n).name, done, progress.rows[-1][2], scenes=scenes)
    writer.submit(save_frame_job(folder, frame, pixels, progress.frames))
    labels, rows = [p.label for p in guide.prompts], list(progress.rows)
    writer.submit(lambda: folder.write_losses(labels, rows))


def resume_state(device: torch.device, latent: Latent, optimiser: torch.optim.Optimizer, rng: torch.Generator,
                 progress: Progress, done: int) -> dict:
    """The resume state after `done` steps (host copies; the writer adds the frames' hashes)."""
    return {"step": done, **latent.state(), "optimiser": host_copy(optimiser.state_dict()),
            "rng_state": rng.get_state(), "device_type": device.type, "wall_time_s": progress.wall_time(),
            "losses": list(progress.rows)}


def finish(guide: Guide, folder: RunFolder, device: torch.device, progress: Progress) -> Path:
    """Check every frame as recorded, write the video and metrics.json (the mark of a complete
    run), and drop the resume states."""
    s, steps, hashes = guide.settings, len(guide.schedule), [f.sha256 for f in progress.frames]
    elapsed = time.perf_counter() - progress.started
    problems = folder.frame_problems(hashes)
    if problems or len(hashes) != runfolder.frame_count(steps, s.save_every):
        raise RunFolderDamaged(f"{folder.path}: {'; '.join(problems) or 'frames are missing'} after the run; "
                               "run the same command again to re-render them")
    frames = [folder.frame(n) for n in range(1, len(hashes) + 1)]
    write_video(frames, folder.video, s.frames_per_second)
    final, labels = progress.rows[-1], [p.label for p in guide.prompts]
    folder.write_metrics({
        "steps": steps, "frames": len(frames), "final_loss": final[2],
        "final_prompt_losses": dict(zip(labels, final[3:])),
        "steps_per_second": (steps - progress.start) / elapsed if elapsed else None,
        "wall_time_s": progress.wall_before + elapsed, "peak_memory_mb": peak_memory_mb(device),
        "resumed_from_step": progress.start or None, "compiled": compile_record(guide),
    })
    folder.resume.unlink(missing_ok=True)
    folder.resume_prev.unlink(missing_ok=True)
    return folder.path
