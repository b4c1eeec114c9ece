"""Resumable, verified downloads of large files (model checkpoints) from a list of mirrors.

A download streams into ``<dest>.part``, resumes it with HTTP Range requests after a
broken connection (also across calls), checks its size and SHA-256, and only then
renames it onto ``dest``. Hashes can be pinned by the caller or kept in a JSON lock
file (trust on first use).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Sequence

import requests
from tqdm import tqdm

from engine.fsutil import atomic_write_json

CHUNK_SIZE = 1 << 20  # 1 MiB: file buffer and hashing block
READ_SIZE = 1 << 16  # 64 KiB socket reads
MAX_BACKOFF_S = 1.0


class DownloadError(RuntimeError):
    """No mirror produced a verified file. ``attempts`` holds (url, reason) pairs."""

    def __init__(self, message: str, *, dest: Path | None = None,
                 attempts: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.dest = dest
        self.attempts = list(attempts)


class ChecksumMismatch(DownloadError):
    """A mirror served bytes that did not hash to the expected SHA-256.

    ``url``, ``expected`` and ``actual`` describe the last mismatch seen.
    """

    def __init__(self, message: str, *, url: str, expected: str, actual: str,
                 dest: Path | None = None, attempts: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message, dest=dest, attempts=attempts)
        self.url = url
        self.expected = expected
        self.actual = actual


class _Incomplete(Exception):
    """The body stopped before its announced end; the .part keeps what arrived."""


class _MirrorFailed(Exception):
    """This mirror cannot deliver the file; the message says why."""


class _Mismatch(_MirrorFailed):
    """This mirror served bytes with the wrong SHA-256."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch (expected sha256 {expected}, got {actual})")
        self.url, self.expected, self.actual = url, expected, actual


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumLock:
    """A JSON lock file mapping keys to ``{"sha256": ..., "size": ..., "url": ...}``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"checksum lock file {self.path} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"checksum lock file {self.path} must hold a JSON object")
        return data

    def get(self, key: str) -> dict | None:
        """The record stored under ``key``, or None."""
        return self._read().get(key)

    def record(self, key: str, sha256: str, size: int, url: str) -> None:
        """Store a record under ``key`` (re-reads the file first, writes it atomically)."""
        data = self._read()
        data[key] = {"sha256": sha256.lower(), "size": int(size), "url": url}
        atomic_write_json(self.path, data)


def part_path(dest: Path) -> Path:
    """Where the partial download of ``dest`` lives (``<dest>.part``)."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _describe(exc: BaseException) -> str:
    """A short human reason for a requests exception (refused, DNS, timeout...)."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.ReadTimeout):
        return "read timeout"
    text = str(exc)
    if "NameResolutionError" in text or "Name or service not known" in text \
            or "getaddrinfo failed" in text or "nodename nor servname" in text:
        return "DNS lookup failed (offline?)"
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if match:
        return f"connection failed: {match.group(0)}"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed: {text[:200]}"
    return f"{type(exc).__name__}: {text[:200]}"


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` or ``bytes */TOTAL`` into (start, total)."""
    if not header:
        return None, None
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _content_length(resp: requests.Response) -> int | None:
    """Content-Length of an un-encoded body, or None."""
    if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    value = resp.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _stream_body(resp: requests.Response, part: Path, start: int, total: int | None,
                 desc: str, progress: bool) -> None:
    """Write the body into ``part`` from byte ``start``; raise _Incomplete if it breaks.

    The socket is read in small pieces (a break loses at most READ_SIZE bytes, since
    urllib3 drops a partly filled read) and written through a 1 MiB file buffer.
    """
    expected = _content_length(resp)
    received = 0
    mode = "r+b" if part.exists() else "wb"
    with open(part, mode, buffering=CHUNK_SIZE) as f, \
            tqdm(total=total, initial=start, desc=desc, unit="B", unit_scale=True,
                 unit_divisor=1024, disable=not progress, leave=False) as bar:
        f.truncate(start)
        f.seek(start)
        try:
            for chunk in resp.iter_content(chunk_size=READ_SIZE):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as e:
            broken = e
        else:
            broken = None
    if broken is not None or (expected is not None and received < expected):
        of = f" of {total}" if total is not None else ""
        detail = f": {_describe(broken)}" if isinstance(broken, requests.ConnectionError) else ""
        raise _Incomplete(f"connection broken mid-stream at byte {start + received}{of}{detail}")


def _request_once(session: requests.Session, url: str, part: Path, timeout: tuple[float, float],
                  desc: str, progress: bool) -> int | None:
    """One GET into ``part`` (resuming if it exists); return the file's announced size or None."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416 and offset:
            total = _content_range(resp.headers.get("Content-Range"))[1]
            if total is None:  # cannot tell whether the .part is whole: start over
                part.unlink(missing_ok=True)
                raise _Incomplete("HTTP 416 without a file size; restarting from byte 0")
            return total
        if resp.status_code == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start is None or start > offset:
                raise _MirrorFailed(f"bad Content-Range {resp.headers.get('Content-Range')!r}")
        elif resp.status_code == 200:
            start, total = 0, _content_length(resp)
        else:
            raise _MirrorFailed(f"HTTP {resp.status_code} {resp.reason or ''}".strip())
        _stream_body(resp, part, start, total, desc, progress)
        return total


def _fetch_verified(session: requests.Session, url: str, part: Path, expected_sha: str | None, *,
                    retries: int, timeout: tuple[float, float], desc: str,
                    progress: bool) -> tuple[str, int]:
    """Download ``url`` into ``part`` with resume/retry; verify it; return (sha256, size).

    Raises _MirrorFailed (move on to the next mirror); _Mismatch also deletes the .part.
    """
    reason = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(MAX_BACKOFF_S, 0.1 * 2 ** attempt))
        try:
            total = _request_once(session, url, part, timeout, desc, progress)
        except _Incomplete as e:
            reason = str(e)
            continue
        except requests.RequestException as e:
            raise _MirrorFailed(_describe(e)) from e
        size = part.stat().st_size if part.exists() else 0
        if total is not None and size < total:
            reason = f"connection broken mid-stream at byte {size} of {total}"
            continue
        if total is not None and size > total:
            part.unlink(missing_ok=True)
            reason = f"local .part ({size} bytes) larger than remote file ({total} bytes)"
            continue
        actual = sha256_file(part)
        if expected_sha is not None and actual != expected_sha:
            part.unlink(missing_ok=True)
            raise _Mismatch(url, expected_sha, actual)
        return actual, size
    tries = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
    raise _MirrorFailed(f"{reason}; gave up after {tries}")


def _failure_message(what: str, dest: Path, attempts: Sequence[tuple[str, str]]) -> str:
    lines = [f"could not download {what}; tried {len(attempts)} URL(s):"]
    lines += [f"  - {url}: {why}" for url, why in attempts]
    lines.append(f"put the file by hand at {dest}")
    return "\n".join(lines)


def download(urls: Sequence[str], dest: Path, *, sha256: str | None = None,
             lock: ChecksumLock | None = None, lock_key: str | None = None,
             desc: str | None = None, retries: int = 3, connect_timeout: float = 10.0,
             read_timeout: float = 60.0, progress: bool = True) -> Path:
    """Fetch ``dest`` from the first mirror in ``urls`` that delivers verified bytes.

    Returns ``dest`` untouched if it exists. Otherwise streams into ``<dest>.part``
    (resuming it with Range requests; a broken stream is retried ``retries`` times),
    checks the size and the SHA-256 (``sha256`` if given, else the ``lock`` record
    under ``lock_key``, default ``dest.name``; with neither, the hash is recorded in
    ``lock`` after the download), then renames ``.part`` onto ``dest``.
    Raises DownloadError (ChecksumMismatch if a mirror served wrong bytes) listing
    every URL tried and why.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    if isinstance(urls, str):
        urls = [urls]
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    key = lock_key or dest.name
    record = lock.get(key) if lock is not None else None
    expected = (sha256 or (record or {}).get("sha256") or "").lower() or None
    attempts: list[tuple[str, str]] = []
    mismatch: _Mismatch | None = None
    with requests.Session() as session:
        for url in urls:
            try:
                actual, size = _fetch_verified(
                    session, url, part, expected, retries=retries,
                    timeout=(connect_timeout, read_timeout), desc=desc or dest.name,
                    progress=progress)
            except _MirrorFailed as e:
                attempts.append((url, str(e)))
                if isinstance(e, _Mismatch):
                    mismatch = e
                continue
            os.replace(part, dest)
            if lock is not None and record is None:
                lock.record(key, actual, size, url)
            return dest
    message = _failure_message(desc or dest.name, dest, attempts)
    if mismatch is not None:
        raise ChecksumMismatch(message, url=mismatch.url, expected=mismatch.expected,
                               actual=mismatch.actual, dest=dest, attempts=attempts)
    raise DownloadError(message, dest=dest, attempts=attempts)
