"""``hsi-edge deploy``: build, verify, install, roll back and clean up releases.

A release is a signed Mender Artifact (module type ``hsi-edge``) written by the real
``mender-artifact`` tool; units verify it in Python.  See ``deploy/__init__.py`` for the
on-disk layout and the README section "Flashing and updating units".

  build RELEASE.yaml --key KEY --out DIR      write the artifact, print a one-line summary
  verify ARTIFACT --trust PUBKEY [--facts F]  signature, checksums, target, anti-downgrade
  install ARTIFACT --root DIR                 stage, venv, engine, switch, self-test, commit
                                              (or roll back and mark the release bad)
  commit --root DIR                           self-test gate of a pending release
  rollback --root DIR                         back to the previous release
  status --root DIR                           installed, current, pending, bad
  gc --root DIR                               remove releases other than current/previous
  recover --root DIR                          finish or undo an interrupted step
  service-start --root DIR                    ExecStartPre: counts starts of a pending
                                              release; rolls back after N failed starts
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register", "run"]

def register(sub) -> None:
    p = sub.add_parser("deploy", help="build, verify, install and roll back releases",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    acts = p.add_subparsers(dest="action", metavar="ACTION")

    b = acts.add_parser("build", help="build a signed release artifact")
    b.add_argument("release", help="release file (YAML), e.g. deploy/examples/cpu-unit.yaml")
    b.add_argument("--key", required=True, help="PEM private key (RSA or ECDSA P-256)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--wheel", help="use this hsi-edge wheel instead of building one")

    v = acts.add_parser("verify", help="verify an artifact against this unit")
    v.add_argument("artifact")
    _trust_args(v)
    v.add_argument("--unit-dir", help="unit data folder (stored security version; its "
                                      "trusted-keys/ when --trust is not given)")
    v.add_argument("--root", help="unit root (unit data in ROOT/unit)")
    v.add_argument("--json", action="store_true", help="print the inner manifest as JSON")

    i = acts.add_parser("install", help="install, self-test and commit (or roll back)")
    i.add_argument("artifact", help="a .mender file, or a Mender update module work folder "
                                    "(header/, files/; the Mender client verified it)")
    _root_args(i)
    _trust_args(i)
    i.add_argument("--python", help="interpreter the release venv is made from "
                                    "(default: /usr/bin/python3 when it exists, else this one)")
    i.add_argument("--no-commit", action="store_true",
                   help="stage and switch only; 'deploy commit' runs the self-test gate later "
                        "(the Mender update module's ArtifactInstall)")
    i.add_argument("--selftest-timeout", type=float, help="seconds (default: the release's)")

    for name, text in (("commit", "run the self-test gate of a pending release"),
                       ("rollback", "switch back to the previous release"),
                       ("status", "installed releases and their states"),
                       ("gc", "remove releases other than current and previous"),
                       ("recover", "finish or undo an interrupted step"),
                       ("service-start", "count a start of a pending release (systemd)")):
        a = acts.add_parser(name, help=text)
        _root_args(a)
        if name == "commit":
            a.add_argument("--selftest-timeout", type=float)
            a.add_argument("--version", help="fail unless this release is the pending one "
                                             "(the Mender module passes its artifact's)")
        if name == "rollback":
            a.add_argument("--allow-downgrade", action="store_true",
                           help="allow a previous release below the unit's security version")
            a.add_argument("--if-pending", action="store_true",
                           help="only when the current release is pending (Mender "
                                "ArtifactRollback)")
        if name == "status":
            a.add_argument("--json", action="store_true")
    p.set_defaults(func=run, action=None)


def _trust_args(p) -> None:
    p.add_argument("--trust", action="append", default=[], metavar="PUBKEY",
                   help="trusted public key (PEM) or folder of them; repeatable "
                        "(default for install: UNIT/trusted-keys)")
    p.add_argument("--facts", help="unit facts YAML instead of probing this machine")


def _root_args(p) -> None:
    from deploy import DEFAULT_ROOT, default_root, default_unit_dir
    p.add_argument("--root", default=default_root(),
                   help=f"install root (default $HSI_EDGE_ROOT or {DEFAULT_ROOT})")
    p.add_argument("--unit-dir", default=default_unit_dir(),
                   help="per-unit data folder (default $HSI_EDGE_UNIT_DIR, else ROOT/unit; "
                        "/var/lib/hsi-edge on a unit)")


def _facts(args):
    from deploy.facts import load_facts, read_unit_facts
    return load_facts(args.facts) if args.facts else read_unit_facts()


def run(args: argparse.Namespace) -> int:
    from edge.errors import ConfigError
    if args.action is None:
        raise ConfigError("deploy: expected an action: build, verify, install, commit, "
                          "rollback, status, gc, recover, service-start")
    return globals()[f"_{args.action.replace('-', '_')}"](args)


def _build(args) -> int:
    from deploy.release import build_release
    from deploy.spec import load_release_spec
    result = build_release(load_release_spec(args.release), args.key, args.out, wheel=args.wheel)
    print(result.summary())
    return 0


def _verify(args) -> int:
    from deploy import unit_dir_of
    from deploy.artifact import load_public_keys
    from deploy.verify import verify_artifact
    unit = unit_dir_of(args.root, args.unit_dir) if args.unit_dir or args.root else None
    trust = args.trust or ([unit / "trusted-keys"] if unit and (unit / "trusted-keys").is_dir()
                           else [])
    inner = verify_artifact(args.artifact, load_public_keys(trust), _facts(args), unit)
    if args.json:
        json.dump(inner, sys.stdout, indent=1)
        print()
    else:
        print(f"{args.artifact}: OK: {inner['name']} {inner['version']} (security version "
              f"{inner['security_version']}), {len(inner['files'])} files verified")
    return 0


def _unit(args):
    from deploy.install import Unit
    return Unit(args.root, unit_dir=args.unit_dir)


def _progress() -> None:
    """Install steps take minutes (venv, engine build): show their progress lines."""
    import logging
    logger = logging.getLogger("deploy")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def _install(args) -> int:
    from deploy.install import install
    _progress()
    unit = _unit(args)
    outcome = install(unit, args.artifact, trust=args.trust, facts=_facts(args),
                      python=args.python, commit=not args.no_commit,
                      selftest_timeout=args.selftest_timeout)
    print(outcome.line)
    return 0 if outcome.ok else 1


def _commit(args) -> int:
    from deploy.install import commit_pending
    _progress()
    outcome = commit_pending(_unit(args), selftest_timeout=args.selftest_timeout,
                             version=args.version)
    print(outcome.line)
    return 0 if outcome.ok else 1


def _rollback(args) -> int:
    from deploy.install import rollback
    print(rollback(_unit(args), allow_downgrade=args.allow_downgrade,
                   if_pending=args.if_pending).line)
    return 0


def _status(args) -> int:
    from deploy.install import status
    st = status(_unit(args))
    if args.json:
        json.dump(st, sys.stdout, indent=1)
        print()
        return 0
    print(f"current: {st['current'] or '-'}   previous: {st['previous'] or '-'}   "
          f"security version: {st['security_version']}")
    for r in st["releases"]:
        print(f"  {r['version']:<24} {r['state']:<10} {r.get('reason') or ''}".rstrip())
    if st["journal"]:
        print(f"{'in progress' if st['busy'] else 'interrupted'}: {st['journal']['op']} of "
              f"{st['journal'].get('version')} at step {st['journal'].get('step')!r}")
    return 0


def _gc(args) -> int:
    from deploy.install import gc
    removed = gc(_unit(args))
    print(f"removed {len(removed)} release(s){': ' + ', '.join(removed) if removed else ''}")
    return 0


def _recover(args) -> int:
    from deploy.install import recover
    unit = _unit(args)
    with unit.locked():
        print(recover(unit) or "nothing to recover")
    return 0


def _service_start(args) -> int:
    from deploy.install import service_start
    line = service_start(_unit(args))
    if line:
        print(line)
    return 0
