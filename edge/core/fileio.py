"""Atomic file writing: a file appears complete or not at all (recordings, calibration
records, engines, maps).  The one implementation every writer uses."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

__all__ = ["json_safe", "atomic_open", "atomic_write_bytes", "fsync_dir", "sha256_file"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (best effort: not every platform allows
    opening a directory; the rename itself is atomic regardless)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing so that it appears complete or not at all.

    Data goes to a temporary file in the same directory (same filesystem, so the final
    ``os.replace`` is atomic); it is flushed and fsync'ed before the rename, and the directory
    is fsync'ed after it so the rename survives a power cut.  If the block raises, the
    temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (0666 & ~umask)
        # so a display service or another user can read recordings and maps.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as fh:
        fh.write(data)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (model files, calibration arrays)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None and numpy scalars/arrays made Python.

    ``json.dumps`` would otherwise write the bare tokens ``NaN``/``Infinity``, which are not
    JSON (RFC 8259) and break strict readers; a figure that does not exist (no samples, no
    frames) is ``null``.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
