"""Where a job's results go: the output folder check and strict, atomic JSON."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edge.core.fileio import atomic_write_bytes, json_safe
from edge.errors import ConfigError, HsiEdgeError

__all__ = ["prepare_out_dir", "json_safe", "write_json", "RunDir", "RUN_OUTPUTS", "check_free_space"]


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


#: What ``hsi-edge run`` writes into its output folder (its own files, and only these, are
#: removed by ``--overwrite``).
RUN_OUTPUTS = ("metrics.json", "overlay_*.png", "sto2_*.png", "maps_*.npz")
#: Held (``flock``) while a run writes into the folder.
RUN_LOCK = ".hsi-edge-run.lock"


class RunDir:
    """An output folder claimed by one run: refused if used, locked while the run writes.

    Use as a context manager: ``with RunDir(out, overwrite=...) as out_dir: ...``.

    Parameters
    ----------
    out : path-like
        The folder (created if missing; checked writable by :func:`prepare_out_dir`).
    overwrite : bool
        Replace a previous run's outputs (only the files in :data:`RUN_OUTPUTS`); without it
        a folder holding any of them is refused.
    option : str
        The option named in messages.

    Raises
    ------
    ConfigError
        The folder holds a previous run's outputs (without ``overwrite``), another run is
        writing into it, or it cannot be written.
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False,
                 option: str = "--out") -> None:
        self.path = prepare_out_dir(out, option)
        self.overwrite = overwrite
        self.option = option
        self._fd: int | None = None

    def previous_outputs(self) -> list[Path]:
        """The previous run's files in the folder, sorted."""
        return sorted(p for pat in RUN_OUTPUTS for p in self.path.glob(pat))

    def __enter__(self) -> Path:
        import fcntl

        fd = os.open(self.path / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"{self.option}: {str(self.path)!r} is being written by another "
                              f"hsi-edge run (pid {holder}); choose another folder") from None
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            old = self.previous_outputs()
            if old and not self.overwrite:
                raise ConfigError(
                    f"{self.option}: {str(self.path)!r} already holds a run's outputs "
                    f"({len(old)} file(s), e.g. {old[0].name}); use another folder or pass "
                    f"--overwrite to replace them")
            for p in old:
                p.unlink()
        except BaseException:
            self.__exit__()
            raise
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the empty lock file stays (harmless)
            self._fd = None


def check_free_space(out_dir: Path, need_bytes: int, *, option: str = "--out") -> None:
    """Refuse a folder whose file system cannot take ``need_bytes`` (one frame's outputs).

    Raises
    ------
    ConfigError
        Names the folder, the free space and what one frame needs.
    """
    import shutil

    free = shutil.disk_usage(out_dir).free
    if free < need_bytes:
        raise ConfigError(f"{option}: {str(out_dir)!r} has {free / 1e6:.1f} MB free; one "
                          f"frame's outputs need about {need_bytes / 1e6:.1f} MB (free some "
                          f"space or choose another folder)")
