"""install.sh with a Python that refuses system-wide installs (Debian's own, PEP 668): it makes the
virtualenv .venv, installs into it, reuses it, and installs into an already active env instead.

The requirements are a tiny local wheel (VQCLIP_REQUIREMENTS), so this takes seconds; CI runs the
real install (`.ci/run` is README's test command).
"""
from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _managed(python: Path) -> bool:
    """Whether `python` refuses pip installs outside a virtualenv (an EXTERNALLY-MANAGED marker)."""
    if not python.exists():
        return False
    stdlib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").is_file()


pytestmark = pytest.mark.skipif(not _managed(DEBIAN_PYTHON), reason=f"{DEBIAN_PYTHON} is not a PEP 668 Python")


def probe_wheel(folder: Path) -> Path:
    """A one-module wheel, `vqclip_probe`, built by hand: installs offline."""
    wheel = folder / "vqclip_probe-1.0-py3-none-any.whl"
    info = "vqclip_probe-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("vqclip_probe.py", "WHERE = __file__\n")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: vqclip-probe\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", f"vqclip_probe.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    return wheel


def checkout(folder: Path) -> Path:
    """install.sh and a requirements file naming the probe wheel, as a checkout would hold them."""
    folder.mkdir()
    (folder / "install.sh").write_bytes((REPO / "install.sh").read_bytes())
    (folder / "probe.txt").write_text(f"{probe_wheel(folder)}\n")
    return folder


def install(folder: Path, bin_dir: Path = DEBIAN_PYTHON.parent) -> str:
    """`bash install.sh` in `folder` with `bin_dir` first on PATH (default: Debian's python3 alone, as on
    a stock Debian 12 / Ubuntu 24.04) and no env active; its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME")}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", VQCLIP_REQUIREMENTS="probe.txt")
    result = subprocess.run(["bash", "install.sh"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def imports_probe(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import vqclip_probe"], capture_output=True).returncode == 0


def test_a_pep668_python_gets_a_virtualenv_that_is_made_once_and_reused(tmp_path: Path) -> None:
    repo = checkout(tmp_path / "repo")
    out = install(repo)
    assert "1/4 Python environment" in out and "made the virtualenv .venv with Python 3" in out, out
    assert "2/4 Python packages from probe.txt" in out and "next: . .venv/bin/activate" in out, out
    venv = repo / ".venv"
    assert os.path.realpath(venv / "bin/python") == os.path.realpath(DEBIAN_PYTHON)
    assert imports_probe(venv / "bin/python") and not imports_probe(DEBIAN_PYTHON)  # nothing went system-wide
    made = (venv / "bin/python").lstat().st_ino

    out = install(repo)
    assert "reusing the virtualenv .venv" in out and "made the virtualenv" not in out, out
    assert (venv / "bin/python").lstat().st_ino == made

    # an active virtualenv (or conda env) is used as it is: no second .venv
    other = checkout(tmp_path / "other")
    out = install(other, venv / "bin")
    assert f"installing into the active environment of {venv}/bin/python3" in out, out
    assert not (other / ".venv").exists()
