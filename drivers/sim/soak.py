"""Soak run: many driver transactions against the simulated controller with random faults.

Each transaction is a random application call (set intensity, switch a channel, re-read the
state, status, software trigger).  A fault is drawn per *call* from the soak's seeded RNG
(``SOAK_RATES``) and hits the call's first command; drawing per command, as ``FaultPlan``
rates do, made the fault count depend on how many commands the driver sent (retries after a
timeout depend on timing, and every driver change that adds a re-read changed it), so the
same seed gave different figures from run to run and release to release (866 then 1134
faults for seed 1).  Now the faults injected are a function of the seed alone; the outcome
split can still move by a few calls with timing (a retry that lands inside or after an
over-temperature hold), and the rate is the machine's.  After every call the driver's view is
compared with the simulator's true state.  Outcomes:

``clean``      no fault hit the call;
``recovered``  a fault hit it and the driver still returned the right result by itself
               (retry, re-read after a failed write, resync after a reset, reconnect);
``reported``   the driver raised a typed :class:`~edge.errors.DeviceError` within its deadline
               (over-temperature, interlock, ...); the application retried and succeeded;
``lost``       a wrong value or state was accepted, a call overran its deadline, or the
               application could not recover: must be 0.

Used by ``tests/drivers/serial/test_serial_soak.py``; the README quotes its figures.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import tempfile
import time

from drivers.illumination import HsiIllumination
from drivers.sim.controller import ControllerModel
from drivers.sim.faults import FaultPlan
from drivers.sim.server import DeviceServer
from drivers.trigger import HsiConnection, TriggerController
from edge.errors import DeviceError

__all__ = ["run_soak", "SOAK_RATES"]

log = logging.getLogger(__name__)

#: Per-call fault probabilities of the soak run (6.1 % of calls hit by a fault).
SOAK_RATES = {"delay": 0.008, "drop": 0.008, "garble": 0.008, "split": 0.008, "merge": 0.008,
              "noreply": 0.008, "busy": 0.008, "reset": 0.002, "disconnect": 0.001,
              "overtemp": 0.001, "interlock": 0.001}


def run_soak(transactions: int = 10_000, *, seed: int = 1, transport: str = "pty",
             rates: dict[str, float] | None = None, reply_timeout: float = 0.1) -> dict:
    """Run the soak and return its figures (see module docstring)."""
    rates = dict(SOAK_RATES if rates is None else rates)
    FaultPlan(rates=rates)  # validates the kinds and probabilities
    plan = FaultPlan(delay_s=0.15, disconnect_s=0.1, hold_s=0.1, seed=seed)
    # over a pty, a by-id style link in a private folder: a reconnect after a simulated
    # unplug never opens a bare /dev/pts/N that another program was given meanwhile
    tmp = tempfile.TemporaryDirectory(prefix="hsi-soak-")
    link = os.path.join(tmp.name, "usb-HSIEDGE_TIC-1_SN0001") if transport == "pty" else None
    server = DeviceServer(ControllerModel(), transport=transport, faults=plan, link=link).start()
    rng = random.Random(seed + 1)
    fault_rng = random.Random(seed)
    retries, reconnect_timeout = 2, 2.0
    # Worst case of one call: every attempt times out, then verify + resend, the fail-safe,
    # a reconnect and a few back-offs; plus 1 s of slack for a loaded machine.
    bound = reply_timeout * (4 * (retries + 1) + 2) + reconnect_timeout + 1.0
    out = collections.Counter()
    examples: dict[str, str] = {}
    worst = 0.0
    conn = HsiConnection(server.url, reply_timeout=reply_timeout, retries=retries,
                         reconnect_timeout=reconnect_timeout, watchdog_s=0)
    t_start = time.monotonic()
    try:
        conn.open()
        light, trig = HsiIllumination(conn), TriggerController(conn)
        trig.configure(source="software")
        n = len(conn.channels)
        for i in range(transactions):
            op = rng.choice(("intensity", "on", "state", "status", "fire"))
            ch, value = rng.randrange(n), rng.randrange(1001) / 1000
            on = rng.random() < 0.5
            kind = _draw(fault_rng, rates)
            before = sum(plan.injected.values())
            if kind is not None:
                plan.inject(kind)
            t0 = time.monotonic()
            error = _call(light, trig, op, ch, value, on)
            elapsed = time.monotonic() - t0
            plan.clear()  # a fault the call did not consume is not carried to the next
            worst = max(worst, elapsed)
            hit = sum(plan.injected.values()) > before
            if error is not None:
                out["reported"] += 1
                out[f"reported_{type(error).__name__}"] += 1
                examples.setdefault(type(error).__name__, f"{op}: {error}")
                if not _recover(light, trig, op, ch, value, on):
                    out["lost"] += 1
                    log.error("soak %d: %s could not be recovered: %s", i, op, error)
            elif hit:
                out["recovered"] += 1
            else:
                out["clean"] += 1
            if elapsed > bound:
                out["lost"] += 1
                log.error("soak %d: %s took %.2f s > bound %.2f s", i, op, elapsed, bound)
            mismatch = _mismatch(server, conn)
            if mismatch:
                out["lost"] += 1
                log.error("soak %d: after %s driver and device disagree: %s", i, op, mismatch)
    finally:
        seconds = time.monotonic() - t_start
        conn.close()
        server.stop()
        tmp.cleanup()
    return {"transactions": transactions, "seconds": round(seconds, 2),
            "transactions_per_s": round(transactions / seconds, 1),
            "faults_injected": sum(plan.injected.values()), "faults_by_kind": dict(plan.injected),
            "clean": out["clean"], "recovered": out["recovered"], "reported": out["reported"],
            "reported_by_type": {k[9:]: v for k, v in out.items() if k.startswith("reported_")},
            "reported_examples": examples, "lost": out["lost"], "worst_call_s": round(worst, 3), "bound_s": round(bound, 2),
            "driver_stats": dict(conn.stats)}


def _draw(rng: random.Random, rates: dict[str, float]) -> str | None:
    """The fault for the next call (None for none), one uniform draw per call."""
    x = rng.random()
    for kind, rate in rates.items():
        if x < rate:
            return kind
        x -= rate
    return None


def _call(light, trig, op, ch, value, on) -> DeviceError | None:
    try:
        if op == "intensity":
            light.set_intensity(ch, value)
        elif op == "on":
            light.set_on(ch, on)
        elif op == "state":
            light.state(refresh=True)
        elif op == "status":
            light.status()
        else:
            if not trig.is_armed:
                trig.arm()
            trig.trigger()
    except DeviceError as exc:
        return exc
    return None


def _recover(light, trig, op, ch, value, on) -> bool:
    """What an application does after a reported error: wait a little and try again."""
    for _ in range(40):
        time.sleep(0.02)
        if _call(light, trig, op, ch, value, on) is None:
            return True
    return False


def _mismatch(server, conn) -> str:
    with server.lock:
        m = server.model
        truth = (list(m.led_on), list(m.intensity), m.armed, m.counter)
    mine = (list(conn.led_on), list(conn.intensity), conn.armed, conn.counter)
    if mine[3] is None:
        mine, truth = mine[:3], truth[:3]
    return "" if mine == truth else f"driver {mine} != device {truth}"
