"""Benchmark: the engine on hostile and huge inputs (issue 30), each case before and after.

    python benchmarks/engine_hostile.py [--python-path DIR] [--case NAME ...] [--keep DIR]

Builds each case as a small fixture in a temp folder (tests/test_hostile.py's tiny untrained models,
its sparse files, tests/checkpoint_fixtures.py's VQGAN replica), runs the engine of `--python-path`
(default: this checkout; give a worktree of an older commit for the "before" figures) on it as a
fresh process with PYTHONPATH set to it, bounded by a timeout and a cap on its address space (so
that old code cannot take the machine down), and prints per case the command, its exit code,
seconds, peak resident MB (read at exit, or from the killed process), what is left of the user's
files, and the last line it printed on stderr:

- temp-files: a user's `.draft.tmp` (and a frame-like temporary file) in a folder the engine then
  refuses as not a run folder of its own: is the user's file still there?
- symlinked-lock: a symbolic link at the run's lock path `.run.lock` to a victim file: is it intact?
- fifo-sidecar: a FIFO as the sidecar of a finished run, then the same run again (does it hang?);
- fifo-checkpoint, device-checkpoint: a user models file whose VQGAN checkpoint is a FIFO, `/dev/zero`;
- big-yaml-config, big-pytti-settings: a 300 MB (sparse) YAML config and pytti `_settings.txt`;
- nested-yaml, nested-json, nested-pytti: configs nested 3000 to 5000 levels deep;
- sidecar-deep, sidecar-list, sidecar-settings-str, sidecar-no-seed: a finished run's sidecar nested
  too deeply, not an object, with settings that are a string, without its seed; the run again;
- steps-1e12, steps-1e8, width-100000, cutouts-100000, lr-1e308: sizes the machine cannot hold.

Every run is `python -m engine run` of the tiny models (vqgan_model=tiny perceptors=tiny-vit width=32
height=16 cutouts=4, 8 steps; printed as <tiny>), with its own model cache (VQCLIP_CACHE) and no
user models file but the case's, so nothing downloads. Where a finished run is needed, the engine
under test makes it first. A command that runs past the timeout is killed with what it started
(`bounded` kills its process group; this process is their subreaper, so the killed python's peak
is read as it is reaped).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from checkpoint_fixtures import write_vqgan_replica  # noqa: E402
from test_hostile import MB, TINY_RUN, bounded, sparse  # noqa: E402

TIMEOUT = 60  # s a command may take before it counts as hung
MEMORY_CAP = 6 << 30  # bytes of address space a command may map (RLIMIT_AS, as `ulimit -v`)
TINY = {**dict(s.split("=", 1) for s in TINY_RUN), "width": "32", "height": "16", "cutouts": "4"}
PR_SET_CHILD_SUBREAPER = 36


class Case(NamedTuple):
    """A built case: the engine's arguments, extra environment, and what to say of the user's files."""
    args: list[str]
    env: dict[str, str] = {}
    check: Callable[[], str] | None = None


class Context(NamedTuple):
    """Where a case is built, and which engine builds what it needs first (a finished run)."""
    folder: Path
    python_path: Path
    env: dict[str, str]


def run_args(out_dir: Path, *overrides: str) -> list[str]:
    """`engine run -q` of the tiny models into out_dir, with `key=value` overrides in their place."""
    settings = {**TINY, **dict(o.split("=", 1) for o in overrides), "out_dir": str(out_dir)}
    return ["-m", "engine", "run", "-q", *(f"{k}={v}" for k, v in settings.items())]


def config_args(path: Path) -> list[str]:
    return ["-m", "engine", "run", "-q", "--config", str(path)]


# ---------------------------------------------------------------- running a command, bounded

@contextlib.contextmanager
def capped(limit: int) -> Iterator[None]:
    """Lower this process's soft address-space limit while a child is started (the child inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def orphans() -> list[int]:
    """Processes reparented to this one: the python under a command's `sh`, once `bounded` has killed
    the two at its timeout (its peak is read as it is reaped here)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(stat.parent.name))
    return found


def reap() -> float:
    """Kill and reap the orphans, by id; their largest peak resident MB."""
    peak = 0.0
    for pid in orphans():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            peak = max(peak, os.wait4(pid, 0)[2].ru_maxrss / 1024)
    return peak


def engine(ctx: Context, args: list[str], env: dict[str, str] | None = None) -> tuple[str, str]:
    """One command of the engine under test as a fresh process: (figures, last line of stderr)."""
    with capped(MEMORY_CAP):
        try:
            code, err, seconds, peak = bounded(args, timeout=TIMEOUT, cwd=ctx.python_path, env={**ctx.env, **(env or {})})
        except AssertionError:
            return f"hung: killed after {TIMEOUT} s, peak {reap():.0f} MB", ""
    reap()
    lines = err.strip().splitlines()
    return f"exit {code}, {seconds:.1f} s, {peak:.0f} MB", lines[-1][:160] if lines else ""


def finished(ctx: Context) -> Path:
    """A copy of one finished tiny run (file_namespace=run) made by the engine under test, in ctx.folder."""
    made = ctx.env["VQCLIP_CACHE"] + "-finished"
    if not Path(made, "run").is_dir():
        shown, last = engine(ctx, run_args(Path(made)))
        if not Path(made, "run", "run_settings.json").is_file():
            raise RuntimeError(f"the engine at {ctx.python_path} made no finished run: {shown}; {last}")
    shutil.copytree(Path(made, "run"), ctx.folder / "run")
    return ctx.folder / "run"


# ---------------------------------------------------------------- the cases

def listing(folder: Path, wanted: dict[str, str]) -> Callable[[], str]:
    """What is left in folder of the user's files (name: text)."""
    def check() -> str:
        kept = [n for n, text in wanted.items() if (folder / n).is_file() and (folder / n).read_text() == text]
        gone = [n for n in wanted if n not in kept]
        return f"user's files kept: {kept or 'none'}" + (f", lost or changed: {gone}" if gone else "")
    return check


def temp_files(ctx: Context) -> Case:
    folder = ctx.folder / "run"
    folder.mkdir()
    user = {"run_1.png": "\x89PNG not ours", ".draft.tmp": "my draft", ".run_1.png.vqclip-abc.tmp": "\x89PNG"}
    for name, text in user.items():
        (folder / name).write_text(text)
    return Case(run_args(ctx.folder), check=listing(folder, user))


def symlinked_lock(ctx: Context) -> Case:
    victim = ctx.folder / "thesis.tex"
    victim.write_text("years of work")
    (ctx.folder / ".run.lock").symlink_to(victim)

    def check() -> str:
        text = victim.read_text(errors="replace") if victim.is_file() else None
        return "victim intact" if text == "years of work" else f"victim now holds {text!r:.60}"
    return Case(run_args(ctx.folder), check=check)


def fifo_sidecar(ctx: Context) -> Case:
    sidecar = finished(ctx) / "run_settings.json"
    sidecar.unlink()
    os.mkfifo(sidecar)
    return Case(run_args(ctx.folder))


def checkpoint(path: str | None) -> Callable[[Context], Case]:
    """A user models file whose VQGAN `mine` has a real config and this checkpoint (None: a FIFO)."""
    def build(ctx: Context) -> Case:
        config, _, _ = write_vqgan_replica(ctx.folder / "vqgan", "lightning-dictconfig")
        if path is None:
            os.mkfifo(ctx.folder / "mine.ckpt")
        models = ctx.folder / "models.yaml"
        entry = {"config": str(config), "checkpoint": path or str(ctx.folder / "mine.ckpt")}
        models.write_text(json.dumps({"vqgans": {"mine": entry}}))  # JSON is YAML
        return Case(run_args(ctx.folder, "vqgan_model=mine"), env={"VQCLIP_MODELS": str(models)})
    return build


def big_config(name: str, head: bytes) -> Callable[[Context], Case]:
    def build(ctx: Context) -> Case:
        return Case(config_args(sparse(ctx.folder / name, 300 * MB, head)))
    return build


def nested_config(name: str, text: str) -> Callable[[Context], Case]:
    def build(ctx: Context) -> Case:
        (ctx.folder / name).write_text(text)
        return Case(config_args(ctx.folder / name))
    return build


def bad_sidecar(change: Callable[[dict], object]) -> Callable[[Context], Case]:
    """A finished run whose sidecar is replaced by change(its JSON), then the same run again."""
    def build(ctx: Context) -> Case:
        sidecar = finished(ctx) / "run_settings.json"
        new = change(json.loads(sidecar.read_text()))
        sidecar.write_text(new if isinstance(new, str) else json.dumps(new))
        return Case(run_args(ctx.folder))
    return build


def without_seed(sidecar: dict) -> dict:
    sidecar.get("settings", {}).pop("seed", None)
    return sidecar


def sized(*overrides: str) -> Callable[[Context], Case]:
    def build(ctx: Context) -> Case:
        return Case(run_args(ctx.folder, *overrides))
    return build


DEEP = "[" * 5000 + "]" * 5000
CASES: dict[str, Callable[[Context], Case]] = {
    "temp-files": temp_files,
    "symlinked-lock": symlinked_lock,
    "fifo-sidecar": fifo_sidecar,
    "fifo-checkpoint": checkpoint(None),
    "device-checkpoint": checkpoint("/dev/zero"),
    "big-yaml-config": big_config("big.yaml", b"scenes: a\n"),
    "big-pytti-settings": big_config("big_settings.txt", b'{"scenes": "a"}\n'),
    "nested-yaml": nested_config("deep.yaml", "a: " + "{b: " * 3000 + "1" + "}" * 3000),
    "nested-json": nested_config("deep.json", '{"scenes": ' + DEEP + "}"),
    "nested-pytti": nested_config("deep_settings.txt", '{"a": ' + DEEP + "}\n"),
    "sidecar-deep": bad_sidecar(lambda _: '{"settings": ' + DEEP + "}"),
    "sidecar-list": bad_sidecar(lambda _: "[1, 2]"),
    "sidecar-settings-str": bad_sidecar(lambda s: {**s, "settings": "scenes=a"}),
    "sidecar-no-seed": bad_sidecar(without_seed),
    "steps-1e12": sized("steps_per_scene=1e12"),
    "steps-1e8": sized("steps_per_scene=1e8"),
    "width-100000": sized("width=100000", "height=128"),
    "cutouts-100000": sized("cutouts=100000"),
    "lr-1e308": sized("learning_rate=1e308"),
}


def shown(args: list[str], folder: Path) -> str:
    """The command as printed: the tiny settings as <tiny>, the case's folder as $CASE."""
    tiny = [f"{k}={v}" for k, v in TINY.items()]
    words = [a for a in args[1:] if a not in tiny]
    if len(words) < len(args) - 1:
        words.insert(3 if words[2] == "-q" else 2, "<tiny>")
    return "python -m " + " ".join(words).replace(str(folder), "$CASE")


def run_case(name: str, python_path: Path, work: Path, env: dict[str, str]) -> None:
    folder = work / name
    folder.mkdir(parents=True)
    ctx = Context(folder, python_path, env)
    case = CASES[name](ctx)
    figures, last = engine(ctx, case.args, case.env)
    note = case.check() if case.check else ""
    last = last.replace(str(folder), "$CASE")
    print(" | ".join(x for x in (f"{name:20s}", shown(case.args, folder), figures, note, last) if x), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-path", type=Path, default=REPO, help="the checkout whose engine runs")
    parser.add_argument("--case", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--keep", type=Path, help="build the cases here and keep them")
    args = parser.parse_args(argv)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    print(f"{args.python_path}: case | command | exit code, seconds, peak MB | the user's files | last line "
          f"of stderr; each command bounded by {TIMEOUT} s and {MEMORY_CAP >> 30} GiB of address space "
          f"(RLIMIT_AS); <tiny> = {' '.join(f'{k}={v}' for k, v in TINY.items())} (the machine may be shared)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        python_path = args.python_path.resolve()
        env = {"PYTHONPATH": str(python_path), "VQCLIP_CACHE": str(work / "cache"),
               "VQCLIP_MODELS": str(work / "no-user-models.yaml")}
        for name in args.case:
            run_case(name, python_path, work, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
