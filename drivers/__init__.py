"""Device drivers and simulators: cameras, trigger controller, illumination.

Drivers depend only on ``edge.core``/``edge.errors``/``edge.physics``; they never import the
pipeline.  Every device has a simulator so everything runs without hardware.

Serial devices (``drivers/PROTOCOL.md``)::

    trigger = drivers.open_trigger("/dev/serial/by-id/usb-HSIEDGE_TIC-1_SN0001")
    light = drivers.open_illumination("socket://127.0.0.1:5000", protocol="lumencor")
"""

from __future__ import annotations

__all__ = ["open_trigger", "open_illumination"]


def open_trigger(url: str, **options):
    """Open the trigger side of an hsi-edge controller.

    Parameters
    ----------
    url : str
        Anything ``serial.serial_for_url`` takes: a device path, ``/dev/serial/by-id/...``,
        ``socket://host:port``.
    **options
        Options of :class:`drivers.trigger.HsiConnection` (``crc``, ``watchdog_s``,
        ``heartbeat``, ``reply_timeout``, ``retries``, ``reconnect_timeout``, ``search``).

    Returns
    -------
    drivers.trigger.TriggerController
        Open, identity checked, LEDs off, disarmed.
    """
    from drivers.trigger import HsiConnection, TriggerController
    return TriggerController(HsiConnection(url, **options).open())


def open_illumination(url: str, protocol: str = "hsi", **options):
    """Open an illumination controller: ``protocol`` ``"hsi"`` (our controller) or
    ``"lumencor"`` (SPECTRA III / CELESTA text protocol).

    Returns
    -------
    drivers.illumination.Illumination
        Open, identity checked, every channel off.
    """
    if protocol == "hsi":
        from drivers.illumination import HsiIllumination
        from drivers.trigger import HsiConnection
        return HsiIllumination(HsiConnection(url, **options).open())
    if protocol == "lumencor":
        from drivers.lumencor import LumencorIllumination
        return LumencorIllumination(url, **options)
    from edge.errors import DeviceError
    raise DeviceError(f"protocol: expected 'hsi' or 'lumencor', got {protocol!r}")
