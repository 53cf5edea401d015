"""Light of the simulated camera: its LED channels, the halogen source and the silicon QE.

LED channels (:data:`LED_CHANNELS`) and their emission: ``"white"`` is a broadband
halogen-like source (Planck 3000 K, the default illumination); the others are Gaussian LEDs
with the listed centre/FWHM (typical catalogue values, not a specific product).
The emission is integrated over each camera band on a 1 nm grid
(:func:`edge.physics.band_integrate`), as the scene's reflectance is.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from edge.errors import ConfigError
from edge.physics import band_integrate

__all__ = ["LED_CHANNELS", "halogen_spectrum", "led_illumination", "quantum_efficiency"]

#: LED channel name -> (centre nm, FWHM nm); ``None`` marks the broadband halogen-like source.
LED_CHANNELS: dict[str, tuple[float, float] | None] = {
    "white": None,
    "blue": (470.0, 25.0),
    "green": (530.0, 35.0),
    "amber": (595.0, 18.0),
    "red": (660.0, 20.0),
    "nir740": (740.0, 30.0),
    "nir850": (850.0, 35.0),
    "nir940": (940.0, 40.0),
}

_HALOGEN_K = 3000.0
#: Silicon CMOS quantum efficiency, typical front-illuminated sensor (nm, fraction).
_QE_TABLE = np.array([[400, 0.40], [450, 0.55], [500, 0.65], [600, 0.75], [700, 0.70],
                      [800, 0.55], [900, 0.35], [1000, 0.12], [1100, 0.02]], dtype=np.float64)


def quantum_efficiency(wavelengths_nm: np.ndarray) -> np.ndarray:
    """Typical silicon QE (fraction) at the given wavelengths (linear interpolation)."""
    return np.interp(wavelengths_nm, _QE_TABLE[:, 0], _QE_TABLE[:, 1])


def halogen_spectrum(wavelengths_nm: np.ndarray, temperature_k: float = _HALOGEN_K) -> np.ndarray:
    """Relative spectral radiance of a black body (Planck), normalised to 1 at its maximum
    over ``wavelengths_nm``."""
    lam = np.asarray(wavelengths_nm, dtype=np.float64) * 1e-9
    c2 = 1.438776877e-2  # second radiation constant h·c/k, m·K
    b = lam ** -5 / np.expm1(c2 / (lam * temperature_k))
    return b / b.max()


def _fine_grid(wl: np.ndarray, fwhm: float) -> np.ndarray:
    return np.arange(np.floor(wl[0] - 3 * fwhm), np.ceil(wl[-1] + 3 * fwhm) + 0.5, 1.0)


def led_illumination(state: Mapping[str, float], wavelengths_nm: np.ndarray,
                     fwhm_nm: float) -> np.ndarray:
    """Illumination per camera band for an LED state.

    Parameters
    ----------
    state : mapping of str to float
        Channel name (see :data:`LED_CHANNELS`) -> intensity in [0, 1]; missing channels are off.
    wavelengths_nm : ndarray of shape (bands,)
        Band centres.
    fwhm_nm : float
        Camera band FWHM (the emission is integrated over each band).

    Returns
    -------
    ndarray of shape (bands,), float64
        Relative irradiance (1 = peak of the halogen source at full intensity).

    Raises
    ------
    ConfigError
        For an unknown channel or an intensity outside [0, 1].
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    fine = _fine_grid(wl, fwhm_nm)
    total = np.zeros(fine.size)
    for name, level in state.items():
        if name not in LED_CHANNELS:
            raise ConfigError(f"LED channel: unknown channel {name!r}; allowed: "
                              f"{', '.join(LED_CHANNELS)}")
        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) \
                or not (0.0 <= float(level) <= 1.0):
            raise ConfigError(f"LED intensity of {name!r}: expected 0-1, got {level!r}")
        spec = LED_CHANNELS[name]
        if spec is None:
            total += float(level) * halogen_spectrum(fine)
        else:
            centre, width = spec
            sigma = width / (2 * np.sqrt(2 * np.log(2)))
            total += float(level) * np.exp(-0.5 * ((fine - centre) / sigma) ** 2)
    return band_integrate(fine, total, wl, fwhm_nm)
