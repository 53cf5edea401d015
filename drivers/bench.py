"""``SimulatedBench``: simulated controller wired to a simulated camera, driven by real drivers.

The controller simulator runs on a pty (or ``socket://``); its trigger pulses call
``SimulatedCamera.external_pulse`` (one exposure per pulse; a pulse the camera cannot take
shows as a gap in frame ids) and its emitted LED state calls ``SimulatedCamera.set_led_state``
(all LEDs off -> a dark frame).  The real :class:`~drivers.trigger.TriggerController` and
:class:`~drivers.illumination.HsiIllumination` talk to it over the serial code path::

    with SimulatedBench(rows=48, cols=64) as bench:
        bench.illumination.set_state({"white": 1.0})
        bench.trigger.configure(source="software")
        bench.trigger.arm()
        bench.trigger.trigger()
        frame = bench.camera.read(timeout=2.0)
"""

from __future__ import annotations

import logging

from drivers.illumination import HsiIllumination
from drivers.sim.controller import ControllerModel
from drivers.sim.faults import FaultPlan
from drivers.sim.server import DeviceServer
from drivers.trigger import HsiConnection, TriggerController

__all__ = ["SimulatedBench"]

log = logging.getLogger(__name__)


class SimulatedBench:
    """Simulated camera + simulated controller + real serial drivers (a context manager).

    Parameters
    ----------
    camera : drivers.camera.Camera, optional
        A camera with ``external_pulse`` and ``set_led_state`` hooks; default a
        ``SimulatedCamera(preset, rows=rows, cols=cols, seed=seed)``.
    transport : {"pty", "socket"}
        How the driver reaches the controller simulator.
    faults : FaultPlan, optional
        Faults injected by the controller simulator.
    **driver_options
        Options of :class:`~drivers.trigger.HsiConnection` (e.g. ``watchdog_s``).

    Attributes
    ----------
    camera, trigger, illumination, server
        Available between :meth:`start` and :meth:`close`.
    """

    def __init__(self, camera=None, *, preset: str = "tivita", rows: int | None = 48,
                 cols: int | None = 64, seed: int = 0, transport: str = "pty",
                 faults: FaultPlan | None = None, **driver_options) -> None:
        if camera is None:
            from drivers.simulated import SimulatedCamera
            camera = SimulatedCamera(preset, rows=rows, cols=cols, seed=seed)
        self.camera = camera
        self._transport = transport
        self._faults = faults
        self._driver_options = driver_options
        self.server: DeviceServer | None = None
        self.trigger: TriggerController | None = None
        self.illumination: HsiIllumination | None = None

    def _on_trigger(self, timestamp_ns: int) -> None:
        self.camera.external_pulse(timestamp_ns)

    def _on_led_change(self, state: dict) -> None:
        self.camera.set_led_state(state)

    def start(self) -> "SimulatedBench":
        """Start the simulator, arm the camera for external triggers, open the drivers."""
        model = ControllerModel(on_trigger=self._on_trigger, on_led_change=self._on_led_change)
        self.server = DeviceServer(model, transport=self._transport, faults=self._faults).start()
        try:
            self.camera.open()
            self.camera.configure(trigger_mode="external")
            self.camera.arm()
            conn = HsiConnection(self.server.url, **self._driver_options).open()
            self.trigger = TriggerController(conn)
            self.illumination = HsiIllumination(conn)
        except BaseException:
            self.close()
            raise
        log.info("simulated bench: controller on %s, camera %s", self.server.url,
                 self.camera.serial)
        return self

    def close(self) -> None:
        """LEDs off, drivers closed, simulator stopped, camera closed (idempotent)."""
        if self.trigger is not None:
            self.trigger.close()
            self.trigger = self.illumination = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.camera.close()

    def __enter__(self) -> "SimulatedBench":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
