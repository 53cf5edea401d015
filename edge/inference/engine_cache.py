"""On-disk cache of serialized TensorRT engines (no TensorRT needed to use it).

Why a cache, and why this key (FACTS.md, "GPU, Jetson and TensorRT"): an engine loads only on
the TensorRT version and GPU model that built it, and a first build on an Orin takes minutes.
So an engine is keyed on everything that makes it valid — the ONNX file's sha256, the TensorRT
version, the GPU name and compute capability, the precision/typing mode, the optimization
profile shapes and the builder settings the plan depends on (``build``: e.g. optimization
level, hardware compatibility, TF32, workspace, and the GPU's SM count, total memory and peak
clock, which tell Jetson Orin modules apart although all report the name "Orin" and sm_87:
Orin NX 16 GB, NX 8 GB and Nano 8 GB even share 8 SMs) — and a file whose key, header or
payload does not match is rebuilt, never loaded.

File format (one file per key, ``<model>-<digest16>.engine``)::

    b"HSIENGINE\\n"                       magic (10 bytes)
    uint32 big-endian                     length L of the JSON header
    L bytes UTF-8 JSON                    {"format", "key", "key_digest", "payload_bytes",
                                           "payload_sha256", "created_utc", "build_seconds",
                                           "hmac"}
    payload                               the serialized engine (TensorRT plan)

The payload sha256 catches truncation and bit rot; the key inside the header catches a file
copied in from another device or renamed.  Writes are atomic: a temporary file in the same
directory, ``fsync``, ``os.replace``, then ``fsync`` of the directory, so a crash leaves either
the old file or the new one, never a partial engine.  Temporary files (``.*.tmp``) are never
read and are removed by :meth:`EngineCache.clear`.

An engine is deserialised by TensorRT -- code-like input -- so the folder follows the rules of
:mod:`edge.core.private_cache`: created ``0o700``; refused (one line) unless it is owned by this
user and not writable by group/others; the header carries ``hmac``, an HMAC-SHA256 of the key
digest and payload sha256 under a per-user secret, and an engine without a valid one (written
by an older version, or placed there by anyone else with a consistent header) is rebuilt,
never loaded.  :meth:`EngineCache.get_or_build` holds an exclusive lock on ``.lock`` in the
folder, so two processes build an engine once.

The parity gate (:mod:`edge.inference.parity`) records its verdict in a sidecar
``<engine>.parity.json`` tied to the payload sha256: an engine is *verified* only if the last
gate on exactly these bytes passed; a rebuilt engine starts unverified.

The TensorRT timing cache lives beside the engines (``timing-<digest16>.cache``), keyed on
TensorRT version and GPU only (the ``gpu_*`` build settings included), so rebuilding a changed
model reuses earlier tactic timings; builds merge it under a lock
(:mod:`edge.inference.tensorrt_timing`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from edge.core import private_cache
from edge.core.fileio import atomic_open
from edge.errors import ConfigError, EngineError

__all__ = ["EngineKey", "EngineCache", "CacheEntry", "default_cache_dir", "write_atomic",
           "MAGIC", "HEADER_FORMAT"]

log = logging.getLogger(__name__)

MAGIC = b"HSIENGINE\n"
HEADER_FORMAT = "hsi-edge-engine/1"
_LEN = struct.Struct(">I")
_MAX_HEADER = 1 << 20  # a header larger than 1 MiB is garbage, not metadata
_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")
PRECISIONS = ("fp32", "fp16")
TYPINGS = ("weak", "strong")


def default_cache_dir() -> Path:
    """``$HSI_EDGE_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/hsi-edge/engines`` (``~/.cache``)."""
    env = os.environ.get("HSI_EDGE_ENGINE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hsi-edge" / "engines"


@dataclass(frozen=True)
class EngineKey:
    """Everything that decides whether a serialized engine is valid here.

    Attributes
    ----------
    model : str
        Model name (for the file name and listings only; not part of validity).
    onnx_sha256 : str
        Hex sha256 of the ONNX model the engine was built from, external-data weight files
        included (:func:`edge.inference.onnx_hash.onnx_content_sha256`; equal to the file's
        sha256 when it has none).
    trt_version : str
        ``tensorrt.__version__`` of the builder, e.g. ``"10.3.0.30"``.
    gpu_name : str
        CUDA device name, e.g. ``"Orin"`` or ``"NVIDIA H100 80GB HBM3"``.
    compute_capability : str
        ``"major.minor"``, e.g. ``"8.7"``.
    precision : {"fp32", "fp16"}
    typing : {"weak", "strong"}
        Weakly typed with builder precision flags (TensorRT 10.x) or strongly typed from the
        ONNX graph's own types (TensorRT 11.x, or 10.x on request).
    shapes : tuple of (name, min, opt, max)
        Optimization profile per input; each shape a tuple of int.
    build : tuple of (name, value)
        Builder settings and device properties beyond name/compute capability that the plan
        depends on (values str, int or bool), sorted by name; a mapping is accepted.  Keys
        starting with ``gpu_`` also scope the timing cache.
    """

    model: str
    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    typing: str
    shapes: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]
    build: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, "
                              f"got {self.precision!r}")
        if self.typing not in TYPINGS:
            raise ConfigError(f"typing: expected one of {', '.join(TYPINGS)}, got {self.typing!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256 or ""):
            raise ConfigError(f"onnx_sha256: expected 64 lowercase hex digits, "
                              f"got {self.onnx_sha256!r}")
        # Normalise lists (from JSON) to tuples so equality and hashing are structural.
        shapes = tuple((str(n), tuple(int(v) for v in lo), tuple(int(v) for v in opt),
                        tuple(int(v) for v in hi)) for n, lo, opt, hi in self.shapes)
        object.__setattr__(self, "shapes", shapes)
        items = self.build.items() if isinstance(self.build, dict) else self.build
        build = tuple(sorted((str(k), v) for k, v in items))
        for k, v in build:
            if not isinstance(v, (str, int, bool)):
                raise ConfigError(f"build: setting {k!r} must be str, int or bool, got {v!r}")
        object.__setattr__(self, "build", build)

    def validity(self) -> dict[str, Any]:
        """The fields that decide validity, as plain JSON types (``model`` excluded)."""
        d = dataclasses.asdict(self)
        d.pop("model")
        d["shapes"] = [[n, list(lo), list(opt), list(hi)] for n, lo, opt, hi in self.shapes]
        d["build"] = dict(self.build)
        return d

    def digest(self) -> str:
        """Hex sha256 of the canonical JSON of :meth:`validity`."""
        blob = json.dumps(self.validity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def device_digest(self) -> str:
        """Digest of TensorRT version + GPU only: the scope of a timing cache."""
        gpu = [[k, v] for k, v in self.build if k.startswith("gpu_")]
        blob = json.dumps([self.trt_version, self.gpu_name, self.compute_capability]
                          + ([gpu] if gpu else []))
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_json(cls, model: str, d: dict[str, Any]) -> "EngineKey":
        return cls(model=model, **d)


@dataclass(frozen=True)
class CacheEntry:
    """One engine file as found on disk (for ``hsi-edge engine info``)."""

    path: Path
    size: int
    header: dict[str, Any] | None
    problem: str | None
    verified: bool | None

    @property
    def model(self) -> str:
        return (self.header or {}).get("model", self.path.stem.rsplit("-", 1)[0])


def write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` so readers see the old file or the complete new one
    (:func:`edge.core.fileio.atomic_open`: temporary file, fsync, rename, directory fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        for chunk in chunks:
            f.write(chunk)


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """Return (header, payload offset); raise ValueError naming what is wrong."""
    with open(path, "rb") as f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            raise ValueError("not an hsi-edge engine file (bad magic)")
        raw = f.read(_LEN.size)
        if len(raw) != _LEN.size:
            raise ValueError("truncated header")
        (n,) = _LEN.unpack(raw)
        if n > _MAX_HEADER:
            raise ValueError(f"header length {n} is implausible")
        blob = f.read(n)
    if len(blob) != n:
        raise ValueError("truncated header")
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"header is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(header, dict) or header.get("format") != HEADER_FORMAT:
        raise ValueError(f"header format is not {HEADER_FORMAT!r}")
    return header, len(MAGIC) + _LEN.size + n


class EngineCache:
    """A directory of engines keyed by :class:`EngineKey`.

    Parameters
    ----------
    root : path, optional
        Cache directory (default :func:`default_cache_dir`); created on first write.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    # -- safety (module docstring) -------------------------------------------------------
    _HINT = "set HSI_EDGE_ENGINE_CACHE to a private folder"
    _SIGN_CONTEXT = "hsi-edge TensorRT engine"

    def _private_root(self) -> bytes:
        """Create (0o700) or check the folder; return this user's signing key.

        Raises
        ------
        EngineError
            The folder is not yours or is writable by group/others (one line, how to fix).
        """
        private_cache.ensure_private_dir(self.root, what="engine cache", error=EngineError,
                                         hint=self._HINT)
        return private_cache.user_key(self.root, error=EngineError)

    def _signature_problem(self, path: Path, header: dict[str, Any]) -> str | None:
        problem = private_cache.file_problem(path)
        if problem:
            return problem
        if not private_cache.verify(self._private_root(), header.get("hmac"),
                                    self._SIGN_CONTEXT, str(header.get("key_digest")),
                                    str(header.get("payload_sha256"))):
            return ("not signed by this user (an engine from an older version, or placed "
                    "there by someone else)")
        return None

    # -- paths ---------------------------------------------------------------------------
    def path_for(self, key: EngineKey) -> Path:
        name = _NAME_OK.sub("_", key.model).strip("._") or "model"
        return self.root / f"{name}-{key.digest()[:16]}.engine"

    def timing_cache_path(self, key: EngineKey) -> Path:
        return self.root / f"timing-{key.device_digest()[:16]}.cache"

    @staticmethod
    def _parity_path(engine_path: Path) -> Path:
        return engine_path.with_name(engine_path.name + ".parity.json")

    # -- engines -------------------------------------------------------------------------
    def load(self, key: EngineKey) -> bytes | None:
        """Return the engine payload for ``key``, or None (with the reason logged) when the
        file is missing, foreign, stale, truncated or corrupt — the caller then rebuilds."""
        payload, problem = self._load(self.path_for(key), key)
        if problem:
            log.warning("engine cache: %s: %s; it will be rebuilt", self.path_for(key).name,
                        problem)
        return payload

    def _load(self, path: Path, key: EngineKey | None) -> tuple[bytes | None, str | None]:
        if not path.is_file():
            return None, None if key is not None else "missing"
        try:
            header, offset = _read_header(path)
        except (OSError, ValueError) as exc:
            return None, str(exc)
        if key is not None:
            if header.get("key") != key.validity():
                diff = _key_diff(header.get("key"), key.validity())
                return None, f"built for a different configuration ({diff})"
        with open(path, "rb") as f:
            f.seek(offset)
            payload = f.read()
        want = header.get("payload_bytes")
        if len(payload) != want:
            return None, f"payload is {len(payload)} bytes, header says {want} (truncated?)"
        if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
            return None, "payload sha256 does not match the header (corrupt)"
        problem = self._signature_problem(path, header)
        if problem:
            return None, problem
        return payload, None

    def store(self, key: EngineKey, payload: bytes, *, build_seconds: float | None = None
              ) -> Path:
        """Write ``payload`` atomically under ``key``; drops any earlier parity verdict."""
        if not payload:
            raise EngineError(f"engine for {key.model!r}: refusing to cache an empty engine")
        secret = self._private_root()
        sha = hashlib.sha256(payload).hexdigest()
        header = {"format": HEADER_FORMAT, "model": key.model, "key": key.validity(),
                  "key_digest": key.digest(), "payload_bytes": len(payload),
                  "payload_sha256": sha,
                  "hmac": private_cache.sign(secret, self._SIGN_CONTEXT, key.digest(), sha),
                  "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "build_seconds": None if build_seconds is None else round(build_seconds, 3)}
        blob = json.dumps(header, sort_keys=True).encode()
        path = self.path_for(key)
        write_atomic(path, [MAGIC, _LEN.pack(len(blob)), blob, payload])
        self._parity_path(path).unlink(missing_ok=True)
        return path

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> tuple[bytes, bool]:
        """Return ``(payload, built)``: the cached engine, or a fresh one from ``build()``.

        ``build`` is any callable returning the serialized engine (the TensorRT builder in
        production; a plain function in tests).  Its duration is logged and stored.  The
        folder's lock is held throughout, so a concurrent process waits and then finds the
        engine instead of building it again.
        """
        self._private_root()
        with private_cache.locked(self.root):
            return self._get_or_build(key, build)

    def _get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> tuple[bytes, bool]:
        payload = self.load(key)
        if payload is not None:
            log.info("engine cache: hit %s", self.path_for(key).name)
            return payload, False
        log.warning("building TensorRT engine for %r (%s, %s typing, TensorRT %s on %s sm_%s); "
                    "a first build can take minutes", key.model, key.precision, key.typing,
                    key.trt_version, key.gpu_name, key.compute_capability.replace(".", ""))
        t0 = time.monotonic()
        payload = build()
        seconds = time.monotonic() - t0
        if not isinstance(payload, (bytes, bytearray, memoryview)) or len(payload) == 0:
            raise EngineError(f"engine build for {key.model!r} produced no engine "
                              f"(got {type(payload).__name__})")
        payload = bytes(payload)
        path = self.store(key, payload, build_seconds=seconds)
        log.warning("built engine %s in %.1f s (%.1f MB)", path.name, seconds,
                    len(payload) / 1e6)
        return payload, True

    def discard(self, key: EngineKey) -> list[Path]:
        """Delete the engine cached under exactly ``key`` and its verdict (``--force``);
        other engines of the same model (other precision, GPU, ...) are kept."""
        removed = []
        path = self.path_for(key)
        for q in (path, self._parity_path(path)):
            if q.exists():
                q.unlink()
                removed.append(q)
        return removed

    # -- timing cache --------------------------------------------------------------------
    def load_timing_cache(self, key: EngineKey) -> bytes:
        """Serialized timing cache for this TensorRT/GPU, or ``b""`` if there is none."""
        p = self.timing_cache_path(key)
        if not p.is_file():
            return b""
        self._private_root()                    # TensorRT parses it: only from a safe folder
        problem = private_cache.file_problem(p)
        if problem:
            log.warning("engine cache: ignoring timing cache %s: it %s", p.name, problem)
            return b""
        return p.read_bytes()

    def save_timing_cache(self, key: EngineKey, blob: bytes) -> None:
        if blob:
            write_atomic(self.timing_cache_path(key), [bytes(blob)])

    # -- parity verdicts -----------------------------------------------------------------
    def record_parity(self, key: EngineKey, passed: bool, report: dict[str, Any]) -> None:
        """Record a parity-gate verdict for the engine currently cached under ``key``.

        Raises
        ------
        EngineError
            No valid engine is cached under ``key`` (nothing to verify).
        """
        path = self.path_for(key)
        payload, problem = self._load(path, key)
        if payload is None:
            raise EngineError(f"engine cache: no valid engine for {key.model!r} at {path} "
                              f"({problem or 'missing'}); build it first")
        record = {"passed": bool(passed), "payload_sha256": hashlib.sha256(payload).hexdigest(),
                  "checked_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "report": report}
        write_atomic(self._parity_path(path), [json.dumps(record, indent=1).encode()])

    def is_verified(self, key: EngineKey) -> bool:
        """True only if the last parity gate on exactly the cached bytes passed."""
        path = self.path_for(key)
        return self._verified(path, self._header_sha(path)) is True

    def _header_sha(self, path: Path) -> str | None:
        try:
            return _read_header(path)[0].get("payload_sha256")
        except (OSError, ValueError):
            return None

    def _verified(self, path: Path, payload_sha: str | None) -> bool | None:
        pp = self._parity_path(path)
        if payload_sha is None or not pp.is_file():
            return None
        try:
            rec = json.loads(pp.read_text())
        except (OSError, ValueError):
            return False
        return bool(rec.get("passed")) and rec.get("payload_sha256") == payload_sha

    # -- listing and clearing ------------------------------------------------------------
    def _engine_files(self) -> Iterator[Path]:
        if self.root.is_dir():
            yield from sorted(p for p in self.root.glob("*.engine") if not p.name.startswith("."))

    def entries(self) -> list[CacheEntry]:
        """Every engine file with its header, integrity problem (if any) and verdict."""
        out = []
        for p in self._engine_files():
            payload, problem = self._load(p, None)
            header = None
            try:
                header = _read_header(p)[0]
            except (OSError, ValueError):
                pass
            sha = header.get("payload_sha256") if header and payload is not None else None
            out.append(CacheEntry(path=p, size=p.stat().st_size, header=header,
                                  problem=problem, verified=self._verified(p, sha)))
        return out

    def clear(self, model: str | None = None, *, timing: bool = False) -> list[Path]:
        """Delete engines (all, or one model's), their verdicts and leftover temp files.

        Returns the deleted paths.  ``timing=True`` also deletes the timing caches.
        """
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for p in self._engine_files():
            if model is None or CacheEntry(p, 0, _safe_header(p), None, None).model == model:
                for q in (p, self._parity_path(p)):
                    if q.exists():
                        q.unlink()
                        removed.append(q)
        for p in self.root.glob(".*.tmp"):  # leftovers of a crash mid-write
            p.unlink()
            removed.append(p)
        if timing and model is None:
            for p in self.root.glob("timing-*.cache"):
                p.unlink()
                removed.append(p)
        return removed


def _safe_header(path: Path) -> dict[str, Any] | None:
    try:
        return _read_header(path)[0]
    except (OSError, ValueError):
        return None


def _key_diff(got: Any, want: dict[str, Any]) -> str:
    if not isinstance(got, dict):
        return "no key in header"
    diffs = [f"{k}: file {got.get(k)!r}, here {v!r}" for k, v in sorted(want.items())
             if got.get(k) != v]
    return "; ".join(diffs) or "key differs"
