"""Backend factory of the main job: ``auto`` resolution and the chain plan built once."""

from __future__ import annotations

import logging

from edge.errors import BackendUnavailable
from edge.pipeline.config import AppConfig

__all__ = ["cuda_available", "make_backend"]

log = logging.getLogger(__name__)


def cuda_available() -> str | None:
    """None when the CUDA backend can run here, otherwise the reason it cannot."""
    from edge.backends.cuda import import_pycuda  # imports PyCUDA only inside the call
    try:
        import_pycuda()
    except BackendUnavailable as exc:
        return str(exc)
    return None


def make_backend(name: str, camera, flatfield, pack, cfg: AppConfig, *,
                 device_output: bool = False, reflectance: bool = True):
    """Create the per-pixel backend; ``auto`` picks cuda when usable, else numpy (logged).

    The configuration is built once as a :class:`~edge.processing.plan.ChainPlan` that the
    backend runs.  ``device_output`` asks a backend that offers it (cuda) to leave the packed
    input on the GPU -- pass it only for a runtime that ``accepts_device_input``;
    ``reflectance`` (cuda only) copies the reflectance back for the PNG overlay.
    """
    from edge.processing.plan import ChainPlan

    if name == "auto":
        reason = cuda_available()
        name = "numpy" if reason else "cuda"
        log.info("backend auto: picked %s%s", name, f" ({reason})" if reason else "")
    plan = ChainPlan.build(camera.wavelengths, flatfield=flatfield, pack=pack,
                           fwhm_nm=camera.fwhm_nm, chromophores=cfg.processing.chromophores,
                           baseline=cfg.processing.baseline)
    if name == "cuda":
        from edge.backends.cuda import CudaBackend
        return CudaBackend(plan, device_output=device_output, return_reflectance=reflectance)
    if name == "native":
        from edge.backends.native import NativeBackend
        return NativeBackend(plan)
    from edge.backends.numpy_backend import NumpyBackend
    return NumpyBackend(plan)
