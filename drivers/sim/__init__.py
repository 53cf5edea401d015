"""Device simulators behind a real pty or ``socket://``, with fault injection.

- :class:`~drivers.sim.controller.ControllerModel`: the hsi-edge trigger/illumination
  controller (``drivers/PROTOCOL.md``).
- :class:`~drivers.sim.lumencor.LumencorModel`: a Lumencor SPECTRA III / CELESTA-style engine.
- :class:`~drivers.sim.server.DeviceServer`: serves a model over a pty or TCP in a thread.
- :class:`~drivers.sim.faults.FaultPlan`: what to inject (delay, drop, garble, split, merge,
  noreply, reset, disconnect, overtemp, interlock, busy).

Quick use::

    from drivers.sim import start_controller
    with start_controller() as server:
        with drivers.open_illumination(server.url) as light: ...
"""

from __future__ import annotations

from drivers.sim.controller import DEFAULT_CHANNELS, ControllerModel
from drivers.sim.faults import FAULT_KINDS, FaultPlan
from drivers.sim.lumencor import LUMENCOR_CHANNELS, LumencorModel
from drivers.sim.server import DeviceServer

__all__ = ["ControllerModel", "LumencorModel", "DeviceServer", "FaultPlan", "FAULT_KINDS",
           "DEFAULT_CHANNELS", "LUMENCOR_CHANNELS", "start_controller", "start_lumencor"]


def start_controller(*, transport: str = "pty", faults: FaultPlan | None = None,
                     link: str | None = None, **model_options) -> DeviceServer:
    """Start a simulated controller; returns the running :class:`DeviceServer`."""
    return DeviceServer(ControllerModel(**model_options), transport=transport, faults=faults,
                        link=link).start()


def start_lumencor(*, transport: str = "pty", faults: FaultPlan | None = None,
                   link: str | None = None, **model_options) -> DeviceServer:
    """Start a simulated Lumencor light engine; returns the running :class:`DeviceServer`."""
    return DeviceServer(LumencorModel(**model_options), transport=transport, faults=faults,
                        link=link).start()
