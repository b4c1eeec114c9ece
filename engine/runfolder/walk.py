"""The one walker over a root of run folders, for every reader (the dashboard's catalog, the effects
analysis): `run_folders(root)` yields each folder that holds run files, and each folder that cannot
be read, with the problem.

It always ends and never leaves the root: symbolic links to folders are not followed (they may
leave the root or loop back into it), a link to a file counts only where it stays in the root,
nesting is bounded (`MAX_DEPTH`), hidden entries are left out and names that are not UTF-8 are
not read.
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

from engine.runfolder.record import is_run_folder

log = logging.getLogger(__name__)
MAX_DEPTH = 8  # folder levels searched below the root
MAX_ENTRIES = 100_000  # entries of one folder a walk lists at most (a run of MAX_FRAMES frames has fewer)
Stamp = tuple[tuple[str, int, int], ...]  # (file name, size, mtime in ns) of a folder's files
Known = Callable[[Path], "Listing | None"]


class Listing(NamedTuple):
    """What one folder holds, as the scan sees it."""

    folder: Path
    files: set[str]
    problem: str | None = None  # set where the folder itself cannot be read
    stamp: Stamp = ()
    mtime: int = 0  # the folder's own modification time (ns), taken before listing it


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 shown as `\\xNN`."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _inside(path: Path, root: Path) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(root)
    except (OSError, ValueError):
        return False


def _entries(folder: Path, root: Path) -> tuple[dict[str, tuple[int, int]], list[Path], list[Listing]]:
    """(file name -> (size, mtime in ns), sub-folders to search, sub-folders listed as
    unreadable) of `folder`. Hidden entries are left out; a link to a file counts only where it
    stays in `root`."""
    files: dict[str, tuple[int, int]] = {}
    subdirs: list[Path] = []
    bad: list[Listing] = []
    with os.scandir(folder) as scan:
        for count, entry in enumerate(scan):
            if count >= MAX_ENTRIES:
                raise OSError(errno.EFBIG, f"more than {MAX_ENTRIES} entries: not read", str(folder))
            if entry.name.startswith("."):
                continue
            path = entry.path  # text: a Path per file costs more than the stat
            if entry.is_dir(follow_symlinks=False):
                if _utf8(entry.name):
                    subdirs.append(Path(path))
                else:
                    bad.append(Listing(Path(path), set(), "the folder name is not UTF-8: rename it"))
            elif entry.is_symlink() and entry.is_dir():
                bad.append(Listing(Path(path), set(), "a link to a folder: links to folders are not "
                                                      f"followed (this one points to {printable(os.readlink(path))})"))
            elif not _utf8(entry.name):
                log.warning("ignoring %s: the name is not UTF-8", printable(path))
            elif entry.is_file() and (not entry.is_symlink() or _inside(Path(path), root)):
                stat = entry.stat()
                files[entry.name] = (stat.st_size, stat.st_mtime_ns)
    return files, sorted(subdirs), sorted(bad)


def run_folders(root: str | Path, skip: Iterable[Path] = (), known: Known | None = None) -> Iterator[Listing]:
    """The run folders under `root` (or `root` alone, where it is itself one): each folder holding
    run files, or empty (a run not started yet), and each folder that cannot be read, with the
    problem; other folders are searched for nested runs, at most `MAX_DEPTH` levels down. `skip`
    is left out. `known(folder)` gives the listing of a run folder known unchanged (not listed
    again), else None. OSError where `root` itself cannot be listed."""
    root = Path(root).resolve()
    mtime = os.stat(root).st_mtime_ns
    files, subdirs, bad = _entries(root, root)
    if is_run_folder(set(files)):
        yield _listing(root, files, mtime)
        return
    yield from _walk(root, subdirs, bad, {p.resolve() for p in skip}, 1, known)


def _walk(top: Path, subdirs: list[Path], bad: list[Listing], skip: set[Path], depth: int,
          known: Known | None) -> Iterator[Listing]:
    yield from bad
    for folder in subdirs:
        if skip and folder.resolve() in skip:
            continue
        if known and (listing := known(folder)):
            yield listing
            continue
        try:
            mtime = os.stat(folder).st_mtime_ns
            files, inner, inner_bad = _entries(folder, top)
        except OSError as e:
            yield Listing(folder, set(), f"cannot list the folder: {e.strerror or e}")
            continue
        if is_run_folder(set(files)) or not (inner or inner_bad):
            yield _listing(folder, files, mtime)
        elif depth >= MAX_DEPTH:
            log.warning("not searching %s: more than %d levels below the root", folder, MAX_DEPTH)
        else:
            yield from _walk(top, inner, inner_bad, skip, depth + 1, known)


def _listing(folder: Path, files: dict[str, tuple[int, int]], mtime: int = 0) -> Listing:
    return Listing(folder, set(files), stamp=tuple(sorted((n, *st) for n, st in files.items())),
                   mtime=mtime)
