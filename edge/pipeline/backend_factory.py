"""Backend factory of the main job: ``auto`` resolution and the chain plan built once."""

from __future__ import annotations

import logging

import numpy as np

from edge.errors import BackendUnavailable, ConfigError
from edge.pipeline.config import AppConfig

__all__ = ["band_registration", "cuda_available", "make_backend", "quality_rules"]

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

    ``processing.quality`` (:func:`quality_rules`): ``null`` (default) or ``true`` -- the
    StO2 quality step, which every backend (numpy, native, cuda) runs; ``false`` -- off.
    ``processing.sto2_table`` chooses the StO2 table every backend applies
    (:meth:`~edge.processing.sto2.Sto2Calibration.select`).

    The configuration is built once as a :class:`~edge.processing.plan.ChainPlan` that the
    backend runs.  ``device_output`` asks a backend that offers it (cuda) to leave the packed
    input on the GPU -- pass it only for a runtime that ``accepts_device_input``;
    ``reflectance`` (cuda only) copies the reflectance back for the PNG overlay.
    """
    from edge.processing.plan import ChainPlan

    auto = name == "auto"
    if name == "auto":
        reason = cuda_available()
        name = "numpy" if reason else "cuda"
        log.info("backend auto: picked %s%s", name, f" ({reason})" if reason else "")
    registration = band_registration(camera, cfg)
    quality = quality_rules(camera, cfg)
    plan = ChainPlan.build(camera.wavelengths, flatfield=flatfield, pack=pack,
                           fwhm_nm=camera.fwhm_nm, chromophores=cfg.processing.chromophores,
                           baseline=cfg.processing.baseline, quality=quality,
                           registration=registration, sto2_table=cfg.processing.sto2_table)
    log.info("StO2 table: %s", plan.calibration.describe())
    if name == "cuda":
        from edge.backends.cuda import CudaBackend
        try:
            return CudaBackend(plan, device_output=device_output,
                               return_reflectance=reflectance)
        except BackendUnavailable as exc:
            if not auto:
                raise
            # PyCUDA imports but the kernels cannot be loaded (binaries newer than the
            # driver and no nvcc, a failed compile): auto falls back instead of crashing.
            log.warning("backend auto: cuda is not usable here (%s); using numpy", exc)
            return make_backend("numpy", camera, flatfield, pack, cfg,
                                device_output=device_output, reflectance=reflectance)
    if name == "native":
        from edge.backends.native import NativeBackend
        return NativeBackend(plan)
    from edge.backends.numpy_backend import NumpyBackend
    return NumpyBackend(plan)


def band_registration(camera, cfg: AppConfig):
    """The plan's :class:`~edge.processing.register.BandRegistration` or None.

    ``processing.register``: None registers when the camera (or the recording it replays)
    reports ``band_offsets``; True requires them; False never registers.

    Raises
    ------
    ConfigError
        ``register: true`` and the camera reports no band offsets.
    """
    from edge.processing.register import BandRegistration

    mode = cfg.processing.register
    offsets = getattr(camera, "band_offsets", None)
    if mode is False:
        return None
    if offsets is None:
        if mode:
            raise ConfigError(
                "processing.register: true needs the bands' mosaic offsets, and this camera "
                "reports none (a simulated snapshot camera, or a recording whose "
                "recording.json stores camera.band_offsets, does); set it to null or false")
        return None
    reg = BandRegistration.from_offsets(offsets, len(camera.wavelengths))
    log.info("band registration: %d bands resampled to one kernel (mosaic offsets up to "
             "%.2f px; noise variance x%.2f-%.2f)", reg.bands, float(np.abs(offsets).max()),
             float(reg.variance_gain.min()), float(reg.variance_gain.max()))
    return reg


def quality_rules(camera, cfg: AppConfig):
    """The plan's :class:`~edge.processing.quality.QualityRules` from ``processing``, or None.

    The noise model is ``processing.counts_per_electron``/``read_noise_counts`` when given,
    else the camera's own (``sensor_noise``: the simulated sensor), with the counts per
    electron times ``camera.gain``; without either, no ``sto2_sigma`` (logged once).  A band
    registration's noise gain is added by :meth:`ChainPlan.build`.
    """
    from edge.processing.quality import NoiseModel, QualityRules
    from edge.processing.temporal import TemporalParams

    pc = cfg.processing
    if pc.quality is False:
        return None
    own = camera.sensor_noise
    k, r = pc.counts_per_electron, pc.read_noise_counts
    noise, source, crosstalk = None, "processing.counts_per_electron/read_noise_counts", None
    if (k is None or r is None) and isinstance(own, dict):
        k = own["counts_per_electron"] if k is None else k
        r = own["read_noise_counts"] if r is None else r
        crosstalk = own.get("crosstalk")
        source = "camera sensor model"
    if k is not None and r is not None:
        noise = NoiseModel(k * cfg.camera.gain, r, source, crosstalk)
        log.info("StO2 sigma: noise model from the %s (%.4g counts/e- at gain %g, read noise "
                 "%.3g counts)", source, noise.counts_per_electron, cfg.camera.gain, r)
    else:
        log.warning("StO2 sigma: no sensor noise known (set processing.counts_per_electron and "
                    "processing.read_noise_counts); sto2_sigma is NaN and no pixel is flagged "
                    "'uncertain'")
    return QualityRules(noise=noise, max_sigma=pc.max_sigma,
                        min_blood_volume=pc.min_blood_volume,
                        specular_min_reflectance=pc.specular_min_reflectance,
                        spatial=pc.spatial, model_sigma=pc.model_sigma,
                        spatial_radius=pc.spatial_radius, spatial_h=pc.spatial_h,
                        temporal=TemporalParams(pc.temporal.method, pc.temporal.window,
                                                pc.temporal.gate))
