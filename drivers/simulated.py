"""``SimulatedCamera``: a physically based spectral camera without hardware.

It renders a synthetic surgical scene (:mod:`drivers.sim.scene`) through the tissue model of
:mod:`edge.physics` and a sensor model (:mod:`drivers.sim.sensor`), and implements the
:class:`drivers.camera.Camera` contract in all three trigger modes::

    with SimulatedCamera("snapshot25", rows=64, cols=80, seed=1) as cam:
        cam.configure(exposure_us=8000, trigger_mode="software")
        cam.arm()
        frame = cam.grab(timeout=2.0)         # uint16 raw cube + meta + truth

Hooks for the trigger/illumination simulator
--------------------------------------------
``external_pulse(timestamp_ns=None)``
    One trigger edge.  In trigger mode ``"external"`` while armed it queues one exposure; every
    pulse takes a frame id, so a pulse the camera cannot take (queue full, or in realtime mode
    still busy with the previous exposure) shows as a gap in ``meta.frame_id``.
``set_led_state({channel: intensity})``
    The light state at the next exposures; channels are those of
    :data:`drivers.sim.light.LED_CHANNELS` (``white`` broadband halogen-like, ``blue`` 470 nm,
    ``green`` 530, ``amber`` 595, ``red`` 660, ``nir740``, ``nir850``, ``nir940``), intensities
    0-1, channels not named are off.  All off -> a dark frame.  Before any call the camera is
    lit by ``{"white": 1.0}``.

Calibration targets: ``camera.target = "white"`` fills the view with a 99 % white tile,
``"dark"`` caps the lens, ``"scene"`` (default) shows the scene; references are captured
through the normal ``read`` path.  The QA targets of :mod:`drivers.sim.targets` (certified
``grey_tile``, ``colour_tile``, ``wavelength_std``, ``slanted_edge``) fill the view the same
way; ``camera.placement = k`` re-places a tile (seeded small geometry change).  Faults with
magnitudes (:class:`drivers.sim.faults_optical.OpticalFaults`: wavelength shift, lamp dimming
and colour, warm-up drift, dirty tile, non-linearity, ambient light, hot pixels, defocus,
light leak) apply while ``camera.faults`` is set.

Ground truth in ``frame.truth``: ``classes`` (rows, cols) uint8 ids of
:data:`drivers.sim.scene.SCENE_CLASSES`, ``sto2`` and ``blood_volume`` float32 maps (NaN off
tissue), ``reflectance`` (rows, cols, bands) float32 noise-free reflectance, and ``dark`` /
``white`` float32 mean counts (rows, cols, bands) the sensor model implies for this exposure,
gain and illumination (white = 99 % tile).  ``dark``/``white`` are read-only arrays shared by
frames with the same settings.

Scene time is ``frame_id / fps`` (not wall-clock), so frames are a function of the seed and
frame id only.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Mapping, NamedTuple

import numpy as np

from drivers.camera import (Camera, CalibrationTarget, ExternalTrigger, IlluminationInput,
                            VirtualClock)
from drivers.sim import (LED_CHANNELS, SCENE_CLASSES, CameraPreset, SensorModel, SurgicalScene,
                         get_preset, get_species, led_illumination)
from drivers.sim.faults_optical import OpticalFaults
from drivers.sim.targets import TILE_TARGETS, render_target
from edge.core.frame import Frame, FrameMeta
from edge.errors import ConfigError, DeviceTimeout

__all__ = ["SimulatedCamera", "TARGETS", "WHITE_TILE_REFLECTANCE"]

log = logging.getLogger(__name__)

#: Values of :attr:`SimulatedCamera.target`.
TARGETS: tuple[str, ...] = ("scene", "white", "dark",
                             *(t for t in TILE_TARGETS if t != "white"))
#: Reflectance of the simulated white tile (Spectralon SRS-99, FACTS.md).
WHITE_TILE_REFLECTANCE = 0.99
#: Keyword arguments of :class:`drivers.sim.scene.SurgicalScene` that ``scene_options`` may set.
_SCENE_OPTIONS = ("species", "malperfused_patch", "breathing_amplitude_px",
                  "breathing_period_s", "malperfusion", "n")


class _Exposure(NamedTuple):
    """One exposure request: id, trigger time and the settings latched at the trigger."""

    frame_id: int
    timestamp_ns: int
    exposure_us: float
    gain: float
    led_state: dict
    light: np.ndarray


class SimulatedCamera(Camera, CalibrationTarget, ExternalTrigger, IlluminationInput,
                      VirtualClock):
    """Simulated spectral camera (see module docstring).

    Parameters
    ----------
    preset : str
        ``"tivita"``, ``"snapshot16"`` or ``"snapshot25"`` (:mod:`drivers.sim.presets`).
    rows, cols : int, optional
        Override the preset frame size.
    seed : int
        Scene layout, sensor fixed pattern and noise.
    fps : float, optional
        Frame rate (default: the preset's); paces free-run and realtime mode, sets scene time.
    realtime : bool
        Honour ``fps`` and exposure time (sleep); otherwise frames come as fast as possible.
    bit_depth : int, optional
        ADC bit depth (8, 10, 12, 14 or 16; default: the preset's).
    illumination : ndarray of shape (bands,) or mapping, optional
        Illumination per band, or an LED state mapping; default halogen-like white.
    fwhm_nm : float, optional
        Band FWHM (default: the preset's).
    max_queue : int
        Exposures buffered before pulses are dropped.
    serial : str, optional
        Serial number in ``meta.serials["camera"]``.
    scene_options : mapping, optional
        Passed to :class:`drivers.sim.scene.SurgicalScene`: ``species`` (tissue-optics preset name
        of :data:`drivers.sim.scene.SPECIES` or a :class:`drivers.sim.scene.Species`; default
        ``"pig"``, the reference optics), ``malperfused_patch`` (False: the same view without
        the patch), ``breathing_amplitude_px``, ``breathing_period_s``, ``malperfusion``,
        ``n``.  Names and the species are checked here; the values when the scene is built.
    **sensor_options
        Passed to :class:`drivers.sim.sensor.SensorModel` (``read_noise_e``, ``vignetting``, ...).
    """

    def __init__(self, preset: str = "tivita", *, rows: int | None = None,
                 cols: int | None = None, seed: int = 0, fps: float | None = None,
                 realtime: bool = False, bit_depth: int | None = None,
                 illumination: np.ndarray | Mapping[str, float] | None = None,
                 fwhm_nm: float | None = None, max_queue: int = 16, serial: str | None = None,
                 scene_options: Mapping[str, object] | None = None,
                 **sensor_options: float) -> None:
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ConfigError(f"max_queue: expected an integer >= 1, got {max_queue!r}")
        self.preset: CameraPreset = get_preset(preset, rows=rows, cols=cols, bit_depth=bit_depth,
                                               fps=fps, fwhm_nm=fwhm_nm)
        p = self.preset
        self.seed = int(seed)
        self.realtime = bool(realtime)
        self.max_queue = max_queue
        self._wavelengths = p.wavelength_array()
        self._shape = (p.rows, p.cols, p.bands)
        self._serial = serial or f"SIM-{p.name}-{self.seed:04d}"
        self._bit_depth = p.bit_depth
        self._fwhm_nm = p.fwhm_nm
        try:
            self._sensor = SensorModel.for_preset(p, seed=self.seed, **sensor_options)
        except TypeError as exc:
            raise ConfigError(f"sensor options: {exc}") from exc
        self._scene: SurgicalScene | None = None
        self._scene_options = dict(scene_options or {})
        unknown = sorted(set(self._scene_options) - set(_SCENE_OPTIONS))
        if unknown:
            raise ConfigError(f"scene_options: unknown option(s) {', '.join(unknown)}; allowed: "
                              f"{', '.join(_SCENE_OPTIONS)}")
        if "species" in self._scene_options:
            self._scene_options["species"] = get_species(self._scene_options["species"])
        self._target = "scene"
        self._faults: OpticalFaults | None = None
        self._ambient: np.ndarray | None = None
        self._placement = 0
        self._clock_offset_s = 0.0
        self.factory_revision = 0
        self._led_state: dict[str, float] = {"white": 1.0}
        self._light = self._sensor.illumination
        if isinstance(illumination, Mapping):
            self.set_led_state(illumination)
        elif illumination is not None:
            self.set_illumination(illumination)
        self._cond = threading.Condition()
        self._queue: collections.deque[_Exposure] = collections.deque()
        self._next_id = 0
        self._busy_until_ns = 0
        self._arm_ns = 0
        self._last_ready_ns = 0

    # -- simulator hooks -----------------------------------------------------------------
    @property
    def target(self) -> str:
        """What the camera looks at: ``"scene"``, ``"white"`` (99 % tile) or ``"dark"``."""
        return self._target

    @target.setter
    def target(self, value: str) -> None:
        if value not in TARGETS:
            raise ConfigError(f"target: expected one of {', '.join(TARGETS)}, got {value!r}")
        self._target = value

    @property
    def faults(self) -> OpticalFaults | None:
        """Injected optical/sensor faults (:class:`OpticalFaults`), or None (healthy)."""
        return self._faults

    @faults.setter
    def faults(self, value: OpticalFaults | None) -> None:
        if value is not None and not isinstance(value, OpticalFaults):
            raise ConfigError(f"faults: expected an OpticalFaults or None, got {value!r}")
        self._faults = value
        self._ambient = None if value is None else value.ambient_light(
            self._wavelengths, self._fwhm_nm, self._sensor.default_illumination())

    @property
    def placement(self) -> int:
        """How often the current tile was placed again (0: first placement)."""
        return self._placement

    @placement.setter
    def placement(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"placement: expected an integer >= 0, got {value!r}")
        self._placement = int(value)

    def advance_clock(self, seconds: float) -> None:
        """Let ``seconds`` of device time pass at once (warm-up drift of the faults follows
        frame id / fps + this offset; the scene is unaffected): a scripted bench waits so."""
        if not (isinstance(seconds, (int, float)) and 0 <= seconds < 1e7):
            raise ConfigError(f"seconds: expected a number in [0, 1e7), got {seconds!r}")
        self._clock_offset_s += float(seconds)

    @property
    def factory_calibration_hash(self) -> str:
        """sha256 of the camera's factory calibration (band centres, FWHM, serial, revision):
        what a real camera reads from its flash (XiLens ``sens_calib.dat``, IMEC XML)."""
        import hashlib
        text = (f"{self._serial}|{self._fwhm_nm!r}|{self.factory_revision}|"
                + ",".join(f"{w:.4f}" for w in self._wavelengths))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def led_state(self) -> dict[str, float]:
        """Current light state, channel -> intensity (copy)."""
        return dict(self._led_state)

    def set_led_state(self, state: Mapping[str, float]) -> None:
        """Set the LED intensities (0-1) for the following exposures; unnamed channels are off.

        Raises
        ------
        ConfigError
            For an unknown channel or an intensity outside 0-1 (lists the channels).
        """
        if not isinstance(state, Mapping):
            raise ConfigError(f"LED state: expected a mapping channel -> intensity, got {state!r}")
        self._light = led_illumination(state, self._wavelengths, self.preset.fwhm_nm)
        self._led_state = {name: float(state.get(name, 0.0)) for name in LED_CHANNELS}
        log.debug("camera %s: LED state %s", self._serial, self._led_state)

    def set_illumination(self, spectrum_per_band: np.ndarray | None) -> None:
        """Set the illumination per band directly (``None`` = default white; zeros = dark).

        ``meta.illumination`` then reports ``{"custom": 1.0}`` (or ``{"white": 1.0}``).
        """
        self._light = self._sensor.check_illumination(spectrum_per_band)
        self._led_state = {"white": 1.0} if spectrum_per_band is None else {"custom": 1.0}

    def external_pulse(self, timestamp_ns: int | None = None) -> bool:
        """One external trigger edge; returns True if it starts an exposure.

        Ignored (not counted) unless the camera is armed in trigger mode ``"external"``.
        """
        ts = time.monotonic_ns() if timestamp_ns is None else int(timestamp_ns)
        with self._cond:
            if not (self._armed and self._trigger_mode == "external"):
                log.debug("camera %s: pulse ignored (not armed for external trigger)",
                          self._serial)
                return False
            frame_id = self._next_id
            self._next_id += 1
            if len(self._queue) >= self.max_queue:
                # debug, not warning: one line per pulse flooded the run; the caller counts
                # the False returns (SimulatedBench reports them once), a frame-id gap shows it
                log.debug("camera %s: frame %d dropped (%d exposures queued)", self._serial,
                          frame_id, len(self._queue))
                return False
            if self.realtime and ts < self._busy_until_ns:
                log.debug("camera %s: frame %d dropped (pulse during exposure/readout)",
                          self._serial, frame_id)
                return False
            self._busy_until_ns = ts + self._frame_time_ns()
            self._queue.append(self._exposure(frame_id, ts))
            self._cond.notify_all()
            return True

    # -- Camera hooks --------------------------------------------------------------------
    def _frame_time_ns(self) -> int:
        return int(max(self._exposure_us * 1e3, 1e9 / self.preset.fps))

    def _do_arm(self) -> None:
        with self._cond:
            self._queue.clear()
            self._arm_ns = time.monotonic_ns()
            self._busy_until_ns = 0
            self._last_ready_ns = 0

    def _do_disarm(self) -> None:
        with self._cond:
            self._queue.clear()

    def _do_trigger(self) -> None:
        with self._cond:
            if len(self._queue) >= self.max_queue:
                log.warning("camera %s: software trigger dropped (%d exposures queued)",
                            self._serial, len(self._queue))
                self._next_id += 1
                return
            self._queue.append(self._exposure(self._next_id, time.monotonic_ns()))
            self._next_id += 1
            self._cond.notify_all()

    def _exposure(self, frame_id: int, ts: int) -> "_Exposure":
        # The light and settings are latched at the trigger, as on a real camera: an LED
        # sequence may change the state before the frame is read.
        return _Exposure(frame_id, ts, self._exposure_us, self._gain, dict(self._led_state),
                         self._light)

    def _do_read(self, deadline: float) -> Frame:
        if self._trigger_mode == "free_run":
            exp = self._next_free_run(deadline)
        else:
            exp = self._next_triggered(deadline)
        return self._render(exp)

    def _next_triggered(self, deadline: float) -> "_Exposure":
        with self._cond:
            while not self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    what = ("no trigger pulse received" if self._trigger_mode == "external"
                            else "no software trigger pending")
                    raise DeviceTimeout(f"camera {self._serial}: no frame before the read "
                                        f"timeout ({what})")
                self._cond.wait(left)
            exp = self._queue[0]
        frame_id, ts = exp.frame_id, exp.timestamp_ns
        if self.realtime:
            # Sleep without the lock so pulses from the controller thread are never blocked.
            ready = max(ts + int(self._exposure_us * 1e3),
                        self._last_ready_ns + int(1e9 / self.preset.fps))
            if not self._sleep_until(ready, deadline):
                raise DeviceTimeout(f"camera {self._serial}: exposure of frame {frame_id} "
                                    f"not finished before the read timeout")
            self._last_ready_ns = ready
        with self._cond:
            if self._queue and self._queue[0] is exp:
                self._queue.popleft()
        return exp

    def _next_free_run(self, deadline: float) -> "_Exposure":
        if not self.realtime:
            frame_id = self._next_id
            self._next_id += 1
            return self._exposure(frame_id, time.monotonic_ns())
        period = 1e9 / self.preset.fps
        # A reader that falls behind gets the latest exposure: skipped ones show as id gaps.
        k = max(self._next_id, int((time.monotonic_ns() - self._arm_ns) // period))
        due = self._arm_ns + int(k * period) + int(self._exposure_us * 1e3)
        if not self._sleep_until(due, deadline):
            raise DeviceTimeout(f"camera {self._serial}: next free-run frame due after the "
                                f"read timeout")
        self._next_id = k + 1
        return self._exposure(k, self._arm_ns + int(k * period))

    @staticmethod
    def _sleep_until(t_ns: int, deadline: float) -> bool:
        wait = (t_ns - time.monotonic_ns()) / 1e9
        if wait <= 0:
            return True
        if time.monotonic() + wait > deadline:
            time.sleep(max(0.0, deadline - time.monotonic()))
            return False
        time.sleep(wait)
        return True

    # -- rendering -----------------------------------------------------------------------
    def _render(self, exp: "_Exposure") -> Frame:
        p = self.preset
        rows, cols, bands = self._shape
        if self._target == "scene":
            if self._scene is None:
                log.info("camera %s: building the scene (%dx%d, %d bands)", self._serial, rows,
                         cols, bands)
                self._scene = SurgicalScene(self._wavelengths, rows, cols, fwhm_nm=p.fwhm_nm,
                                            seed=self.seed, pixel_mm=p.pixel_mm,
                                            **self._scene_options)
            sample = self._scene.render(exp.frame_id / p.fps)
            refl, classes = sample.reflectance, sample.classes
            sto2, blood = sample.sto2, sample.blood_volume
        else:
            faults = self._faults
            if self._target == "dark" or (self._target == "white" and faults is None
                                          and self._placement == 0):
                # "dark" renders reflectance 0: no light reaches the sensor, only dark signal.
                value = WHITE_TILE_REFLECTANCE if self._target == "white" else 0.0
                refl = np.full(self._shape, value, dtype=np.float32)
            else:
                refl = render_target(self._target, self._wavelengths, rows, cols, p.fwhm_nm,
                                     shift_map=None if faults is None
                                     else faults.shift_map(rows, cols),
                                     placement=self._placement, seed=self.seed)
                dirt = None if faults is None or self._target != "white" \
                    else faults.tile_map(rows, cols)
                if dirt is not None:
                    refl = (refl * dirt[:, :, None]).astype(np.float32)
            classes = np.zeros((rows, cols), dtype=np.uint8)
            sto2 = np.full((rows, cols), np.nan, dtype=np.float32)
            blood = sto2.copy()
        dark, _, white = self._sensor.response(exp.exposure_us, exp.gain, exp.light)
        faults = self._faults
        if faults is None:
            raw = self._sensor.expose(refl, exp.exposure_us, exp.gain, exp.frame_id, exp.light)
        else:
            light = faults.light(exp.light, self._wavelengths,
                                 exp.frame_id / p.fps + self._clock_offset_s)
            if self._ambient is not None and self._target != "dark":
                light = light + self._ambient  # room light reaches all but a capped lens
            raw = self._sensor.expose(faults.blur(refl), exp.exposure_us, exp.gain,
                                      exp.frame_id, light)
            raw = faults.apply_raw(raw, black_level=self._sensor.black_level,
                                   full_scale=self._sensor.full_scale,
                                   exposure_us=exp.exposure_us)
        meta = FrameMeta(frame_id=int(exp.frame_id), timestamp_ns=int(exp.timestamp_ns),
                         exposure_us=exp.exposure_us, gain=exp.gain,
                         illumination=exp.led_state, serials={"camera": self._serial},
                         bit_depth=self._bit_depth)
        truth = {"classes": classes, "sto2": sto2, "blood_volume": blood,
                 "reflectance": refl, "dark": dark, "white": white}
        return Frame(cube=raw, wavelengths=self._wavelengths, meta=meta, truth=truth)

    # -- info ----------------------------------------------------------------------------
    @property
    def sensor_noise(self) -> dict[str, float]:
        """Shot + read noise of the simulated sensor at gain 1: ``counts_per_electron``,
        ``read_noise_counts`` and the mosaic's corrected filter ``crosstalk`` (bands, bands)
        or None (the StO2 standard error's noise model, ``edge.processing.quality.NoiseModel``)."""
        xt = getattr(self._sensor, "crosstalk", None)
        return {"counts_per_electron": float(self._sensor.counts_per_e),
                "read_noise_counts": float(self._sensor.read_noise_counts),
                "crosstalk": None if xt is None else np.array(xt, dtype=np.float64)}

    @property
    def band_offsets(self) -> np.ndarray | None:
        """Mosaic positions of the bands (:func:`drivers.sim.mosaic.mosaic_offsets`), ndarray
        (bands, 2) float64 in spectral pixels, or None for a preset without a mosaic."""
        off = self._sensor._offsets
        return None if off is None else np.array(off, dtype=np.float64)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the ids in ``truth["classes"]``."""
        return SCENE_CLASSES

    def __repr__(self) -> str:
        r, c, b = self._shape
        return (f"SimulatedCamera(preset={self.preset.name!r}, {r}x{c}x{b}, "
                f"seed={self.seed}, serial={self._serial!r})")
