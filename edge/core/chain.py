"""The per-pixel chain's vocabulary: pixel flags, map names, the pack spec, the chain result.

Every layer speaks these words -- the processing reference (flat field, pack), the model card,
the backends and the pipeline -- so they live in core, below all of them (DESIGN.md,
"Layout and layering").  ``edge.backends.base`` re-exports them.

Pixel flags
-----------
Every backend returns a ``uint8`` flag map of shape (rows, cols); 0 means the pixel is valid,
otherwise the bits say why it is not (several may be set).  Float maps hold NaN where the flag
is non-zero.  In the network input, pixels whose reflectance is unusable (saturated,
under-exposed white, non-finite, bad pixel) hold 0 in every channel (the model sees "no
signal" and the overlay withholds them); pixels flagged only ``FLAG_UNMIX_INVALID`` (valid
reflectance without a haemoglobin signal, e.g. drapes and instruments, or a band at the
reflectance floor) keep their L1 spectra, and only their map channels are 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

if TYPE_CHECKING:
    from edge.core.tensor import DeviceTensor

__all__ = [
    "FLAG_SATURATED", "FLAG_UNDEREXPOSED", "FLAG_NONFINITE", "FLAG_BAD_PIXEL",
    "FLAG_UNMIX_INVALID", "FLAG_LOW_BLOOD", "FLAG_UNCERTAIN", "FLAG_SPECULAR", "FLAG_MAPS_ONLY",
    "FLAG_STO2_ONLY", "FLAG_NAMES", "MAP_NAMES", "QUALITY_MAP_NAMES", "PackSpec", "ChainResult",
    "chain_bytes",
]

FLAG_SATURATED = np.uint8(1)      #: a raw band reached the saturation level
FLAG_UNDEREXPOSED = np.uint8(2)   #: white reference too dark for a usable reflectance
FLAG_NONFINITE = np.uint8(4)      #: NaN/inf in the input or reference
FLAG_BAD_PIXEL = np.uint8(8)      #: dead/hot pixel from the calibration record
FLAG_UNMIX_INVALID = np.uint8(16)  #: haemoglobin total <= 0 or unmixing out of domain
FLAG_LOW_BLOOD = np.uint8(32)     #: THb below the limit: StO2 undefined (sto2 NaN only)
FLAG_UNCERTAIN = np.uint8(64)     #: StO2 standard error above the limit (sto2 NaN only)
FLAG_SPECULAR = np.uint8(128)     #: specular highlight (every map NaN, spectra kept)

#: Bits after which the reflectance is still usable: the network input keeps the pixel's
#: spectra and the class overlay keeps its class.
FLAG_MAPS_ONLY = np.uint8(FLAG_UNMIX_INVALID | FLAG_LOW_BLOOD | FLAG_UNCERTAIN | FLAG_SPECULAR)
#: Bits that invalidate only the ``sto2`` map (and its ``sto2_sigma``).
FLAG_STO2_ONLY = np.uint8(FLAG_LOW_BLOOD | FLAG_UNCERTAIN)

FLAG_NAMES = {int(FLAG_SATURATED): "saturated", int(FLAG_UNDEREXPOSED): "underexposed",
              int(FLAG_NONFINITE): "nonfinite", int(FLAG_BAD_PIXEL): "bad_pixel",
              int(FLAG_UNMIX_INVALID): "unmix_invalid", int(FLAG_LOW_BLOOD): "low_blood",
              int(FLAG_UNCERTAIN): "uncertain", int(FLAG_SPECULAR): "specular"}

#: Per-pixel maps every backend produces, in the order of the compiled kernels' ``maps``
#: output (``HsiMapId`` in cuda_kernels/common.cuh; the CPU tests compare the two).
MAP_NAMES = ("sto2", "thb", "sto2_index", "nir", "thi", "twi")
#: Maps added when the plan has quality rules (numpy and native backends, issue 14):
#: ``sto2_sigma`` -- per-pixel standard error of StO2 (fraction; NaN where ``sto2_all`` is);
#: ``sto2_all`` -- StO2 before the validity mask (NaN only where the unmixing failed), for
#: scoring the error on every pixel against the error on valid ones.
QUALITY_MAP_NAMES = ("sto2_sigma", "sto2_all")


@dataclass(frozen=True)
class PackSpec:
    """What goes into the network input, in channel order (from the model card).

    Attributes
    ----------
    spectra_bands : tuple of int
        Band indices of the L1-normalised reflectance channels (empty: none).
    maps : tuple of str
        Per-pixel maps appended after the spectra, e.g. ``("sto2", "thi")``.
    dtype : {"float32", "float16"}
        Element type of the packed input.
    """

    spectra_bands: tuple[int, ...] = ()
    maps: tuple[str, ...] = ()
    dtype: Literal["float32", "float16"] = "float32"

    @property
    def channels(self) -> int:
        return len(self.spectra_bands) + len(self.maps)


@dataclass
class ChainResult:
    """Output of one backend run.

    Attributes
    ----------
    maps : dict of str to ndarray of shape (rows, cols), float32
        ``sto2`` (calibrated, fraction), ``thb`` (total haemoglobin index, a.u.),
        ``sto2_index``, ``nir``, ``thi``, ``twi`` (TIVITA-style, fractions); NaN where invalid.
    flags : ndarray of shape (rows, cols), uint8
        Pixel flags (0 = valid), see the ``FLAG_*`` constants.
    input : ndarray or DeviceTensor of shape (1, channels, rows, cols), or None
        Packed network input (float32 or float16 per :class:`PackSpec`); None if no model.
        A host array, or -- from a GPU backend asked for device output -- a
        :class:`edge.core.tensor.DeviceTensor` naming the device buffer (valid until the
        backend's next run).
    reflectance : ndarray of shape (rows, cols, bands), float32, or None
        Calibrated reflectance (host copy; GPU backends fill it only on request).
    """

    maps: dict[str, np.ndarray]
    flags: np.ndarray
    input: Union[np.ndarray, "DeviceTensor", None] = None
    reflectance: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


def chain_bytes(shape: tuple[int, int, int], *, raw_itemsize: int = 2, flatfield: bool = True,
                pack: PackSpec | None = None, reflectance: bool = True, maps: int = 6) -> int:
    """Bytes the per-pixel chain must move at least: every input read once, every output
    written once (DESIGN.md, "Performance method"; the count of ``cuda_kernels/MEMORY.md``).

    Parameters
    ----------
    shape : (rows, cols, bands)
    raw_itemsize : int
        2 for uint16 raw counts, 4 for float32 reflectance recordings.
    flatfield : bool
        The float32 dark and scale references (8 bytes per element) and the static pixel
        flags (1 byte per pixel) are read.
    pack : PackSpec or None
        The packed network input is written.
    reflectance : bool
        The float32 reflectance cube is written (the NumPy backend always does).
    maps : int
        Float32 maps written per pixel (plus one uint8 flag).
    """
    rows, cols, bands = shape
    elements, pixels = rows * cols * bands, rows * cols
    # flat-field: float32 dark and scale per element, uint8 static flags per pixel
    moved = elements * raw_itemsize + (8 * elements + pixels if flatfield else 0)
    moved += 4 * elements if reflectance else 0
    moved += (4 * maps + 1) * pixels
    if pack is not None:
        moved += np.dtype(pack.dtype).itemsize * pack.channels * pixels
    return int(moved)
