"""Clock state before and after every latency round, and the rule that voids a round.

A latency comparison is only as good as the clocks it ran under: on an AGX Orin the GPU ran
at 1.3 GHz with MAXN plus ``jetson_clocks``, 306 MHz with MAXN alone and 400 MHz at 15 W
(RidgeRun, ../shared/research/latency_preview.md A.1), and thermal management can override
the CPU frequency target.  The research note's rule (A.3 iii): void the run if clocks, the
nvpmodel mode or temperatures change during it.  Read here, where present:

* Linux cpufreq: every CPU's governor and its ``scaling_min_freq``/``scaling_max_freq``
  limits (``<root>/sys/devices/system/cpu/cpu*/cpufreq``);
* NVIDIA dGPU: ``nvidia-smi --query-gpu=clocks.sm,clocks.mem,clocks_throttle_reasons.active,
  temperature.gpu --format=csv,noheader`` when it is on PATH (it works on dGPU only, not on
  Jetson: research note A.1, TensorRT's measurement guide);
* Jetson: the power mode (``nvpmodel -q``) and the clock lock (``jetson_clocks --show``:
  locked when every MinFreq equals its MaxFreq);
* thermal zones: ``<root>/sys/class/thermal/thermal_zone*/{type,temp}`` (millidegrees C).

A round is **void** (:func:`void_reasons`) when between its start and its end a governor, a
cpufreq limit, the power mode, the clock lock or a GPU's active throttle reasons changed
(the "GPU idle" bit ``0x1`` is ignored: a GPU is idle between rounds), or a temperature (a
thermal zone or a GPU) rose by more than :data:`MAX_TEMP_RISE_C`.  The SM and memory clocks
are recorded but do not void a round by themselves: a boosting GPU moves them all the time,
and what pins them (lock, power mode, throttling) is checked.

**Once per round boundary.**  Each read runs up to three external commands, so the state read
at the end of a round is also the state at the start of the next one: a :class:`ClockWatch`
keeps the last end-of-round reading and hands it out as the start of the round whose index
follows (round ``i + 1`` after round ``i``); any other round (the first, one after a gap in the
indices, one after a round that failed) reads afresh.  A round runs between two readings
with nothing unread between them, so a change at any moment voids a round: during round
``i + 1``, or in the short gap before it (the start state is the one round ``i`` ended in,
so a change in the gap shows as a change during ``i + 1``; reading twice per boundary missed
such a change).  The indices are those of one run (``run_ab`` numbers A's and B's rounds in
one sequence), so one watch can serve both arms of an A/B run in one process: the sessions
made without a reader share the process's :func:`default_watch`.  A worker of another build
(:mod:`edge.latency.worker`) is another process with its own watch: it reads at the start
of its first round after an arm change, as the parent does at the end of its own.

**Stored compactly** (:func:`state_changes`, :func:`apply_changes`; used by
:meth:`edge.latency.records.FrameRecords.save`): a state is a JSON tree; its changes from
one state to the next are a list of ``[path, value]`` (a leaf set or changed: ``path`` is
the list of keys and list indices, e.g. ``[["thermal", "cpu-thermal"], 46.5]``) and
``[path]`` (a leaf gone), empty when nothing changed.

Every reader is injectable (a directory ``root`` and a command runner) so that tests feed
recorded outputs; a missing file or tool gives no entry, never an error.  With
``$HSI_EDGE_LATENCY_CLOCKS_ROOT`` set (:func:`default_reader`), the state is read from that
folder: its ``sys/`` tree, and the commands' recorded outputs as ``commands/<tool>.txt``
(``nvidia-smi.txt``, ``nvpmodel.txt``, ``jetson_clocks.txt``); the tests use it so that no test
depends on the real clocks of the machine it runs on (also in a worker subprocess).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["ClockReader", "ClockWatch", "void_reasons", "default_reader", "default_watch",
           "recorded_runner", "ROOT_ENV", "state_changes", "apply_changes",
           "parse_nvpmodel", "parse_jetson_clocks", "MAX_TEMP_RISE_C", "NVIDIA_SMI_QUERY",
           "GPU_IDLE_REASON", "run_command"]

log = logging.getLogger(__name__)

#: A round whose temperature (any thermal zone or GPU) rose by more than this many degrees C
#: is void: the unit was still warming up (a settled unit drifts by a few degrees over a
#: round of a few seconds; a CPU package sensor also jumps by some degrees with a load
#: spike), and the clocks it ran at are about to be throttled.  Warm the unit up (a first
#: ``latency run`` of a minute) before a gate.  Chosen here, not from a source.
MAX_TEMP_RISE_C = 10.0

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,"
                    "clocks_throttle_reasons.active,temperature.gpu", "--format=csv,noheader"]
#: nvidia-smi's "GPU idle" throttle reason: not a throttle of a busy GPU.
GPU_IDLE_REASON = 0x1

Runner = Callable[[Sequence[str]], "str | None"]
#: Environment variable: read the clock state from this folder instead of the machine.
ROOT_ENV = "HSI_EDGE_LATENCY_CLOCKS_ROOT"


def run_command(cmd: Sequence[str], timeout: float = 5.0) -> str | None:
    """stdout of ``cmd`` when it is on PATH and exits 0, else None."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def parse_nvpmodel(text: str | None) -> str | None:
    """The power mode's name from ``nvpmodel -q`` ("NV Power Mode: MAXN" -> "MAXN")."""
    if not text or not text.strip():
        return None
    m = re.search(r"NV Power Mode:\s*(.+)", text)
    return (m.group(1) if m else text.strip().splitlines()[0]).strip()


def parse_jetson_clocks(text: str | None) -> bool | None:
    """``jetson_clocks --show``: locked when every ``MinFreq`` equals its ``MaxFreq``."""
    if not text:
        return None
    lines = [ln for ln in text.splitlines() if "MinFreq" in ln]
    return bool(lines) and all(re.search(r"MinFreq=(\d+).*MaxFreq=(\1)\b", ln) is not None
                               for ln in lines)


def recorded_runner(folder: str | Path) -> Runner:
    """A runner that answers ``cmd`` with ``<folder>/<tool>.txt`` (None when absent)."""
    folder = Path(folder)

    def run(cmd: Sequence[str]) -> str | None:
        try:
            return (folder / f"{Path(cmd[0]).name}.txt").read_text()
        except OSError:
            return None
    return run


def default_reader() -> "ClockReader":
    """The machine's clocks, or the recorded ones under ``$HSI_EDGE_LATENCY_CLOCKS_ROOT``."""
    root = os.environ.get(ROOT_ENV)
    if root:
        return ClockReader(root, run=recorded_runner(Path(root) / "commands"))
    return ClockReader()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _number(text: str | None) -> float | None:
    m = re.search(r"-?\d+(\.\d+)?", text or "")
    return float(m.group(0)) if m else None


class ClockReader:
    """Reads the clock state (see the module docstring).

    Parameters
    ----------
    root : path-like
        Where ``sys/`` is found (``/`` on a unit; a folder of recorded files in tests).
    run : callable, optional
        ``run(cmd) -> stdout or None`` for nvidia-smi, nvpmodel and jetson_clocks (default
        :func:`run_command`; a test passes recorded outputs).
    """

    def __init__(self, root: str | Path = "/", run: Runner | None = None):
        self.root = Path(root)
        self.run = run or run_command

    def read(self) -> dict[str, Any]:
        """The state now: ``cpufreq``, ``gpus``, ``jetson_power_mode``,
        ``jetson_clocks_locked``, ``thermal`` (each present only where it can be read)."""
        state: dict[str, Any] = {}
        cpufreq = self._cpufreq()
        if cpufreq:
            state["cpufreq"] = cpufreq
        gpus = self._gpus()
        if gpus:
            state["gpus"] = gpus
        state.update(self._jetson())
        thermal = self._thermal()
        if thermal:
            state["thermal"] = thermal
        return state

    def _cpufreq(self) -> dict[str, dict[str, Any]]:
        out = {}
        base = self.root / "sys/devices/system/cpu"
        for d in sorted(base.glob("cpu[0-9]*/cpufreq"), key=lambda p: int(p.parent.name[3:])):
            entry = {"governor": _read(d / "scaling_governor"),
                     "min_khz": _number(_read(d / "scaling_min_freq")),
                     "max_khz": _number(_read(d / "scaling_max_freq"))}
            out[d.parent.name] = entry
        return out

    def _gpus(self) -> list[dict[str, Any]]:
        text = self.run(NVIDIA_SMI_QUERY)
        gpus = []
        for line in (text or "").splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 4:
                continue
            sm, mem, reasons, temp = parts
            try:
                active = int(reasons, 16)
            except ValueError:
                active = None
            gpus.append({"sm_mhz": _number(sm), "mem_mhz": _number(mem),
                         "throttle_reasons": active, "temp_c": _number(temp)})
        return gpus

    def _jetson(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        power = parse_nvpmodel(self.run(["nvpmodel", "-q"]))
        if power is not None:
            out["jetson_power_mode"] = power
        locked = parse_jetson_clocks(self.run(["jetson_clocks", "--show"]))
        if locked is not None:
            out["jetson_clocks_locked"] = locked
        return out

    def _thermal(self) -> dict[str, float]:
        out = {}
        base = self.root / "sys/class/thermal"
        for d in sorted(base.glob("thermal_zone*")):
            milli = _number(_read(d / "temp"))
            if milli is None:
                continue
            name = _read(d / "type") or d.name
            if name in out:
                name = f"{name}.{d.name}"
            out[name] = milli / 1000.0
        return out


class ClockWatch:
    """The clock state at round boundaries, read once per boundary (see the module docstring).

    Parameters
    ----------
    reader : ClockReader, optional
        What reads the state (default :func:`default_reader`).
    """

    def __init__(self, reader: ClockReader | None = None):
        self.reader = reader if reader is not None else default_reader()
        self._last: tuple[int, dict[str, Any]] | None = None    # (round index, state at its end)

    def start(self, index: int) -> dict[str, Any]:
        """The state at the start of round ``index``: the end state of round ``index - 1``
        when that was the last round this watch ended, else a fresh reading."""
        last, self._last = self._last, None       # a round that fails ends nothing
        if last is not None and last[0] == int(index) - 1:
            return last[1]
        return self.reader.read()

    def end(self, index: int) -> dict[str, Any]:
        """The state at the end of round ``index`` (read now; the start of round
        ``index + 1``)."""
        state = self.reader.read()
        self._last = (int(index), state)
        return state


_DEFAULT_WATCH: tuple[str, ClockWatch] | None = None


def default_watch() -> ClockWatch:
    """The process's watch over :func:`default_reader` (one per ``$HSI_EDGE_LATENCY_CLOCKS_ROOT``
    value: a new value, as in each test, gets a new watch)."""
    global _DEFAULT_WATCH
    key = os.environ.get(ROOT_ENV) or ""
    if _DEFAULT_WATCH is None or _DEFAULT_WATCH[0] != key:
        _DEFAULT_WATCH = (key, ClockWatch(default_reader()))
    return _DEFAULT_WATCH[1]


def _leaves(node: Any, path: tuple = ()) -> dict[tuple, Any]:
    """``{path: value}`` of every leaf (a scalar, or an empty dict or list)."""
    if isinstance(node, dict) and node:
        items = node.items()
    elif isinstance(node, list) and node:
        items = enumerate(node)
    else:
        return {path: node}
    out: dict[tuple, Any] = {}
    for k, v in items:
        out.update(_leaves(v, path + (k,)))
    return out


def _tree(leaves: dict[tuple, Any]) -> Any:
    """The inverse of :func:`_leaves` (a node whose keys are list indices is a list)."""
    if () in leaves:
        return leaves[()]
    groups: dict[Any, dict[tuple, Any]] = {}
    for path, v in leaves.items():
        groups.setdefault(path[0], {})[path[1:]] = v
    if all(isinstance(k, int) for k in groups):
        return [_tree(groups[k]) for k in sorted(groups)]
    return {k: _tree(g) for k, g in groups.items()}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b        # True is not 1, 1 is not 1.0


def state_changes(prev: dict[str, Any], new: dict[str, Any]) -> list[list]:
    """The changes from clock state ``prev`` to ``new``: ``[path, value]`` per leaf set or
    changed, ``[path]`` per leaf gone (paths as lists); empty when the states are equal.
    ``apply_changes(prev, state_changes(prev, new)) == new``."""
    a, b = _leaves(prev), _leaves(new)
    out: list[list] = [[list(p), v] for p, v in b.items() if p not in a or not _same(a[p], v)]
    out += [[list(p)] for p in a if p not in b]
    return out


def apply_changes(prev: dict[str, Any], changes: Sequence[Sequence]) -> dict[str, Any]:
    """``prev`` with :func:`state_changes`' ``changes`` applied (a new tree; ``prev`` itself
    when there are none)."""
    if not changes:
        return prev
    leaves = _leaves(prev)
    for change in changes:
        path = tuple(change[0])
        if len(change) > 1:
            leaves[path] = change[1]
        else:
            leaves.pop(path, None)
    tree = _tree(leaves) if leaves else {}
    return tree if isinstance(tree, dict) else {}


def void_reasons(before: dict[str, Any], after: dict[str, Any], *,
                 max_temp_rise_c: float = MAX_TEMP_RISE_C) -> list[str]:
    """Why a round with clock states ``before`` and ``after`` is void (empty: it is not).

    Returns
    -------
    list of str
        One readable change each, e.g. ``"cpu0 governor performance -> powersave"``.
    """
    out: list[str] = []
    cb, ca = before.get("cpufreq", {}), after.get("cpufreq", {})
    for cpu in sorted(set(cb) | set(ca), key=lambda c: (len(c), c)):
        x, y = cb.get(cpu, {}), ca.get(cpu, {})
        for key, what in (("governor", "governor"), ("min_khz", "cpufreq min kHz"),
                          ("max_khz", "cpufreq max kHz")):
            if x.get(key) != y.get(key):
                out.append(f"{cpu} {what} {_fmt(x.get(key))} -> {_fmt(y.get(key))}")
    for key, what in (("jetson_power_mode", "power mode (nvpmodel)"),
                      ("jetson_clocks_locked", "clock lock (jetson_clocks)")):
        if before.get(key) != after.get(key):
            out.append(f"{what} {_fmt(before.get(key))} -> {_fmt(after.get(key))}")
    gb, ga = before.get("gpus", []), after.get("gpus", [])
    if len(gb) != len(ga):
        out.append(f"GPUs seen by nvidia-smi {len(gb)} -> {len(ga)}")
    for i, (x, y) in enumerate(zip(gb, ga)):
        rx, ry = x.get("throttle_reasons"), y.get("throttle_reasons")
        if rx is not None and ry is not None:
            rx, ry = rx & ~GPU_IDLE_REASON, ry & ~GPU_IDLE_REASON
        if rx != ry:
            out.append(f"GPU {i} throttle reasons {_hex(rx)} -> {_hex(ry)}")
        rise = _rise(x.get("temp_c"), y.get("temp_c"))
        if rise is not None and rise > max_temp_rise_c:
            out.append(f"GPU {i} temperature {x['temp_c']:g} -> {y['temp_c']:g} C "
                       f"(+{rise:g} C > {max_temp_rise_c:g} C)")
    tb, ta = before.get("thermal", {}), after.get("thermal", {})
    for zone in sorted(set(tb) & set(ta)):
        rise = _rise(tb[zone], ta[zone])
        if rise is not None and rise > max_temp_rise_c:
            out.append(f"{zone} temperature {tb[zone]:g} -> {ta[zone]:g} C "
                       f"(+{rise:g} C > {max_temp_rise_c:g} C)")
    return out


def _rise(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def _fmt(v: Any) -> str:
    if v is None:
        return "unknown"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _hex(v: int | None) -> str:
    return "unknown" if v is None else f"{v:#x}"
