"""``hsi-edge selftest``: the unit health check (gates a release's commit) and the factory
end-of-line test.

Checks the installed release (``--release``, default ``$HSI_EDGE_ROOT/current`` or
``/opt/hsi-edge/current``) against this unit's data (``--unit-dir``): installed files, the
chain and the model on the golden fixtures, kernels, serial devices, calibration record,
disk space, clock (see ``deploy/selftest.py``).  Prints one line per check (PASS/FAIL/SKIP
and the reason), or JSON with ``--json``.  Exit status 0 only when every required check
passes, 1 otherwise.  ``--factory --report DIR`` writes ``DIR/<unit serial>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("selftest", help="unit health check / factory end-of-line test",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from deploy import default_root
    root = default_root()
    p.add_argument("--release", default=None,
                   help=f"installed release folder (default {root}/current)")
    p.add_argument("--unit-dir", default=None,
                   help="per-unit data (default $HSI_EDGE_UNIT_DIR, else the release "
                        "root's unit/ folder; /var/lib/hsi-edge on a unit)")
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    p.add_argument("--factory", action="store_true", help="factory end-of-line test: "
                   "write a report per unit (needs --report)")
    p.add_argument("--report", help="folder for the factory report")
    p.add_argument("--no-native", action="store_true", help="skip the native backend check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deploy import default_root, default_unit_dir, unit_dir_of
    from deploy.selftest import format_checks, passed, report, run_selftest
    from edge.errors import ConfigError

    release = Path(args.release) if args.release else Path(default_root()) / "current"
    if not (release / "manifest.json").exists():
        raise ConfigError(f"--release: {release} is not an installed hsi-edge release (no "
                          f"manifest.json); install one with hsi-edge deploy install")
    release = release.resolve()
    # the release is ROOT/releases/<version>
    unit_dir = unit_dir_of(release.parent.parent, args.unit_dir or default_unit_dir())
    if args.factory and not args.report:
        raise ConfigError("--factory: needs --report DIR (where the unit's report goes)")
    checks = run_selftest(release, unit_dir, native=not args.no_native)
    doc = report(checks, release, unit_dir)
    if args.report:
        out = Path(args.report)
        out.mkdir(parents=True, exist_ok=True)
        name = f"{doc['unit_serial'] or 'unknown-unit'}-{doc['time'].replace(':', '')}.json"
        (out / name).write_text(json.dumps(doc, indent=1) + "\n")
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(format_checks(checks))
    return 0 if passed(checks) else 1
