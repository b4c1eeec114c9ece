"""The optimisation loop: one run = one VQGAN × a set of perceptors × one seed.

Each step: quantize z → decode → cutouts → perceptor embeddings → spherical-distance loss to
every prompt (weights, stops, scene blend) + image MSE terms → Adam step → clamp z to the
codebook bounds. Every `steps_per_frame` steps a new frame starts (2D animation moves the
image and re-encodes it); every `save_every` steps a frame is saved.
"""
from __future__ import annotations

import platform
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from tqdm import tqdm

import engine
from engine.animation import transform_2d
from engine.cutouts import render_cutouts, sample_cutouts
from engine.device import keep_freed_memory, peak_memory_mb, pick_device, set_determinism
from engine.factory import load_perceptor, load_vqgan
from engine.fsutil import atomic_write_json
from engine.locks import exclusive_lock
from engine.losses import image_mse, prompt_losses
from engine.outputs import (SIDECAR_FORMAT, BackgroundWriter, RunFolder, RunFolderDamaged, load_resume_state,
                            save_frame_job, save_state_job, to_uint8, write_losses_csv, write_metrics,
                            write_video)
from engine.perceptor import Perceptor
from engine.prompts import Prompt, parse_prompt_list, parse_scenes, scene_blend, total_steps
from engine.settings import Settings, SettingsError, check_size_for_factor
from engine.vqgan import VQGAN


@dataclass
class Guide:
    """Everything a step needs besides z: models, prompt targets, the weight schedule."""

    settings: Settings
    vqgan: VQGAN
    perceptors: list[Perceptor]
    prompts: list[Prompt]
    targets: list[torch.Tensor]  # per perceptor: (P, D) unit embeddings
    schedule: torch.Tensor  # (steps, P): each prompt's weight at each step
    stops: torch.Tensor  # (P,)
    init_image: torch.Tensor | None
    z_min: torch.Tensor
    z_max: torch.Tensor

    @property
    def cut_size(self) -> int:
        return max(max(p.input_size) for p in self.perceptors)


def load_image(path: str, size: tuple[int, int] | None, device: torch.device) -> torch.Tensor:
    """An image file → (1, 3, H, W) in [0, 1], resized to size=(H, W) when given."""
    try:
        image = Image.open(path).convert("RGB")
    except (OSError, ValueError) as err:
        raise SettingsError(f"image {path!r} cannot be read: {err}") from err
    if size:
        image = image.resize((size[1], size[0]), Image.LANCZOS)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)
    return array.permute(2, 0, 1)[None].to(device)


def build_guide(settings: Settings, vqgan: VQGAN, perceptors: list[Perceptor]) -> Guide:
    """Parse prompts, embed them once per perceptor, and lay out the per-step weight schedule."""
    device = vqgan.codebook.device
    scenes = parse_scenes(settings.scenes, settings.scene_prefix, settings.scene_suffix)
    image_prompts = parse_prompt_list(settings.target_images)
    prompts = [p for scene in scenes for p in scene] + image_prompts
    targets = []
    for perceptor in perceptors:
        parts = [perceptor.encode_text([p.text for scene in scenes for p in scene])]
        if image_prompts:
            images = torch.cat([load_image(p.text, perceptor.input_size, device) for p in image_prompts])
            with torch.no_grad():
                parts.append(perceptor.encode_image(images))
        targets.append(torch.cat(parts))
    steps = total_steps(len(scenes), settings.steps_per_scene)
    schedule = torch.zeros(steps, len(prompts))
    base = torch.tensor([p.weight for p in prompts])
    for step in range(steps):
        for scene, factor in scene_blend(step, len(scenes), settings.steps_per_scene, settings.interpolation_steps):
            for i, p in enumerate(prompts):
                if p.scene == scene:
                    schedule[step, i] = base[i] * factor
        for i, p in enumerate(prompts):
            if p.scene == -1:
                schedule[step, i] = base[i]
    init = (load_image(settings.init_image, (settings.height, settings.width), device)
            if settings.init_image else None)
    z_min, z_max = vqgan.codebook_bounds()
    return Guide(settings, vqgan, perceptors, prompts, targets, schedule.to(device),
                 torch.tensor([p.stop for p in prompts], device=device), init, z_min, z_max)


def initial_latent(guide: Guide, generator: torch.Generator) -> torch.Tensor:
    """z from the encoded init image, else from random codebook entries."""
    vqgan, s = guide.vqgan, guide.settings
    if guide.init_image is not None:
        with torch.no_grad():
            return vqgan.encode(guide.init_image)
    h, w = s.height // vqgan.factor, s.width // vqgan.factor
    codes = torch.randint(vqgan.n_embed, (h * w,), generator=generator, device=generator.device)
    return vqgan.codebook.detach()[codes].view(1, h, w, -1).permute(0, 3, 1, 2).contiguous()


def render(guide: Guide, z: torch.Tensor) -> torch.Tensor:
    """The image z stands for: quantize (straight-through) then decode, in [0, 1]."""
    return guide.vqgan.decode(guide.vqgan.quantize_st(z))


def step_loss(guide: Guide, z: torch.Tensor, step: int, generator: torch.Generator,
              frame_start: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Total loss and per-prompt losses (P,) for one step; no host-device sync."""
    s = guide.settings
    image = render(guide, z)
    cutouts = sample_cutouts(s.cutouts, s.height, s.width, cut_size=guide.cut_size, cut_pow=s.cut_pow,
                             border=s.cutout_border, augment=s.augmentations, generator=generator)
    weights = guide.schedule[min(step, len(guide.schedule) - 1)]
    per_prompt = torch.zeros_like(guide.stops)
    for perceptor, target in zip(guide.perceptors, guide.targets):
        batch = render_cutouts(image, cutouts, perceptor.input_size, generator,
                               mean=perceptor.mean.flatten(), std=perceptor.std.flatten())
        embeds = perceptor.encode_normalised(batch)
        per_prompt = per_prompt + prompt_losses(embeds, target, weights, guide.stops)
    total = per_prompt.sum()
    if guide.init_image is not None and s.direct_init_weight:
        total = total + s.direct_init_weight * image_mse(image, guide.init_image)
    if frame_start is not None and s.direct_stabilization_weight:
        total = total + s.direct_stabilization_weight * image_mse(image, frame_start)
    return total, per_prompt


@torch.no_grad()
def start_frame(guide: Guide, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Begin a new frame: apply the 2D motion to the image and re-encode it. Returns (z, image)."""
    s = guide.settings
    image = render(guide, z)
    if s.animation_mode == "2D":
        image = transform_2d(image, translate_x=s.translate_x, translate_y=s.translate_y,
                             rotate=s.rotate_2d, zoom_x=s.zoom_x_2d, zoom_y=s.zoom_y_2d)
        z = guide.vqgan.encode(image)
    return z, image


def learning_rate(settings: Settings, vqgan: VQGAN) -> float:
    """`learning_rate`, or pytti's default for the model when it is None: 0.15 GumbelVQ, else 0.1."""
    if settings.learning_rate is not None:
        return settings.learning_rate
    return 0.15 if vqgan.gumbel else 0.1


def clamp_latent(guide: Guide, z: torch.Tensor) -> None:
    """Clamp z to the codebook's per-channel bounds (the Crowson notebooks; setting `clamp_latent`)."""
    with torch.no_grad():
        z.copy_(torch.maximum(torch.minimum(z, guide.z_max), guide.z_min))


def sidecar(settings: Settings, guide: Guide, device: torch.device) -> dict:
    """The run's settings sidecar: everything needed to know and repeat what was run."""
    return {
        "format": SIDECAR_FORMAT,
        "settings": settings.to_dict(),
        "seed": settings.seed,
        "models": {"vqgan": guide.vqgan.info.as_dict(), "perceptors": [p.info.as_dict() for p in guide.perceptors]},
        "prompts": [{"scene": p.scene, "text": p.text, "weight": p.weight,
                     "stop": None if p.stop == float("-inf") else p.stop, "label": p.label} for p in guide.prompts],
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "open_clip": open_clip.__version__, "engine": engine.__version__},
        "device": str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        "deterministic": settings.deterministic,
    }


def run(settings: Settings, *, quiet: bool = False) -> Path:
    """Run (or resume, or recognise as done) one optimisation; return its folder.

    One writer per folder: its lock (`RunFolder.lock_file`) is held from before the folder is
    looked at until the run ends; a second writer gets `LockHeld` naming the holder's PID.
    """
    device = pick_device(settings.device)
    set_determinism(settings.deterministic)
    if device.type == "cpu":
        keep_freed_memory()
    vqgan = load_vqgan(settings.vqgan_model, device, progress=not quiet)
    check_size_for_factor(settings, vqgan.factor)
    perceptors = [load_perceptor(name, device, progress=not quiet) for name in settings.perceptors]
    folder = RunFolder(settings.out_dir, settings.file_namespace)
    with exclusive_lock(folder.lock_file, what=f"run folder {folder.path}"):
        folder.clean_temp_files()
        mode = folder.check_settings(settings.to_dict(), settings.allow_overwrite)
        if mode == "complete":
            problems = folder.completion_problems()
            if not problems:
                if not quiet:
                    print(f"{folder.path}: already complete with these settings; nothing to do")
                return folder.path
            _warn(folder, problems, "re-rendering the run from step 0 (frames are deterministic)")
            folder.reopen()
        if settings.seed == -1:  # the folder's run keeps its seed
            old = folder.read_sidecar()
            settings = Settings(**{**settings.to_dict(), "seed": old["seed"] if old else secrets.randbelow(2**31)})
        guide = build_guide(settings, vqgan, perceptors)
        if mode == "new":
            folder.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder.sidecar, sidecar(settings, guide, device))
        return optimise(guide, folder, device, quiet=quiet)


def _warn(folder: RunFolder, problems: list[str], action: str) -> None:
    print(f"{folder.path}: {'; '.join(problems)}; {action}", file=sys.stderr, flush=True)


def optimise(guide: Guide, folder: RunFolder, device: torch.device, *, quiet: bool = False) -> Path:
    """The loop. Resumes from `folder`'s resume state when there is one."""
    s = guide.settings
    generator = torch.Generator(device).manual_seed(s.seed)
    z = initial_latent(guide, generator).requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=learning_rate(s, guide.vqgan))
    frame_start, start, wall_before = None, 0, 0.0
    rows: list[list[float]] = []
    hashes: list[str] = []  # SHA-256 of frames 1, 2, ... as written
    state, problems = load_resume_state(folder, device)
    if state is not None:
        with torch.no_grad():
            z.copy_(state["z"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"].cpu())
        frame_start, start, wall_before = state["frame_start"], state["step"], state["wall_time_s"]
        rows, hashes = state["losses"], state["frames"]
    if problems:
        _warn(folder, problems, f"resuming from step {start}" if start else
              "restarting from step 0 (frames are deterministic)")
    steps = len(guide.schedule)
    labels = [p.label for p in guide.prompts]
    pending: list[torch.Tensor] = []
    writer = BackgroundWriter()
    bar = tqdm(total=steps, initial=start, disable=quiet, unit="step", desc=s.file_namespace)
    t0 = time.perf_counter()
    try:
        for step in range(start, steps):
            if step and step % s.steps_per_frame == 0:
                new_z, frame_start = start_frame(guide, z)
                with torch.no_grad():
                    z.copy_(new_z)
                if s.reset_lr_each_frame:
                    optimiser = torch.optim.Adam([z], lr=learning_rate(s, guide.vqgan))
            total, per_prompt = step_loss(guide, z, step, generator, frame_start)
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            if s.clamp_latent:
                clamp_latent(guide, z)
            pending.append(torch.cat([total.detach()[None], per_prompt.detach()]))
            bar.update()
            done = step + 1
            if done % s.save_every and done != steps:
                continue
            # A save point: the only place the loop waits for the device.
            losses = torch.stack(pending).cpu().tolist()
            rows += [[step_i, _scene_at(guide, step_i), *values]
                     for step_i, values in zip(range(done - len(pending), done), losses)]
            pending.clear()
            bar.set_postfix(loss=f"{rows[-1][2]:.4f}")
            with torch.no_grad():
                pixels = to_uint8(render(guide, z))
            frame_n = -(-done // s.save_every)
            writer.submit(save_frame_job(folder.frame(frame_n), pixels, frame_n, hashes))
            writer.submit(lambda r=list(rows): write_losses_csv(folder.losses, labels, r))
            writer.submit(save_state_job(folder, {
                "step": done, "z": z.detach().cpu().clone(), "optimiser": _cpu_state(optimiser),
                "generator": generator.get_state(), "wall_time_s": wall_before + time.perf_counter() - t0,
                "frame_start": None if frame_start is None else frame_start.cpu(), "losses": list(rows)}, hashes))
    finally:
        bar.close()
        writer.close()
    elapsed = time.perf_counter() - t0
    frames = [folder.frame(n) for n in range(1, len(hashes) + 1)]
    problems = folder.frame_problems(hashes)
    if problems or len(hashes) != -(-steps // s.save_every):
        raise RunFolderDamaged(f"{folder.path}: {'; '.join(problems) or 'frames are missing'} after the run; "
                               "run the same command again to re-render them")
    write_video(frames, folder.video, s.frames_per_second)
    final = rows[-1]
    write_metrics(folder, {
        "steps": steps, "frames": len(frames), "frame_sha256": hashes, "final_loss": final[2],
        "final_prompt_losses": dict(zip(labels, final[3:])),
        "steps_per_second": (steps - start) / elapsed if elapsed else None,
        "wall_time_s": wall_before + elapsed, "peak_memory_mb": peak_memory_mb(device),
        "resumed_from_step": start or None,
    })
    folder.resume.unlink(missing_ok=True)
    folder.resume_prev.unlink(missing_ok=True)
    return folder.path


def _scene_at(guide: Guide, step: int) -> int:
    """The scene a step belongs to (the newest active one while blending)."""
    return max(scene for scene, _ in scene_blend(step, _n_scenes(guide), guide.settings.steps_per_scene,
                                                   guide.settings.interpolation_steps))


def _n_scenes(guide: Guide) -> int:
    return 1 + max(p.scene for p in guide.prompts)


def _cpu_state(optimiser: torch.optim.Optimizer) -> dict:
    state = optimiser.state_dict()
    return {"state": {k: {n: v.detach().cpu().clone() if torch.is_tensor(v) else v for n, v in s.items()}
                      for k, s in state["state"].items()},
            "param_groups": state["param_groups"]}
