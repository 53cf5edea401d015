"""The real Mender client (mender-client 3.4, standalone mode) installs, commits and rolls
back our artifacts through deploy/mender/hsi-edge.

Mender 3.4 takes --config, --fallback-config and --data for temporary paths but reads update
modules only from /usr/share/mender/modules/v3 and the artifact name from /etc/mender: each
mender call runs in its own mount namespace (``unshare -m``) with those two folders
bind-mounted from the test's temporary folder, so the host's are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.install import Unit, status
from deploy_testlib import V1, V2, ROOT

MODULES = "/usr/share/mender/modules/v3"


def _skip_reason() -> str | None:
    if shutil.which("mender") is None:
        return "mender-client is not installed (Debian package mender-client; .ci/run installs it)"
    if os.geteuid() != 0:
        return "needs root for a private mount namespace (unshare -m, mount --bind)"
    if not Path(MODULES).is_dir() or not Path("/etc/mender").is_dir():
        return f"{MODULES} or /etc/mender missing (mender-client packaging differs)"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /tmp /tmp"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"mount namespaces are not allowed here: {probe.stderr.strip()[:120]}"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture
def mender(tmp_path, root, keys):
    """``mender(*args)`` -> CompletedProcess of the client confined to ``tmp_path``."""
    etc, mods, data = tmp_path / "etc-mender", tmp_path / "modules", tmp_path / "data"
    for d in (etc, mods, data):
        d.mkdir()
    (etc / "artifact_info").write_text("artifact_name=factory-image\n")
    shutil.copy(ROOT / "deploy" / "mender" / "hsi-edge", mods / "hsi-edge")
    os.chmod(mods / "hsi-edge", 0o755)
    (tmp_path / "mender.conf").write_text(json.dumps(
        {"ArtifactVerifyKey": str(keys["ec"].with_suffix(".pub")), "ServerURL": ""}))
    (tmp_path / "fallback.conf").write_text("{}")
    (data / "device_type").write_text("device_type=hsi-edge-x86_64\n")
    facts = tmp_path / "facts.yaml"
    facts.write_text("arch: x86_64\ndevice_type: hsi-edge-x86_64\n")
    env = {**os.environ, "HSI_EDGE_ROOT": str(root), "HSI_EDGE_UNIT_DIR": str(root / "unit"),
           "HSI_EDGE_PYTHON": sys.executable, "HSI_EDGE_VENV_PYTHON": sys.executable,
           "HSI_EDGE_FACTS": str(facts), "HSI_EDGE_DEPLOY_CONF": str(tmp_path / "none.conf")}

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = ["mender", "--no-syslog", "--config", str(tmp_path / "mender.conf"),
               "--fallback-config", str(tmp_path / "fallback.conf"), "--data", str(data), *args]
        script = (f"mount --bind {etc} /etc/mender && mount --bind {mods} {MODULES} && "
                  f"exec \"$@\"")
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *cmd],
                              capture_output=True, text=True, env=env, timeout=300)
    return run


def _states(root):
    st = status(Unit(root))
    return st["current"], {r["version"]: r["state"] for r in st["releases"]}


def test_mender_install_then_commit(mender, root, artifact_v2):
    r = mender("install", str(artifact_v2))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{V2} installed and switched, pending its self-test" in r.stderr
    assert _states(root) == (V2, {V1: "committed", V2: "pending"})
    c = mender("commit")
    assert c.returncode == 0, c.stderr[-2000:]
    assert "self-test passed, committed" in c.stderr
    assert _states(root) == (V2, {V1: "committed", V2: "committed"})
    assert mender("show-artifact").stdout.strip() == f"hsi-edge-cpu-{V2}"


def test_mender_install_then_rollback(mender, root, artifact_v2):
    assert mender("install", str(artifact_v2)).returncode == 0
    r = mender("rollback")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"rolled back: current {V1} (was {V2})" in r.stderr
    assert _states(root) == (V1, {V1: "committed", V2: "rolled-back"})
    assert mender("show-artifact").stdout.strip() == "factory-image"


def test_mender_commit_with_failing_selftest_rolls_back(mender, root, make_artifact):
    from test_install import _bad_golden
    bad = make_artifact("2.2.0", 2, mutate=_bad_golden)
    assert mender("install", str(bad)).returncode == 0
    c = mender("commit")
    assert c.returncode != 0
    assert "rolled back to 1.0.0 and marked bad: self-test failed: chain-numpy" in c.stderr
    assert _states(root) == (V1, {V1: "committed", "2.2.0": "bad"})
    assert mender("show-artifact").stdout.strip() == "factory-image"


def test_mender_refuses_a_release_for_another_unit(mender, root, make_artifact):
    other = make_artifact("2.3.0", 2, target={"arch": ["aarch64"], "l4t": None,
                                               "cuda_major": None, "tensorrt": None,
                                               "compute_capabilities": []})
    r = mender("install", str(other))
    assert r.returncode != 0
    assert "target.arch: this unit is x86_64, the release is for aarch64" in r.stderr
    assert _states(root) == (V1, {V1: "committed"})


def test_mender_commit_fails_after_crash_loop_rollback(mender, root, artifact_v2):
    from deploy.install import service_start
    assert mender("install", str(artifact_v2)).returncode == 0
    for _ in range(4):  # max_failed_starts = 3: the fourth start rolls back
        line = service_start(Unit(root))
    assert line.endswith("marked bad: 3 starts without a commit (crash loop)")
    c = mender("commit")
    assert c.returncode != 0
    assert f"{V2} is not pending: bad: 3 starts without a commit (crash loop)" in c.stderr
    assert _states(root) == (V1, {V1: "committed", V2: "bad"})
    assert mender("show-artifact").stdout.strip() == "factory-image"
