"""The hsi-edge error tree (DESIGN.md, "Configuration and errors").

Every error a user can provoke is one of these.  The CLI prints ``str(error)`` as one line and
exits non-zero; ``--debug`` shows the traceback.  Messages name the parameter, show the bad
value and say what is allowed.
"""

from __future__ import annotations

__all__ = [
    "HsiEdgeError",
    "ConfigError",
    "DataFormatError",
    "DeviceError",
    "DeviceTimeout",
    "DeviceProtocolError",
    "DeviceFault",
    "CalibrationError",
    "BackendUnavailable",
    "EngineError",
    "BundleError",
]


class HsiEdgeError(Exception):
    """Base class of every error raised on purpose by hsi-edge."""


class ConfigError(HsiEdgeError, ValueError):
    """A configuration file or argument is invalid (file, key path, expected, got)."""


class DataFormatError(HsiEdgeError, ValueError):
    """A file or array does not have the expected format, shape, dtype or content."""


class DeviceError(HsiEdgeError):
    """A device (camera, trigger controller, light source) failed."""


class DeviceTimeout(DeviceError, TimeoutError):
    """A device did not answer or deliver within its deadline."""


class DeviceProtocolError(DeviceError):
    """A device answered something the protocol does not allow (bad CRC, terminator, echo)."""


class DeviceFault(DeviceError):
    """A device reported a fault (over-temperature, interlock, watchdog, error reply)."""


class CalibrationError(HsiEdgeError):
    """A calibration reference or record is missing, inconsistent or does not fit the data."""


class BackendUnavailable(HsiEdgeError, ImportError):
    """An optional backend or runtime is not installed or has no device; says what to install."""


class EngineError(HsiEdgeError):
    """An inference model or engine could not be loaded, built or run."""


class BundleError(HsiEdgeError):
    """A deploy bundle is incomplete, corrupt or does not match the unit."""
