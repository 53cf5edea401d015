"""Where a job's results go: the output folder check and strict, atomic JSON."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.fileio import atomic_write_bytes
from edge.errors import ConfigError, HsiEdgeError

__all__ = ["prepare_out_dir", "json_safe", "write_json"]


def prepare_out_dir(out: str | os.PathLike, option: str = "--out") -> Path:
    """Create the output folder and prove it is writable; returns its path.

    Raises
    ------
    ConfigError
        ``out`` is a file, cannot be created, or cannot be written (read-only file system,
        permissions, disk full), naming the option and the folder.
    """
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{option}: {str(out_dir)!r} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # os.access lies for root and on read-only mounts; a real file creation does not.
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"{option}: cannot write to {str(out_dir)!r}: "
                          f"{exc.strerror or exc}") from exc
    return out_dir


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


def write_json(path: str | os.PathLike, doc: Any) -> None:
    """Write ``doc`` as strict JSON (non-finite numbers as null), atomically.

    Raises
    ------
    HsiEdgeError
        The file cannot be written (names the file and the reason).
    """
    text = json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n"
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise HsiEdgeError(f"{path}: cannot write: {exc.strerror or exc}") from exc
