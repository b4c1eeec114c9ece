"""A run's resume state (`resume.pt`): everything the loop needs to go on exactly where it stopped.

Written by the background writer after the frame it claims (so it never claims a frame that is
not on disk yet), durably, and rotated (`resume.pt` → `resume.prev.pt`) only once the new one is
in place. Loaded on the host first (`map_location="cpu"`): the loop moves what belongs on the
device, and Adam's `step` counters stay on the host (no device sync per step).
"""
from __future__ import annotations

import io
import os
from dataclasses import asdict
import pickle
from pathlib import Path
from typing import Callable

import torch

from engine.fsutil import atomic_path, regular_file, write_file
from engine.runfolder import Frame, RunFolder, RunFolderConflict

RESUME_KEYS = ("step", "z", "ema", "optimiser", "rng_state", "device_type", "wall_time_s",
               "stabilisation_target", "frames", "losses")


class ResumeDeviceMismatch(RunFolderConflict):
    """The folder's resume state was written on another device type: its RNG state cannot carry
    over. A conflict of the folder with this run: the CLIs report it in one `error:` line."""


def save_state_job(folder: RunFolder, state: dict, table: list[Frame]) -> Callable[[], None]:
    """Write the resume state (with the frame table written so far) durably, keeping the previous
    state as resume.prev.pt until the new one is in place."""
    def job() -> None:
        buffer = io.BytesIO()
        torch.save({**state, "frames": [asdict(f) for f in table]}, buffer)
        with atomic_path(folder.resume) as tmp:
            write_file(tmp, buffer.getvalue(), durable=True)
            if folder.resume.exists():
                os.replace(folder.resume, folder.resume_prev)
    return job


def host_copy(state_dict: dict) -> dict:
    """An optimiser's state dict with every tensor copied to the host."""
    return {"state": {k: {n: v.detach().cpu().clone() if torch.is_tensor(v) else v for n, v in s.items()}
                      for k, s in state_dict["state"].items()},
            "param_groups": state_dict["param_groups"]}


def load_resume_state(folder: RunFolder, device: torch.device) -> tuple[dict | None, list[str]]:
    """The newest usable resume state (resume.pt, else resume.prev.pt, else None), its tensors on
    the host, and why newer ones could not be used.

    A state is usable when it loads, has every key of `RESUME_KEYS` and every frame it claims is
    on disk with its recorded SHA-256. A usable state written on another device type than
    `device`'s raises `ResumeDeviceMismatch`, saying what to do.
    """
    problems = []
    for path in (folder.resume, folder.resume_prev):
        if not path.exists():
            continue
        try:
            with regular_file(path) as f:  # BadFile (a FIFO, a device) is a ValueError
                state = torch.load(f, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
            problems.append(f"{path} is damaged ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
            continue
        missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
        frames = [] if missing else folder.frame_problems([row["sha256"] for row in state["frames"]])
        if not missing and not frames:
            check_device_type(folder, path, state["device_type"], device)
            return state, problems
        problems.append(f"{path} lacks {', '.join(missing)} (written by another version)" if missing
                        else f"{path} cannot be used: {'; '.join(frames)}")
    return None, problems


def check_device_type(folder: RunFolder, path: Path, recorded: str, device: torch.device) -> None:
    """Refuse to resume on another device type than the state's (a CPU RNG state is not a CUDA one)."""
    if recorded != device.type:
        raise ResumeDeviceMismatch(
            f"{path} was written by this run on {recorded}, and it now runs on {device.type}: "
            f"its random-number state cannot carry over. Resume with device={recorded}, or delete "
            f"{folder.resume.name} and {folder.resume_prev.name} in {folder.path} to restart from step 0")
