"""The backend contract: one :class:`~edge.processing.plan.ChainPlan` run per frame.

A backend runs the per-pixel chain calibrate -> unmix -> indices -> pack of one plan (frame
shape, wavelengths, calibration reference, pack spec: built and checked once by
:meth:`ChainPlan.build`) once per frame; it must not allocate per frame where it can avoid it.
``numpy`` is the reference implementation; ``native`` (the fused chain compiled for the CPU)
and ``cuda`` (the same chain on an NVIDIA GPU) must match it within the tolerances stated in
their tests.

The chain's vocabulary -- pixel flags, map names, :class:`PackSpec`, :class:`ChainResult`,
:func:`chain_bytes` -- lives in :mod:`edge.core.chain` (every layer uses it) and is
re-exported here.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from edge.core.chain import (FLAG_BAD_PIXEL, FLAG_NAMES, FLAG_NONFINITE,  # noqa: F401
                             FLAG_SATURATED, FLAG_UNDEREXPOSED, FLAG_UNMIX_INVALID, MAP_NAMES,
                             ChainResult, PackSpec, chain_bytes)
from edge.errors import BackendUnavailable, ConfigError
from edge.processing.plan import ChainPlan

__all__ = [
    "FLAG_SATURATED", "FLAG_UNDEREXPOSED", "FLAG_NONFINITE", "FLAG_BAD_PIXEL",
    "FLAG_UNMIX_INVALID", "FLAG_NAMES", "MAP_NAMES", "PackSpec", "ChainResult", "Backend",
    "chain_bytes", "ChainPlan", "resolve_plan", "QUALITY_BACKENDS",
]

#: Backends that run a plan's quality rules (:mod:`edge.processing.quality`).
QUALITY_BACKENDS = ("numpy", "native", "cuda")


def resolve_plan(plan: Any, config: dict[str, Any], *, backend: str) -> ChainPlan:
    """The plan a backend runs: ``plan`` itself, or :meth:`ChainPlan.build` of wavelengths.

    Parameters
    ----------
    plan : ChainPlan or array_like (bands,)
        A built plan, or the wavelengths (nm) to build one from with ``config``.
    config : dict
        :meth:`ChainPlan.build` options (``flatfield``, ``pack``, ...); must be empty with a
        built plan (it already holds them).
    backend : str
        Backend name, for the message.
    """
    if isinstance(plan, ChainPlan):
        if config:
            raise ConfigError(f"{backend} backend: {', '.join(sorted(config))} given beside a "
                              f"ChainPlan, which already holds its configuration; pass either "
                              f"a plan or wavelengths with options")
    else:
        plan = ChainPlan.build(plan, **config)
    if plan.quality is not None and backend not in QUALITY_BACKENDS:
        # The StO2 sigma, validity bits and the 7x7 spatial step (issue 14) exist in the NumPy
        # reference and the native chain: the CUDA chain refuses them rather than differ.
        raise BackendUnavailable(
            f"{backend} backend: processing.quality (StO2 sigma, validity mask, spatial step) "
            f"is implemented only in the {' and '.join(QUALITY_BACKENDS)} backends; set "
            f"processing.backend: numpy, or processing.quality: false")
    return plan


class Backend(ABC):
    """A per-pixel chain implementation (numpy, native or cuda) running :attr:`plan`."""

    name: str = "abstract"
    #: True when ``run`` can leave the packed network input in device memory
    #: (``ChainResult.input`` an :class:`edge.core.tensor.DeviceTensor`) -- asked for only
    #: when the runtime that reads it accepts device input (the composition layer decides).
    offers_device_output: bool = False
    #: The configuration this backend runs.
    plan: ChainPlan

    @property
    def device_output(self) -> bool:
        """Whether ``run`` returns the packed input as a DeviceTensor (host array otherwise)."""
        return False

    # Views of the plan (what callers read of a backend's configuration).
    @property
    def wavelengths(self) -> np.ndarray:
        return self.plan.wavelengths

    @property
    def flatfield(self):
        return self.plan.flatfield

    @property
    def pack(self) -> PackSpec | None:
        return self.plan.pack

    @property
    def unmixer(self):
        return self.plan.unmixer

    @property
    def calibration(self):
        return self.plan.calibration

    @property
    def index_params(self):
        return self.plan.index_params

    @abstractmethod
    def run(self, raw: np.ndarray, *, exposure_us: float) -> ChainResult:
        """Process one cube.

        Parameters
        ----------
        raw : ndarray of shape (rows, cols, bands), uint16 or float32
            Raw counts, or float32 reflectance for already-calibrated recordings (checked by
            :meth:`ChainPlan.check_frame`).
        exposure_us : float
            Exposure of this frame (reflectance is exposure-normalised against the white:
            :meth:`ChainPlan.exposure_factor`).
        """

    #: The compiled kernels' frame checks (:meth:`ChainPlan.check_frame` ``compiled``).
    compiled_checks = False

    def checked_frame(self, raw: np.ndarray) -> tuple[np.ndarray, float | None]:
        """``raw`` through :meth:`ChainPlan.check_frame` and, with a registration in the plan
        (:mod:`edge.processing.register`), registered: counts with a flat field by
        :meth:`register_counts` (this backend's own pass), float32 reflectance by the plan's
        NumPy reference.  Returns the frame and the milliseconds of the check and the
        registration; None without a registration here (none in the plan, or the backend
        registers the counts later itself).  ``timings_ms["register"]`` reports it."""
        p = self.plan
        t0 = time.monotonic_ns()
        raw = p.check_frame(raw, compiled=self.compiled_checks)
        if p.registration is None:
            return raw, None
        if raw.dtype != np.float32 and p.flatfield is not None:
            registered = self.register_counts(raw)
            if registered is None:
                return raw, None
            raw = registered
        else:
            raw = p.register(raw)
        return raw, (time.monotonic_ns() - t0) / 1e6

    def register_counts(self, raw: np.ndarray) -> np.ndarray | None:
        """Checked counts registered by this backend (the plan's NumPy reference; native: its
        compiled pass), or None when it registers them later itself (cuda: on the device)."""
        return self.plan.register(raw)

    def close(self) -> None:
        """Release buffers (idempotent)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
