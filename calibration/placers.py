"""Who puts the targets in front of the camera during a field calibration.

:class:`ScriptedPlacer` is the simulated bench: it sets the simulated camera's target, tile
placement and LED state itself and lets device time pass at once (``advance_clock``).
:class:`InteractivePlacer` tells a person what to do and waits for Enter; with a simulated
camera it then also moves the simulated target, so the guided workflow can be rehearsed.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from drivers.camera import IlluminationInput, VirtualClock
from edge.errors import CalibrationError

__all__ = ["Placer", "ScriptedPlacer", "InteractivePlacer", "INSTRUCTIONS"]

log = logging.getLogger(__name__)

#: What a person is asked to do for each target.
INSTRUCTIONS: dict[str, str] = {
    "dark": "Cap the lens (no light may reach the sensor).",
    "white": "Uncap the lens; place the white tile so it fills the view at the clinical "
             "working distance, square to the camera.",
    "grey_tile": "Place the grey reference tile so it fills the view.",
    "colour_tile": "Place the colour reference tile so it fills the view.",
    "wavelength_std": "Place the wavelength standard (over the white tile) in the view.",
    "slanted_edge": "Place the slanted-edge target (edge about 5 degrees from vertical) in "
                    "the centre of the view, in focus.",
}


class Placer:
    """Puts targets in view, switches the light and waits (base: does nothing)."""

    def __init__(self, camera) -> None:
        self.camera = camera

    def place(self, target: str, placement: int = 0) -> None:
        """Put ``target`` in view (``placement`` > 0: lift and place the tile again)."""

    def lights(self, on: bool) -> None:
        """Switch the unit's illumination on or off (room lights stay as they are)."""

    def wait(self, seconds: float, why: str = "") -> None:
        """Let ``seconds`` pass (warm-up)."""
        time.sleep(seconds)

    # -- simulated camera --------------------------------------------------------------
    def _sim_place(self, target: str, placement: int) -> None:
        cam = self.camera
        if cam.target is not None:
            cam.target = target
            cam.placement = placement

    def _sim_lights(self, on: bool) -> bool:
        if isinstance(self.camera, IlluminationInput):
            self.camera.set_led_state({"white": 1.0} if on else {})
            return True
        return False


class ScriptedPlacer(Placer):
    """The simulated bench: the simulator places targets itself (non-interactive mode).

    Raises
    ------
    CalibrationError
        The camera cannot place targets by itself (not a simulated camera).
    """

    def __init__(self, camera) -> None:
        if camera.target is None:
            raise CalibrationError(
                f"--non-interactive: camera {camera.serial} cannot place "
                "calibration targets by itself; run the guided (interactive) workflow")
        super().__init__(camera)

    def place(self, target: str, placement: int = 0) -> None:
        log.info("bench: %s (placement %d)", target, placement)
        self._sim_place(target, placement)

    def lights(self, on: bool) -> None:
        self._sim_lights(on)

    def wait(self, seconds: float, why: str = "") -> None:
        if isinstance(self.camera, VirtualClock):
            self.camera.advance_clock(seconds)
        else:
            time.sleep(seconds)


class InteractivePlacer(Placer):
    """Asks a person (``ask`` shows a prompt and returns their answer; default ``input``)."""

    def __init__(self, camera, ask: Callable[[str], str] = input,
                 say: Callable[[str], None] = print) -> None:
        super().__init__(camera)
        self.ask, self.say = ask, say

    def place(self, target: str, placement: int = 0) -> None:
        text = INSTRUCTIONS.get(target, f"Place the {target}.")
        if placement:
            text = f"Lift the tile and place it again (placement {placement + 1}). " + text
        self.ask(f"{text} Press Enter when ready. ")
        self._sim_place(target, placement)

    def lights(self, on: bool) -> None:
        if not self._sim_lights(on):
            self.ask(f"Switch the unit's illumination {'on' if on else 'off'}; leave the room "
                     "lights as they are during surgery. Press Enter when ready. ")

    def wait(self, seconds: float, why: str = "") -> None:
        self.say(f"Waiting {seconds:.0f} s{': ' + why if why else ''} ...")
        if isinstance(self.camera, VirtualClock):  # a rehearsal on the simulator
            self.camera.advance_clock(seconds)
        else:
            time.sleep(seconds)
