"""One worker pool shared by the NumPy simulators (scene rendering, sensor exposure).

NumPy releases the GIL inside its ufuncs, so row blocks of a scene or a sensor frame run in
parallel on the available cores.  Results never depend on the pool: each block's random
numbers are seeded by its position, not by the thread that computes it.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MAX_WORKERS", "worker_pool"]

#: Upper bound on the pool's threads (the sensor model exposes a frame in 4 row chunks).
MAX_WORKERS = 4

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def worker_pool() -> ThreadPoolExecutor:
    """The shared pool (created on first use): ``min(MAX_WORKERS, os.cpu_count())`` threads
    named ``sim-worker-N``.  Never shut it down; it lives as long as the process."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, os.cpu_count() or 1)),
                                       thread_name_prefix="sim-worker")
        return _POOL
