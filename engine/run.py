"""The optimisation loop: one run = one VQGAN × a set of perceptors × one seed, in pytti's VQGAN mode.

Each step: quantize z → decode (`clamp_with_grad`) → per perceptor its own cutouts → embeddings →
spherical-distance loss to every prompt (weights, stops, scene blend), averaged over perceptors,
+ TV smoothing and latent losses → Adam step → update the moving average of z. From
`pre_animation_steps` on, every `steps_per_frame` steps a frame starts (Adam restarts; 2D animation
moves the averaged image and re-encodes it); every `save_every` steps the averaged image is saved.
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
from engine.animation import apply_motion, motion_grid
from engine.cutouts import render_cutouts, sample_cutouts
from engine.device import keep_freed_memory, peak_memory_mb, pick_device, set_determinism
from engine.factory import load_perceptor, load_vqgan
from engine.fsutil import atomic_write_json
from engine.locks import exclusive_lock
from engine.ema import LatentEMA
from engine.losses import clamp_with_grad, latent_loss, prompt_losses, tv_loss
from engine.outputs import (SIDECAR_FORMAT, BackgroundWriter, RunFolder, RunFolderDamaged, load_resume_state,
                            save_frame_job, save_state_job, to_uint8, write_losses_csv, write_metrics,
                            write_video)
from engine.perceptor import Perceptor
from engine.precision import check_precision, prepare_models
from engine.prompts import Prompt, parse_prompt_list, parse_scenes, scene_blend, total_steps
from engine.settings import Settings, SettingsError, check_size_for_factor
from engine.vqgan import VQGAN


@dataclass
class Guide:
    """Everything a step needs besides the latent: models, prompt targets, the weight schedule."""

    settings: Settings
    vqgan: VQGAN
    perceptors: list[Perceptor]
    prompts: list[Prompt]
    targets: list[torch.Tensor]  # per perceptor: (P, D) unit embeddings
    schedule: torch.Tensor  # (steps, P): each prompt's weight at each step
    stops: torch.Tensor  # (P,)
    init: tuple[torch.Tensor, torch.Tensor] | None  # the init image and its codes
    motion: torch.Tensor | None  # the 2D move's sampling grid (animation_mode 2D)
    z_min: torch.Tensor
    z_max: torch.Tensor


@dataclass
class Latent:
    """The optimised z, its moving average, and the stabilisation target (image, codes) once there is one."""

    z: torch.Tensor
    ema: LatentEMA
    target: tuple[torch.Tensor, torch.Tensor] | None

    def state(self) -> dict:
        """The resume state's part for the latent (host copies)."""
        target = None if self.target is None else [t.detach().cpu().clone() for t in self.target]
        return {"z": self.z.detach().cpu().clone(), "ema": self.ema.state(), "frame_start": target}

    def restore(self, state: dict, device: torch.device) -> None:
        with torch.no_grad():
            self.z.copy_(state["z"])
        self.ema = LatentEMA.from_state(state["ema"], device)
        self.target = None if state["frame_start"] is None else tuple(t.to(device) for t in state["frame_start"])


def load_image(path: str, size: tuple[int, int] | None, device: torch.device) -> torch.Tensor:
    """An image file → (1, 3, H, W) in [0, 1], resized to size=(H, W) with Lanczos when given."""
    try:
        image = Image.open(path).convert("RGB")
    except (OSError, ValueError) as err:
        raise SettingsError(f"image {path!r} cannot be read: {err}") from err
    if size:
        image = image.resize((size[1], size[0]), Image.LANCZOS)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)
    return array.permute(2, 0, 1)[None].to(device)


def init_active(settings: Settings, step: int) -> bool:
    """pytti turns the init-image losses off at the first move (`pre_animation_steps`) of an animation."""
    return settings.animation_mode == "off" or step < settings.pre_animation_steps


def is_frame_start(settings: Settings, step: int) -> bool:
    """pytti moves the image (and resets Adam) every `steps_per_frame` steps from `pre_animation_steps` on."""
    return step >= settings.pre_animation_steps and (step - settings.pre_animation_steps) % settings.steps_per_frame == 0


def build_guide(settings: Settings, vqgan: VQGAN, perceptors: list[Perceptor]) -> Guide:
    """Parse prompts, embed them once per perceptor, and lay out the per-step weight schedule.

    Prompts: the scenes' texts, then (with `semantic_init_weight`) the init image as a prompt of
    scene 0, then `target_images` (every scene).
    """
    device = vqgan.codebook.device
    s = settings
    scenes = parse_scenes(s.scenes, s.scene_prefix, s.scene_suffix)
    texts = [p for scene in scenes for p in scene]
    image_prompts = parse_prompt_list(s.target_images)
    if s.semantic_init_weight:
        image_prompts.insert(0, Prompt(s.init_image, s.semantic_init_weight, scene=0, index=len(scenes[0])))
    prompts = texts + image_prompts
    targets = []
    for perceptor in perceptors:
        parts = [perceptor.encode_text([p.text for p in texts])]
        if image_prompts:
            images = torch.cat([load_image(p.text, perceptor.input_size, device) for p in image_prompts])
            with torch.no_grad():
                parts.append(perceptor.encode_image(images))
        targets.append(torch.cat(parts))
    steps = total_steps(len(scenes), s.steps_per_scene)
    schedule = torch.zeros(steps, len(prompts))
    for step in range(steps):
        factors = dict(scene_blend(step, len(scenes), s.steps_per_scene, s.interpolation_steps))
        factors[-1] = 1.0
        for i, p in enumerate(prompts):
            schedule[step, i] = p.weight * factors.get(p.scene, 0.0)
        if s.semantic_init_weight and not init_active(s, step):
            schedule[step, len(texts)] = 0
    init = None
    if s.init_image:
        image = load_image(s.init_image, (s.height, s.width), device)
        with torch.no_grad():
            init = image, encode_codes(vqgan, image)
    motion = None
    if s.animation_mode == "2D":
        motion = motion_grid(s.height, s.width, translate_x=s.translate_x, translate_y=s.translate_y,
                             rotate=s.rotate_2d, zoom_x=s.zoom_x_2d, zoom_y=s.zoom_y_2d,
                             infill_mode=s.infill_mode).to(device)
    z_min, z_max = vqgan.codebook_bounds()
    return Guide(s, vqgan, perceptors, prompts, targets, schedule.to(device),
                 torch.tensor([p.stop for p in prompts], device=device), init, motion, z_min, z_max)


def encode_codes(vqgan: VQGAN, image: torch.Tensor) -> torch.Tensor:
    """Image → its quantised codes (pytti's encode keeps the quantised z)."""
    return vqgan.nearest_codes(vqgan.encode(image))


def initial_latent(guide: Guide, generator: torch.Generator) -> torch.Tensor:
    """z: the init image's codes, else random codebook entries."""
    vqgan, s = guide.vqgan, guide.settings
    if guide.init is not None:
        return guide.init[1].clone()
    h, w = s.height // vqgan.factor, s.width // vqgan.factor
    codes = torch.randint(vqgan.n_embed, (h * w,), generator=generator, device=generator.device)
    return vqgan.codebook.detach()[codes].view(1, h, w, -1).permute(0, 3, 1, 2).contiguous()


def start_latent(guide: Guide, generator: torch.Generator) -> Latent:
    """The latent at step 0: z, its average reset to z, and (with an init image and
    `direct_stabilization_weight`) stabilisation toward the init image from the start."""
    z = initial_latent(guide, generator).requires_grad_(True)
    target = guide.init if guide.settings.direct_stabilization_weight else None
    return Latent(z, LatentEMA.start(z), target)


def render(guide: Guide, z: torch.Tensor) -> torch.Tensor:
    """The image z stands for: quantize (straight-through), decode, `clamp_with_grad` to [0, 1]."""
    return decode(guide.vqgan, guide.vqgan.quantize_st(z))


def decode(vqgan: VQGAN, z_q: torch.Tensor) -> torch.Tensor:
    """Quantised z → image in [0, 1] through pytti's `clamp_with_grad`."""
    return clamp_with_grad(vqgan.decode(z_q, clamp=False))


def quantise_8bit(image: torch.Tensor) -> torch.Tensor:
    """pytti passes the image through 8-bit PIL images when it moves it: x ↦ floor(255 x) / 255."""
    return image.clamp(0, 1).mul(255).floor().div(255)


def step_loss(guide: Guide, z: torch.Tensor, step: int, generator: torch.Generator,
              target: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Total loss and per-prompt losses (P,) for one step; no host-device sync.

    Prompt losses are averaged over perceptors (each sees its own cutouts); then pytti's TV
    smoothing, the init-image latent loss (until the first move) and the stabilisation latent
    loss toward `target` (the re-encoded moved image, or the init image before the first move).
    """
    s, vqgan = guide.settings, guide.vqgan
    z_q = vqgan.quantize_st(z)
    image = decode(vqgan, z_q)
    weights = guide.schedule[min(step, len(guide.schedule) - 1)]
    per_prompt = torch.zeros_like(guide.stops)
    for perceptor, embeds_target in zip(guide.perceptors, guide.targets):
        cutouts = sample_cutouts(s.cutouts, s.height, s.width, cut_size=perceptor.input_size[0],
                                 cut_pow=s.cut_pow, border=s.cutout_border, border_mode=s.border_mode,
                                 augment=s.augmentations, generator=generator)
        batch = render_cutouts(image, cutouts, generator, mean=perceptor.mean.flatten(), std=perceptor.std.flatten())
        embeds = perceptor.encode_normalised(batch)
        per_prompt = per_prompt + prompt_losses(embeds, embeds_target, weights, guide.stops)
    per_prompt = per_prompt / len(guide.perceptors)
    total = per_prompt.sum()
    if s.smoothing_weight:
        total = total + s.smoothing_weight * tv_loss(image)
    if guide.init is not None and s.direct_init_weight and init_active(s, step):
        total = total + s.direct_init_weight * latent_loss(z_q, guide.init[1], image, guide.init[0])
    if target is not None and s.direct_stabilization_weight:
        total = total + s.direct_stabilization_weight * latent_loss(z_q, target[1], image, target[0])
    return total, per_prompt


def take_step(guide: Guide, latent: Latent, optimiser: torch.optim.Optimizer, step: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step of z: loss, backward, Adam, the optional z clamp, the EMA update.
    Returns the total and per-prompt losses (on the device; no sync)."""
    total, per_prompt = step_loss(guide, latent.z, step, generator, latent.target)
    optimiser.zero_grad(set_to_none=True)
    total.backward()
    optimiser.step()
    if guide.settings.clamp_latent:
        clamp_latent(guide, latent.z)
    latent.ema.update(latent.z)
    return total, per_prompt


@torch.no_grad()
def start_frame(guide: Guide, latent: Latent) -> None:
    """pytti's move at a frame start (2D animation): decode the average, move it, re-encode to
    quantised codes, reset the average, and aim stabilisation at the re-encoded image."""
    s, vqgan = guide.settings, guide.vqgan
    image = quantise_8bit(vqgan.decode(vqgan.nearest_codes(latent.ema.average)))
    moved = quantise_8bit(apply_motion(image, guide.motion, sampling_mode=s.sampling_mode, infill_mode=s.infill_mode))
    latent.z.copy_(encode_codes(vqgan, moved))
    latent.ema = LatentEMA.start(latent.z)
    if s.direct_stabilization_weight:
        settled = quantise_8bit(vqgan.decode(latent.z))
        latent.target = settled, encode_codes(vqgan, settled)


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
    check_precision(settings.precision, device)
    set_determinism(settings.deterministic)
    if device.type == "cpu":
        keep_freed_memory()
    vqgan = load_vqgan(settings.vqgan_model, device, progress=not quiet)
    check_size_for_factor(settings, vqgan.factor)
    perceptors = [load_perceptor(name, device, progress=not quiet) for name in settings.perceptors]
    prepare_models(settings.precision, device, vqgan, perceptors)
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
    latent = start_latent(guide, generator)
    z = latent.z
    optimiser = torch.optim.Adam([z], lr=learning_rate(s, guide.vqgan))
    start, wall_before = 0, 0.0
    rows: list[list[float]] = []
    hashes: list[str] = []  # SHA-256 of frames 1, 2, ... as written
    state, problems = load_resume_state(folder, device)
    if state is not None:
        latent.restore(state, device)
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"].cpu())
        start, wall_before = state["step"], state["wall_time_s"]
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
            if is_frame_start(s, step):
                if guide.motion is not None:
                    start_frame(guide, latent)
                if s.reset_lr_each_frame:
                    optimiser = torch.optim.Adam([z], lr=learning_rate(s, guide.vqgan))
            total, per_prompt = take_step(guide, latent, optimiser, step, generator)
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
                pixels = to_uint8(render(guide, latent.ema.average))
            frame_n = -(-done // s.save_every)
            writer.submit(save_frame_job(folder.frame(frame_n), pixels, frame_n, hashes))
            writer.submit(lambda r=list(rows): write_losses_csv(folder.losses, labels, r))
            writer.submit(save_state_job(folder, {
                "step": done, **latent.state(), "optimiser": _cpu_state(optimiser),
                "generator": generator.get_state(), "wall_time_s": wall_before + time.perf_counter() - t0,
                "losses": list(rows)}, hashes))
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
