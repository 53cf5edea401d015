"""Soak run: many driver transactions against the simulated controller with random faults.

Each transaction is a random application call (set intensity, switch a channel, re-read the
state, status, software trigger).  After every call the driver's view is compared with the
simulator's true state.  Outcomes:

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
import random
import time

from drivers.illumination import HsiIllumination
from drivers.sim.controller import ControllerModel
from drivers.sim.faults import FaultPlan
from drivers.sim.server import DeviceServer
from drivers.trigger import HsiConnection, TriggerController
from edge.errors import DeviceError

__all__ = ["run_soak", "SOAK_RATES"]

log = logging.getLogger(__name__)

#: Per-command fault probabilities of the soak run (6.1 % of commands hit by a fault).
SOAK_RATES = {"delay": 0.008, "drop": 0.008, "garble": 0.008, "split": 0.008, "merge": 0.008,
              "noreply": 0.008, "busy": 0.008, "reset": 0.002, "disconnect": 0.001,
              "overtemp": 0.001, "interlock": 0.001}


def run_soak(transactions: int = 10_000, *, seed: int = 1, transport: str = "pty",
             rates: dict[str, float] | None = None, reply_timeout: float = 0.1) -> dict:
    """Run the soak and return its figures (see module docstring)."""
    plan = FaultPlan(rates=dict(SOAK_RATES if rates is None else rates), delay_s=0.15,
                     disconnect_s=0.1, hold_s=0.1, seed=seed)
    server = DeviceServer(ControllerModel(), transport=transport, faults=plan).start()
    rng = random.Random(seed + 1)
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
            before = sum(plan.injected.values())
            t0 = time.monotonic()
            error = _call(light, trig, op, ch, value, on)
            elapsed = time.monotonic() - t0
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
    return {"transactions": transactions, "seconds": round(seconds, 2),
            "transactions_per_s": round(transactions / seconds, 1),
            "faults_injected": sum(plan.injected.values()), "faults_by_kind": dict(plan.injected),
            "clean": out["clean"], "recovered": out["recovered"], "reported": out["reported"],
            "reported_by_type": {k[9:]: v for k, v in out.items() if k.startswith("reported_")},
            "reported_examples": examples, "lost": out["lost"], "worst_call_s": round(worst, 3), "bound_s": round(bound, 2),
            "driver_stats": dict(conn.stats)}


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
