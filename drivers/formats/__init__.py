"""Readers and writers of spectral cube files used by replay and recording.

- :mod:`drivers.formats.tivita`: TIVITA ``*_SpecCube.dat`` (big-endian float32 reflectance).
- :mod:`drivers.formats.envi`: ENVI ``.hdr`` + binary (bsq/bil/bip).
- :mod:`drivers.formats.npyseq`: NPZ frame directories and ``.npy`` stacks.

Every reader returns cubes as ``(rows, cols, bands)`` with the band axis last (DESIGN.md,
"Data conventions"); every writer is the exact inverse of its reader and writes atomically.
"""

from drivers.formats.envi import read_envi, read_envi_header, write_envi  # noqa: F401
from drivers.formats.npyseq import (  # noqa: F401
    read_npy_stack, read_npz_frame, write_npz_frame,
)
from drivers.formats.tivita import (  # noqa: F401
    TIVITA_SHAPE, read_tivita_cube, tivita_wavelengths, write_tivita_cube,
)
