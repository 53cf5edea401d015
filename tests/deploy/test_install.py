"""Install, switch, self-test gate, rollback, gc, per-unit data, power cuts.

Every test works on its own copy of a unit with release 1.0.0 installed and committed
(fixture ``root``); the release under test is 2.0.0 or a variant of it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from deploy.facts import load_facts
from deploy.install import INSTALL_STEPS, Unit, gc, install, rollback, service_start, status
from deploy.selftest import _files
from deploy_testlib import V1, V2, cli, tree_digest
from edge.errors import BundleError


@pytest.fixture
def facts(facts_file):
    return load_facts(facts_file)


def _install(root, artifact, facts, **kw):
    return install(Unit(root), artifact, trust=[], facts=facts, python=sys.executable, **kw)


def _unit_data(root: Path) -> dict[str, str]:
    unit = root / "unit"
    return {**tree_digest(unit / "calibration"), **tree_digest(unit / "identity.yaml")}


def _assert_runs(root: Path, version: str) -> None:
    """``current`` is ``version``, its files verify, and its venv runs hsi-edge."""
    unit = Unit(root)
    assert unit.link_target(unit.current) == version
    ok, reason = _files(root / "current")
    assert ok, reason
    import subprocess
    out = subprocess.run([str(root / "current" / "venv" / "bin" / "python"), "-m", "edge",
                          "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("hsi-edge "), out.stderr


def test_install_switches_keeps_previous_and_commits(root, artifact_v2, facts):
    before = _unit_data(root)
    out = _install(root, artifact_v2, facts)
    assert out.ok and out.line == f"{V2} installed, self-test passed, committed (previous: {V1})"
    st = status(Unit(root))
    assert (st["current"], st["previous"], st["security_version"]) == (V2, V1, 2)
    assert {r["version"]: r["state"] for r in st["releases"]} == {V1: "committed",
                                                                  V2: "committed"}
    _assert_runs(root, V2)
    reports = sorted((root / "unit" / "selftest").glob(f"*-{V2}.json"))
    assert reports and json.loads(reports[-1].read_text())["passed"] is True
    assert _unit_data(root) == before
    # the same release again is a no-op, a lower security version is refused now
    assert _install(root, artifact_v2, facts).line == f"{V2} is already installed and current"


def test_install_rollback_gc_keep_unit_data_byte_identical(root, make_artifact, artifact_v2,
                                                           facts):
    before = _unit_data(root)
    v3 = make_artifact("3.0.0", 2)
    assert _install(root, artifact_v2, facts).ok
    assert _install(root, v3, facts).ok
    out = rollback(Unit(root))
    assert out.line == f"rolled back: current {V2} (was 3.0.0)"
    _assert_runs(root, V2)
    assert gc(Unit(root)) == [V1]
    assert sorted(p.name for p in (root / "releases").iterdir()) == [V2, "3.0.0"]
    assert _unit_data(root) == before
    assert (root / "unit" / "trusted-keys" / "release.pub").exists()


def test_rollback_below_security_version_needs_force(root, make_artifact, artifact_v2, facts):
    assert _install(root, artifact_v2, facts).ok  # raises the unit to security version 2
    with pytest.raises(BundleError, match=rf"previous release {V1} has security_version 1 < "
                                          rf"this unit's 2; --allow-downgrade"):
        rollback(Unit(root))
    assert rollback(Unit(root), allow_downgrade=True).ok
    _assert_runs(root, V1)


def test_refusals_change_nothing(root, artifact_v1, make_artifact, facts, keys):
    snapshot = tree_digest(root / "releases"), os.readlink(root / "current")
    with pytest.raises(BundleError, match="security_version 0 is lower than this unit's 1"):
        _install(root, make_artifact("0.9.0", 0), facts)
    other = make_artifact("2.0.1", 2, key="other")
    with pytest.raises(BundleError, match="signature does not verify"):
        _install(root, other, facts)
    # a payload file altered after signing: found while staging, staging removed
    from test_artifact import flip, in_tar, rewrite
    bad = rewrite(make_artifact("2.0.2", 2), root.parent / "bad.mender", "data/0000.tar.gz",
                  in_tar("release.tar", in_tar("golden/golden.npz", flip, gz=False), gz=True))
    with pytest.raises(BundleError, match=r"release.tar: golden/golden.npz: size .* do not "
                                          r"match the release manifest"):
        _install(root, bad, facts)
    assert (tree_digest(root / "releases"), os.readlink(root / "current")) == snapshot
    assert not (root / "state" / "journal.json").exists()


def _bad_golden(tree: Path) -> None:
    with np.load(tree / "golden" / "golden.npz") as g:
        arrays = dict(g)
    arrays["map_sto2"] = arrays["map_sto2"] + np.float32(0.05)
    np.savez_compressed(tree / "golden" / "golden.npz", **arrays)


def _extra_device(tree: Path) -> None:
    st = json.loads((tree / "selftest.json").read_text())
    st["devices"].append({"name": "spare", "protocol": "hsi", "url": "/dev/hsi-no-such-port",
                          "required": True})
    (tree / "selftest.json").write_text(json.dumps(st))


@pytest.mark.parametrize("variant, reason", [
    ("golden", r"chain-numpy: map 'sto2': \d+ values outside rtol"),
    ("device", r"device-spare: .*hsi-no-such-port"),
    ("hang", r"hung: no result after 5 s"),
])
def test_failed_selftest_rolls_back_and_marks_bad(root, make_artifact, facts, monkeypatch,
                                                  variant, reason):
    mutate = {"golden": _bad_golden, "device": _extra_device, "hang": None}[variant]
    art = make_artifact(f"2.1.0-{variant}", 2, mutate=mutate)
    if variant == "hang":
        monkeypatch.setenv("HSI_EDGE_DEPLOY_FAULT", "hang:selftest-run")
    before = _unit_data(root)
    out = _install(root, art, facts, selftest_timeout=5 if variant == "hang" else None)
    assert not out.ok
    assert out.line.startswith(f"2.1.0-{variant} rolled back to {V1} and marked bad: "
                               f"self-test failed: ")
    import re
    assert re.search(reason, out.line), out.line
    _assert_runs(root, V1)
    st = status(Unit(root))
    assert st["security_version"] == 1  # not raised by a release that never committed
    assert {r["version"]: r["state"] for r in st["releases"]}[f"2.1.0-{variant}"] == "bad"
    monkeypatch.delenv("HSI_EDGE_DEPLOY_FAULT", raising=False)
    with pytest.raises(BundleError, match=rf"release 2.1.0-{variant} was marked bad on .*; it "
                                          rf"is not retried"):
        _install(root, art, facts)
    assert _unit_data(root) == before


def test_pending_release_rolls_back_after_n_failed_starts(root, artifact_v2, facts):
    out = _install(root, artifact_v2, facts, commit=False)
    assert out.line == f"{V2} installed and switched, pending its self-test (deploy commit)"
    unit = Unit(root)
    for n in range(3):  # the release's max_failed_starts
        assert service_start(unit) is None
        assert unit.state_of(V2)["starts"] == n + 1
    line = service_start(unit)
    assert line == f"{V2} rolled back to {V1} and marked bad: 3 starts without a commit " \
                   f"(crash loop)"
    _assert_runs(root, V1)


def test_cli_install_commit_status(root, artifact_v2, facts_file):
    r = cli("deploy", "install", str(artifact_v2), "--root", str(root), "--facts",
            str(facts_file), "--python", sys.executable, "--no-commit")
    assert r.returncode == 0, r.stderr
    s = cli("deploy", "status", "--root", str(root), "--json")
    st = json.loads(s.stdout)
    assert st["current"] == V2 and {r["version"]: r["state"] for r in st["releases"]}[V2] == \
        "pending"
    c = cli("deploy", "commit", "--root", str(root))
    assert c.returncode == 0 and c.stdout.strip().endswith("committed (previous: 1.0.0)"), \
        c.stdout + c.stderr
    txt = cli("deploy", "status", "--root", str(root)).stdout
    assert txt.splitlines()[0] == f"current: {V2}   previous: {V1}   security version: 2"


#: every journal step, plus a cut with some staged files written and one between the two
#: link renames of the switch
CUT_POINTS = list(INSTALL_STEPS) + ["stage-mid", "switch-mid"]


@pytest.mark.parametrize("point", CUT_POINTS)
def test_power_cut_at_every_step(root, artifact_v2, facts_file, point):
    before = _unit_data(root)
    r = cli("deploy", "install", str(artifact_v2), "--root", str(root), "--facts",
            str(facts_file), "--python", sys.executable,
            env={"HSI_EDGE_DEPLOY_FAULT": f"exit:{point}"})
    assert r.returncode == 97, (r.stdout, r.stderr)
    # the next call recovers: an interrupted commit finishes, anything else is undone
    st = status(Unit(root))  # what `deploy status` prints; recovers first like every command
    assert st["journal"] is None
    assert not list((root / "releases").glob("*.tmp"))
    assert not list((root / "releases").glob(".trash-*"))
    if point == "commit":
        assert (st["current"], st["previous"], st["security_version"]) == (V2, V1, 2)
        _assert_runs(root, V2)
    else:
        assert (st["current"], st["security_version"]) == (V1, 1)
        assert sorted(p.name for p in (root / "releases").iterdir()) == [V1]
        _assert_runs(root, V1)
    assert _unit_data(root) == before


@pytest.mark.slow
def test_full_wheelhouse_installs_offline_without_site_packages(tmp_path, spec, wheel, keys,
                                                                 facts, sims):
    """mode: full -- every runtime dependency downloaded for the target platform at build
    time (from pip's configured indexes), the unit's venv made with no site packages and no
    index: it must import everything it needs from the release's own wheelhouse."""
    import dataclasses

    from deploy.release import build_release
    from deploy.spec import VenvSpec, WheelhouseSpec
    from deploy_testlib import make_unit_data
    full = dataclasses.replace(spec, version="4.0.0-full",
                               wheelhouse=WheelhouseSpec(mode="full"),
                               venv=VenvSpec(system_site_packages=False))
    result = build_release(full, keys["ec"], tmp_path / "dist", wheel=wheel)
    names = {f["path"].split("/")[-1].split("-")[0].lower() for f in result.manifest["files"]
             if f["path"].startswith("wheelhouse/")}
    assert {"numpy", "onnxruntime", "pyyaml", "pyserial", "pillow", "tqdm"} <= names
    root = tmp_path / "root"
    make_unit_data(root / "unit", sims)
    out = install(Unit(root), result.artifact, trust=[str(keys["ec"].with_suffix(".pub"))],
                  facts=facts, python=sys.executable)
    assert out.ok, out.line
    cfg = (root / "current" / "venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    assert not list((root / "current" / "venv").glob("lib/python*/site-packages/*.pth"))


def test_one_deploy_command_at_a_time(root, artifact_v2, facts_file):
    with Unit(root).locked():
        r = cli("deploy", "install", str(artifact_v2), "--root", str(root), "--facts",
                str(facts_file), "--python", sys.executable)
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert "another hsi-edge deploy command is running" in r.stderr
        s = cli("deploy", "status", "--root", str(root), "--json")
        assert s.returncode == 0 and json.loads(s.stdout)["busy"] is True
    assert Unit(root).link_target(Unit(root).current) == V1


def test_install_over_a_pending_release_refused(root, artifact_v2, make_artifact, facts):
    assert _install(root, artifact_v2, facts, commit=False).ok
    with pytest.raises(BundleError, match=rf"release {V2} is pending \(installed, not yet "
                                          rf"committed\): deploy commit or deploy rollback"):
        _install(root, make_artifact("3.1.0", 2), facts)
    assert rollback(Unit(root), if_pending=True).line == f"rolled back: current {V1} (was {V2})"
    assert rollback(Unit(root), if_pending=True).line == \
        f"nothing to roll back: current {V1} is not pending"


def test_cli_recover_and_gc_lines(root, artifact_v2, facts_file):
    r = cli("deploy", "install", str(artifact_v2), "--root", str(root), "--facts",
            str(facts_file), "--python", sys.executable,
            env={"HSI_EDGE_DEPLOY_FAULT": "exit:switch-mid"})
    assert r.returncode == 97
    first = cli("deploy", "recover", "--root", str(root))
    assert first.returncode == 0
    assert first.stdout.strip() == (f"recovered: install of {V2} interrupted at step 'switch'; "
                                    f"{V1} is current, {V2} removed")
    assert cli("deploy", "recover", "--root", str(root)).stdout.strip() == "nothing to recover"
    assert cli("deploy", "gc", "--root", str(root)).stdout.strip() == "removed 0 release(s)"
    v = cli("deploy", "verify", str(artifact_v2), "--root", str(root), "--facts",
            str(facts_file))  # trusted keys and security version from the unit
    assert v.returncode == 0 and "OK: hsi-edge-cpu 2.0.0" in v.stdout, v.stderr


def test_power_cut_while_the_first_venv_is_built(tmp_path, artifact_v1, keys, facts_file, sims):
    """A fresh unit (no venv to share): a cut with the venv half made; the next install
    rebuilds it (a venv counts only once marked complete)."""
    from deploy_testlib import make_unit_data
    root = tmp_path / "fresh"
    make_unit_data(root / "unit", sims)
    args = ("deploy", "install", str(artifact_v1), "--root", str(root), "--facts",
            str(facts_file), "--python", sys.executable, "--trust",
            str(keys["ec"].with_suffix(".pub")))
    assert cli(*args, env={"HSI_EDGE_DEPLOY_FAULT": "exit:venv-mid"}).returncode == 97
    venvs = list((root / "venvs").iterdir())
    assert len(venvs) == 1 and not (venvs[0] / ".complete").exists()
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{V1} installed, self-test passed, committed (previous: -)"
    assert (venvs[0] / ".complete").exists()
    _assert_runs(root, V1)
