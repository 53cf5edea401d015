"""``SimulatedBench``: simulated controller wired to a simulated camera, driven by real drivers.

The controller simulator runs on a pty (or ``socket://``); its trigger pulses call the
camera's ``external_pulse`` (:class:`~drivers.camera.ExternalTrigger`: one exposure per pulse;
a pulse the camera cannot take shows as a gap in frame ids, and the bench counts them and
reports them once, at :meth:`SimulatedBench.close`) and its emitted LED state calls the
camera's ``set_led_state`` (:class:`~drivers.camera.IlluminationInput`: all LEDs off -> a dark
frame).  The real :class:`~drivers.trigger.TriggerController` and
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

from drivers.camera import ExternalTrigger, IlluminationInput
from drivers.illumination import HsiIllumination
from drivers.sim.controller import ControllerModel
from drivers.sim.faults import FaultPlan
from drivers.sim.server import DeviceServer
from drivers.trigger import HsiConnection, TriggerController
from edge.errors import DeviceError

__all__ = ["SimulatedBench"]

log = logging.getLogger(__name__)


class SimulatedBench:
    """Simulated camera + simulated controller + real serial drivers (a context manager).

    Parameters
    ----------
    camera : drivers.camera.Camera, optional
        A camera that is an :class:`~drivers.camera.ExternalTrigger` and an
        :class:`~drivers.camera.IlluminationInput`; default a
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
    pulses, missed_pulses : int
        Trigger pulses delivered to the camera, and those it could not take (queue full or
        still exposing); reported once at :meth:`close`, never one line per pulse.

    Raises
    ------
    DeviceError
        If ``camera`` cannot take trigger edges or a light state.
    """

    def __init__(self, camera=None, *, preset: str = "tivita", rows: int | None = 48,
                 cols: int | None = 64, seed: int = 0, transport: str = "pty",
                 faults: FaultPlan | None = None, **driver_options) -> None:
        if camera is None:
            from drivers.simulated import SimulatedCamera
            camera = SimulatedCamera(preset, rows=rows, cols=cols, seed=seed)
        if not (isinstance(camera, ExternalTrigger) and isinstance(camera, IlluminationInput)):
            raise DeviceError(f"camera: the simulated bench needs a camera that takes trigger "
                              f"edges and a light state (ExternalTrigger, IlluminationInput), "
                              f"got {type(camera).__name__}")
        self.camera = camera
        self.pulses = self.missed_pulses = 0
        self._transport = transport
        self._faults = faults
        self._driver_options = driver_options
        self.server: DeviceServer | None = None
        self.trigger: TriggerController | None = None
        self.illumination: HsiIllumination | None = None

    def _on_trigger(self, timestamp_ns: int) -> None:
        if not (self.camera.is_armed and self.camera.trigger_mode == "external"):
            return  # not counted: the camera is not taking pulses (e.g. reference capture)
        self.pulses += 1
        if not self.camera.external_pulse(timestamp_ns):
            self.missed_pulses += 1

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
        """LEDs off, drivers closed, simulator stopped, camera closed (idempotent); one
        warning if the camera missed trigger pulses."""
        if self.trigger is not None:
            self.trigger.close()
            self.trigger = self.illumination = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.camera.close()
        if self.missed_pulses:
            log.warning("simulated bench: the camera missed %d of %d trigger pulses (queue full "
                        "or still exposing; each shows as a frame-id gap)", self.missed_pulses,
                        self.pulses)
            self.pulses = self.missed_pulses = 0

    def __enter__(self) -> "SimulatedBench":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
