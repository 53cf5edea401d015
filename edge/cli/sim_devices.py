"""``hsi-edge sim-devices``: run the controller and Lumencor simulators until Ctrl-C/SIGTERM.

Prints one line per simulator on stdout (``controller: /dev/pts/N``, ``lumencor:
/dev/pts/M``, or ``socket://127.0.0.1:PORT`` with ``--socket``) so scripts and other
programs can open them with the real drivers.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sim-devices", help="run simulated trigger controller and Lumencor light engine",
        description="Start the device simulators on pseudo-terminals (or TCP with --socket), "
                    "print their ports and serve until Ctrl-C or SIGTERM.")
    p.add_argument("--socket", action="store_true",
                   help="serve on socket://127.0.0.1:PORT instead of a pty")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help="fault injection, e.g. 'delay=0.01,drop=0.01,seed=3' "
                        "(kinds: delay drop garble split merge noreply reset disconnect "
                        "overtemp interlock busy; params delay_s disconnect_s hold_s "
                        "split_gap_s seed new_path)")
    p.add_argument("--serial", default="SN0001", help="controller serial number")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drivers.sim import FaultPlan, start_controller, start_lumencor

    transport = "socket" if args.socket else "pty"
    plan_ctl = FaultPlan.parse(args.faults)  # ConfigError -> one-line message, exit 2
    plan_lum = FaultPlan.parse(args.faults)
    servers = []
    try:
        servers.append(("controller", start_controller(transport=transport, faults=plan_ctl,
                                                       serial=args.serial)))
        servers.append(("lumencor", start_lumencor(transport=transport, faults=plan_lum)))
        for name, server in servers:
            print(f"{name}: {server.url}", flush=True)
        log.info("simulators running; Ctrl-C or SIGTERM stops them")
        while True:
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    finally:
        for _, server in servers:
            server.stop()
        sys.stdout.flush()
