"""Atomic output: every file avmatch writes appears whole or not at all, with the mode the umask gives.
Also the small file checks every reader of avmatch's outputs shares (regular files, SHA-256)."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import socket
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from avmatch.errors import AvmatchError


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (``os.umask`` can only be
    read by setting it, which would briefly give files made by other threads the wrong mode)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffix, so writers that infer a format from it (np.save,
    matplotlib) write the right thing to the right name. The file gets the mode a plain ``open``
    would give (0666 less the umask): mkstemp's private 0600 would make a shared corpus or run
    folder unreadable to colleagues.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """``text`` as UTF-8 (whatever the locale says) into ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _owner() -> str:
    """The writing process in a temporary's name (host, pid), so a sweep can tell a live writer's file
    from one a killed writer left."""
    return f"{_host_tag()}p{os.getpid()}"


_OWNER = re.compile(r"\.([0-9a-f]{8})p(\d+)\.[^.]+\.tmp")


def _owner_gone(name: str) -> bool:
    """Whether the process that wrote the temporary ``name`` has ended (a name from before owners were
    recorded counts as ended; a writer on another host, or one still running, does not)."""
    found = _OWNER.search(name)
    if not found:
        return True
    host, pid = found.group(1), int(found.group(2))
    if host != _host_tag() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists but is not ours to signal
        return False
    return False


def _remove_temps(folder: Path, name_pattern: str) -> None:
    """Delete :func:`atomic_path`'s temporaries (``.NAME.OWNER.XXXX.tmpSUFFIX``) in ``folder`` of the
    files whose names match ``name_pattern``, where their writer has ended: what writers killed between
    mkstemp and rename left. A concurrent writer's live temporaries are left alone."""
    for stale in folder.glob(f".{name_pattern}.*.tmp*"):
        if _owner_gone(stale.name):
            stale.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> None:
    """Delete the temporary files a killed writer of ``path`` left."""
    _remove_temps(path.parent, glob.escape(path.name))


def remove_stale_temps_in(folder: Path) -> None:
    """Delete the temporary files killed writers of any file in ``folder`` left."""
    _remove_temps(folder, "*")


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def regular(path: str | Path) -> Path:
    """``path`` if it is a regular file; a pipe or a device (reading it could wait forever) is refused."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise AvmatchError("is not a regular file (a folder, a pipe or a device)", path)
    if not path.exists():
        raise AvmatchError("no such file", path)
    return path

