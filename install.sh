#!/usr/bin/env bash
# Install what the project needs on a fresh Debian/Ubuntu machine, step by step: its Python
# packages (requirements.txt, this repo editable), Debian's Chromium for the browser tests, and the
# offline page template of `dvc plots show`. Safe to re-run: what is there is reused.
#
# Where the packages go: into the active virtualenv or conda env, if there is one (your own env);
# else into .venv here, made (or reused) with python3: Debian 12 and Ubuntu 24.04 refuse
# `pip install` outside a virtualenv (PEP 668). Then `. .venv/bin/activate` before the commands.
#   VQCLIP_PYTHON=python3.12 bash install.sh   the Python that makes .venv (default: python3)
#   VQCLIP_NO_VENV=1 bash install.sh           install into that Python itself (Colab, a container)
#   VQCLIP_REQUIREMENTS=FILE bash install.sh   install FILE only, no Chromium, no plots template: how
#                                              tests/test_install.py checks the virtualenv handling
set -euo pipefail
cd "$(dirname "$0")"
start=$SECONDS
python=${VQCLIP_PYTHON:-python3}
requirements=${VQCLIP_REQUIREMENTS:-requirements.txt}
say() { printf '[install %4ss] %s\n' $((SECONDS - start)) "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v "$python" >/dev/null || { echo "error: no $python; install Python >= 3.10 (apt-get install python3)" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "error: $("$python" --version 2>&1) is too old; the project needs Python >= 3.10" >&2; exit 1; }

say "1/4 Python environment"
# shellcheck disable=SC2016
in_env='import os, sys; sys.exit(not (sys.prefix != sys.base_prefix or sys.prefix == os.environ.get("CONDA_PREFIX")))'
if [ -n "${VQCLIP_NO_VENV:-}" ] || "$python" -c "$in_env"; then
  py=$(command -v "$python")
  say "    installing into the active environment of $py ($("$python" -c 'import sys; print(sys.prefix)'))"
elif .venv/bin/python -m pip --version >/dev/null 2>&1; then
  py=.venv/bin/python
  say "    reusing the virtualenv .venv ($(.venv/bin/python --version))"
else
  rm -rf .venv  # a broken one (made without pip)
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    venv_package=python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv
    say "    $python cannot make virtualenvs here: installing Debian's $venv_package"
    apt_install "$venv_package"
  fi
  "$python" -m venv .venv
  py=.venv/bin/python
  say "    made the virtualenv .venv with $($py --version) ($(command -v "$python"))"
fi

if [ "$requirements" = requirements.txt ]; then
  what="requirements.txt: torch with its CUDA libraries, DVC, Panel, Jupyter, Ray, ... (about 3.5 GB to download, 7 GB installed; 5 to 10 minutes)"
else
  what=$requirements
fi
say "2/4 Python packages from $what"
"$py" -m pip install --disable-pip-version-check --progress-bar off -r "$requirements" 2>&1 \
  | sed -u -e '/^Requirement already satisfied/d' -e 's/^/    /'
say "    done"

if [ "$requirements" = requirements.txt ]; then
  say "3/4 Chromium, for the browser tests"
  if [ -x /usr/bin/chromium ]; then
    say "    already there: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  else
    say "    apt-get install chromium (about 300 MB)"
    apt_install chromium
  fi
  say "4/4 dvc plots show's page template, with the Vega libraries inline (no CDN: it renders offline)"
  "$py" -m experiments.plots.offline | sed 's/^/    /'
else
  say "3/4, 4/4 skipped: VQCLIP_REQUIREMENTS installs $requirements only"
fi

prefix=$("$py" -c 'import sys; print(sys.prefix)')
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
size=$(du -sh "$prefix" 2>/dev/null | cut -f1)
gpu="this machine has an NVIDIA GPU"
[ -e /proc/driver/nvidia/version ] || gpu="this machine has no NVIDIA GPU, so they stay unused (torch runs on the CPU)"
say "installed in $((SECONDS - start)) s: $prefix holds $size"
if [ -d "$site/nvidia" ]; then
  say "    of which torch's CUDA libraries: $(du -sh "$site/nvidia" | cut -f1); $gpu"
fi
if [ "$py" = .venv/bin/python ]; then
  say "next: . .venv/bin/activate   (then dvc repro, python -m pytest -q, python -m engine ...)"
fi
