"""Caches that hold code or engines: private folders, a per-user signing key, a build lock.

A cache whose files are loaded as code (the native backend's shared library, dlopen'ed into
the process) or as an engine (a TensorRT plan, deserialised by TensorRT) is only as safe as
the folder it lives in: whoever can write there can run code as the user who loads it.  A
checksum beside the file detects damage, not intent -- a planted file comes with a matching
checksum.  So every such cache follows three rules:

1. The folder is created ``0o700`` and, before anything is loaded from it, must be a
   directory owned by the current user and not writable by group or others
   (:func:`ensure_private_dir`; refused with one line naming the folder, its owner and mode
   and how to fix it).  The loaded file itself must be a regular file owned by the user and
   not writable by others (:func:`file_problem`).
2. A file is loaded only if this user built it: its build record carries an HMAC-SHA256
   (:func:`sign`) over what was built, keyed by a per-user secret of 32 random bytes kept
   ``0o600`` in ``$XDG_CONFIG_HOME/hsi-edge/cache.key`` (``~/.config``), outside every cache
   folder, so a file copied in from elsewhere -- with its checksum -- fails the check and is
   rebuilt.  Where no config folder can be created (a service user without a home), the key
   lives in the (private) cache folder itself.
3. Builds hold an exclusive ``fcntl.flock`` on ``.lock`` in the folder (:func:`locked`), so two
   processes never build, check or delete the same file at once: one builds, the other waits
   and then finds the finished file.  ``fcntl`` (standard library, Linux/macOS) rather than a
   third-party lock package: the project targets Linux only and flock locks are released by
   the kernel when a process dies, so a crashed build never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import pwd
import stat
from pathlib import Path
from typing import Iterator

from edge.errors import HsiEdgeError

__all__ = ["ensure_private_dir", "dir_problem", "file_problem", "user_key", "sign", "verify",
           "locked", "KEY_ENV_HINT"]

log = logging.getLogger(__name__)

_KEY_BYTES = 32
KEY_ENV_HINT = "$XDG_CONFIG_HOME/hsi-edge/cache.key"


def _owner(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def dir_problem(path: Path) -> str | None:
    """Why ``path`` is not a safe cache folder (None: it is).

    Safe: a directory (a symbolic link to one is followed; the target is checked), owned by
    the effective user, without group/other write permission.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    me = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != me:
        return (f"is owned by {_owner(st.st_uid)}, not by you ({_owner(me)}; mode {mode:04o}); "
                f"use a folder of your own")
    if mode & 0o022:
        who = {0o022: "group and others", 0o020: "group", 0o002: "others"}[mode & 0o022]
        return (f"is writable by {who} (mode {mode:04o}, owner {_owner(st.st_uid)}); run "
                f"'chmod go-w {path}' or use a private folder")
    return None


def ensure_private_dir(path: str | os.PathLike, *, what: str, error: type[HsiEdgeError],
                       hint: str = "") -> Path:
    """Create ``path`` (mode ``0o700``) if missing, then check it is safe to load from.

    Parameters
    ----------
    path : path-like
        The cache folder.
    what : str
        What it is, for the message (e.g. ``"native backend build cache"``).
    error : HsiEdgeError subclass
        Raised when the folder cannot be created or is unsafe.
    hint : str
        Appended to the message (e.g. the environment variable that moves the cache).

    Raises
    ------
    error
        ``"<what> <path> is writable by others (mode 0777, owner uid 0 (root)); refusing to
        load code from it: ..."`` -- one line.
    """
    p = Path(path)
    suffix = f"; {hint}" if hint else ""
    if not p.exists():
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.mkdir(mode=0o700)
        except FileExistsError:
            pass                                    # a concurrent process made it
        except OSError as exc:
            raise error(f"{what}: cannot create {p} ({exc.strerror}){suffix}") from None
    problem = dir_problem(p)
    if problem:
        raise error(f"{what} {p} {problem}; refusing to load code from it{suffix}")
    return p


def file_problem(path: Path) -> str | None:
    """Why the file at ``path`` must not be loaded (None: owner and mode are safe).

    Safe: a regular file (not a symbolic link) owned by the effective user and not writable
    by group or others.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a symbolic link or device)"
    if st.st_uid != os.geteuid():
        return f"is owned by {_owner(st.st_uid)}, not by you"
    if stat.S_IMODE(st.st_mode) & 0o022:
        return f"is writable by group/others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _key_path(fallback_dir: Path | None) -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    folder = Path(base) / "hsi-edge"
    try:
        ensure_private_dir(folder, what="hsi-edge key folder", error=HsiEdgeError)
        return folder / "cache.key"
    except HsiEdgeError as exc:
        if fallback_dir is None:
            raise
        log.debug("cache key: %s; keeping the key in %s", exc, fallback_dir)
        return fallback_dir / ".cache.key"


def user_key(fallback_dir: Path | None = None, *, error: type[HsiEdgeError] = HsiEdgeError
             ) -> bytes:
    """The per-user signing key (32 random bytes), created on first use.

    Parameters
    ----------
    fallback_dir : Path, optional
        A private cache folder to keep the key in when the config folder cannot be made.
    error : HsiEdgeError subclass
        Raised when the key file is unsafe (readable by others, another owner) or unreadable.
    """
    path = _key_path(fallback_dir)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(_KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)                  # never replaces a key another process made
            except FileExistsError:
                pass
        except OSError as exc:
            raise error(f"cache key {path}: cannot create it ({exc.strerror})") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    try:
        st = os.lstat(path)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or mode & 0o077:
            raise error(f"cache key {path}: must be a file of yours readable by you only "
                        f"(owner {_owner(st.st_uid)}, mode {mode:04o}); delete it (a new one "
                        f"is made and every cache rebuilt) or run 'chmod 600 {path}'")
        key = path.read_bytes()
    except OSError as exc:
        raise error(f"cache key {path}: cannot read it ({exc.strerror})") from None
    if len(key) != _KEY_BYTES:
        raise error(f"cache key {path}: {len(key)} bytes, expected {_KEY_BYTES}; delete it (a "
                    f"new one is made and every cache rebuilt)")
    return key


def sign(key: bytes, context: str, *parts: str) -> str:
    """Hex HMAC-SHA256 of ``parts`` (NUL-separated) under ``context`` with ``key``."""
    msg = b"\0".join([context.encode(), *(p.encode() for p in parts)])
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def verify(key: bytes, signature: object, context: str, *parts: str) -> bool:
    """True if ``signature`` is :func:`sign` of the same ``context`` and ``parts``."""
    return isinstance(signature, str) and hmac.compare_digest(signature,
                                                              sign(key, context, *parts))


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/.lock`` (created ``0o600``) for the block.

    The kernel drops the lock when the process exits, so a killed build leaves none behind.
    """
    fd = os.open(Path(folder) / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                                # closing the descriptor releases the lock
