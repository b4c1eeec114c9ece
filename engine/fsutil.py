"""Atomic file writes: a reader never sees a half-written file."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it.

    Temporary names are `.<name>.<random>.tmp`. An OSError that names no file (a failed write:
    disk full) is given `path` as its file name, so that every error says where it happened.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as err:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if isinstance(err, OSError) and not err.filename:
            err.filename = str(path)
        raise


def write_file(path: str | os.PathLike, data: bytes | str, *, durable: bool = False) -> None:
    """Write bytes or UTF-8 text to `path`; `durable` flushes them to the disk before returning."""
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, data: bytes | str, *, durable: bool = False) -> Path:
    """Write bytes or UTF-8 text to `path` atomically (temp file + rename); see `write_file`."""
    with atomic_path(path) as tmp:
        write_file(tmp, data, durable=durable)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path` atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


_HINTS = {errno.ENOSPC: "free some space, then run the same command again",
          errno.EDQUOT: "free some space, then run the same command again",
          errno.EROFS: "the file system is read-only; choose another folder (setting out_dir)",
          errno.EACCES: "no permission; choose a folder you can write (setting out_dir)",
          errno.EPERM: "no permission; choose a folder you can write (setting out_dir)",
          errno.ENOENT: "check the path (a folder on it may be missing or not creatable)",
          errno.ENAMETOOLONG: "the name is too long for the file system; use a shorter file_namespace or out_dir"}


def describe_os_error(err: OSError) -> str:
    """One line: the path, the cause (with its errno name) and, for the usual causes, what to do."""
    if err.errno is None or not err.filename:
        return str(err)
    paths = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
    cause = f"{err.strerror or os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)})"
    hint = _HINTS.get(err.errno)
    return f"{paths}: {cause}" + (f"; {hint}" if hint else "")
