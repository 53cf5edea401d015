"""hsi-edge: edge inference for surgical spectral cameras.

``import edge`` works without a GPU, PyCUDA or TensorRT; those are imported lazily by the
backends and runtimes that need them.
"""

from edge.errors import (  # noqa: F401  (re-exported)
    BackendUnavailable,
    BundleError,
    CalibrationError,
    ConfigError,
    DataFormatError,
    DeviceError,
    DeviceFault,
    DeviceProtocolError,
    DeviceTimeout,
    EngineError,
    HsiEdgeError,
)

__version__ = "0.1.0"
