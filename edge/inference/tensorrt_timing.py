"""The TensorRT timing cache on disk: merged, not overwritten, when builds run at once.

Two builds for the same TensorRT/GPU (``hsi-edge engine build`` beside a ``hsi-edge run``, or
two models) each start from the timing cache on disk and each write theirs back; the last
writer would drop the other's tactic timings.  As Polygraphy does (release/10.3
``backend/trt/loader.py`` 593-622; research/tensorrt_review.md item 6), the cache is saved
under an exclusive file lock, after re-reading what is on disk then and combining it into the
build's own cache with ``ITimingCache.combine``.

TensorRT is passed in (the build's ``IBuilderConfig`` creates the cache objects), so importing
this module needs no TensorRT.  Its TensorRT names are checked against ``tensorrt-stubs`` in
``tests/inference/trt_engine/test_trt_api_names.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from edge.inference.engine_cache import EngineCache, EngineKey

if TYPE_CHECKING:  # names for annotations only; the module is passed in at run time
    import tensorrt as trt  # noqa: F401

__all__ = ["TimingStore", "merge_timing_cache"]

log = logging.getLogger("edge.inference.tensorrt_build")   # the name users already filter on


class TimingStore:
    """The timing cache of one TensorRT version and GPU in an :class:`EngineCache`, with an
    exclusive lock (``flock`` on ``timing-<digest>.cache.lock``) for read-combine-write."""

    def __init__(self, cache: EngineCache, key: EngineKey):
        self.cache, self.key = cache, key

    def load(self) -> bytes:
        return self.cache.load_timing_cache(self.key)

    def save(self, blob: bytes) -> None:
        self.cache.save_timing_cache(self.key, blob)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        path = Path(str(self.cache.timing_cache_path(self.key)) + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)   # released when the file closes, or on exit
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def merge_timing_cache(config: "trt.IBuilderConfig", cache: "trt.ITimingCache", store) -> bytes:
    """Combine the on-disk timing cache into the build's ``cache`` and save the result, all
    under ``store.locked()``; return the saved bytes.

    A cache on disk that is unreadable, or from another device/version (``combine`` returns
    False with ``ignore_mismatch=False``), is replaced by the build's own, with a warning.
    """
    with store.locked():
        disk = store.load()
        if disk:
            other = None
            try:
                other = config.create_timing_cache(disk)
            except Exception as exc:  # a corrupt blob: RuntimeError/TypeError from the binding
                log.warning("timing cache on disk unreadable (%s); replacing it", exc)
            if other is not None and not cache.combine(other, False):
                log.warning("timing cache on disk was made on another device/version; "
                            "replacing it")
        blob = bytes(cache.serialize())
        store.save(blob)
    return blob
