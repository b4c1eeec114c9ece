"""README's commands as written: the offline "One run" shows motion, and CI runs README's test command."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def bash_blocks(section: str) -> list[str]:
    """The ```bash blocks of README's `## section`, each as its commands (continuations joined,
    comments dropped)."""
    body = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", body, re.S)
    return [re.sub(r"\s+#[^\n]*", "", block.replace("\\\n", " ")).strip() for block in blocks]


def test_the_offline_one_run_makes_frames_that_differ(tmp_path: Path) -> None:
    command = bash_blocks("One run")[0]
    assert command.startswith("python -m engine run ") and command.count("/tmp/first-run") == 1
    command = command.replace("/tmp/first-run", str(tmp_path))  # where it writes, nothing else
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "first"
    frames = sorted(folder.glob("first_*.png"))
    assert len(frames) == 4
    assert len({hashlib.sha256(f.read_bytes()).hexdigest() for f in frames}) >= 2, "every frame is the same"
    video = [hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest()
             for f in imageio.get_reader(folder / "first.mp4")]
    assert len(set(video)) > 1, f"first.mp4 is a still ({len(video)} frames)"


def test_ci_runs_readmes_test_command() -> None:
    quick_start = bash_blocks("Quick start (fresh Debian/Ubuntu machine, Python ≥ 3.10)")[0].splitlines()
    tests = next(line for line in quick_start if "pytest" in line)
    assert tests.startswith("bash install.sh && ")
    assert tests in (REPO / ".ci/run").read_text().splitlines()
