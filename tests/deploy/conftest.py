"""Fixtures of the deploy tests: keys, one hsi-edge wheel, one release tree and one installed
unit per session (copied per test), the device simulators on ptys.

Artifacts are written by the real ``mender-artifact`` (skipped with the reason when it is
missing; ``.ci/run`` installs it).  A variant of the release (another version, a tampered
golden file, an extra device) is the session tree copied, changed and written again, which
takes well under a second, instead of a full build.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest

from deploy_testlib import V1, V2, make_unit_data  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "cpu-unit.yaml"


NEEDS_TOOL = {"tree", "make_artifact", "artifact_v1", "artifact_v2", "unit_v1", "root"}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/deploy/" in str(item.fspath) and shutil.which("mender-artifact") is None \
                and NEEDS_TOOL & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.skip(
                reason="mender-artifact is not installed (Debian package mender-artifact; "
                       ".ci/run installs it)"))


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.with_suffix(".pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """``ec``, ``rsa`` and ``other`` (an untrusted EC key): name -> private key path (the
    public key beside it with suffix .pub)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name, key in (("ec", ec.generate_private_key(ec.SECP256R1())),
                      ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                      ("other", ec.generate_private_key(ec.SECP256R1()))):
        _write_key(d / f"{name}.pem", key)
        out[name] = d / f"{name}.pem"
    return out


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    from deploy.release import CHECKOUT, build_wheel
    return build_wheel(CHECKOUT, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def sims():
    """The controller and Lumencor simulators on ptys: {name: url}."""
    from drivers.sim import start_controller, start_lumencor
    ctl = start_controller(transport="pty", serial="SN0042")
    lum = start_lumencor(transport="pty")
    yield {"controller": ctl.url, "light": lum.url}
    ctl.stop()
    lum.stop()


@pytest.fixture(scope="session")
def spec():
    import dataclasses

    from deploy.spec import load_release_spec
    s = load_release_spec(EXAMPLE)
    return dataclasses.replace(s, version=V1)


@pytest.fixture(scope="session")
def tree(tmp_path_factory, spec, wheel):
    """(tree folder, inner manifest) of the example CPU release, version 1.0.0."""
    from deploy.release import prepare_tree
    t = tmp_path_factory.mktemp("tree") / "tree"
    t.mkdir()
    manifest = prepare_tree(spec, t, wheel=wheel)
    return t, manifest


@pytest.fixture(scope="session")
def make_artifact(tmp_path_factory, tree, keys):
    """``make_artifact(version, security_version=1, key="ec", mutate=None, **manifest)``:
    the session tree, optionally changed by ``mutate(tree_dir)``, written as an artifact."""
    from deploy.release import tree_manifest, write_artifact
    base, manifest = tree
    out_root = tmp_path_factory.mktemp("artifacts")
    count = [0]

    def make(version: str, security_version: int = 1, key: str = "ec",
             mutate: Callable[[Path], None] | None = None, **fields) -> Path:
        count[0] += 1
        work = out_root / f"w{count[0]}"
        shutil.copytree(base, work / "tree")
        if mutate:
            mutate(work / "tree")
        m = json.loads(json.dumps(manifest))
        m.update(fields, version=version, security_version=security_version)
        m["files"] = tree_manifest(work / "tree")
        art = write_artifact(work / "tree", m, keys[key], work)
        shutil.rmtree(work / "tree")
        return art

    return make


@pytest.fixture(scope="session")
def artifact_v1(make_artifact):
    return make_artifact(V1, 1)


@pytest.fixture(scope="session")
def artifact_v2(make_artifact):
    return make_artifact(V2, 2)


@pytest.fixture(scope="session")
def facts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("facts") / "facts.yaml"
    p.write_text("arch: x86_64\ndevice_type: hsi-edge-x86_64\n")
    return p


@pytest.fixture(scope="session")
def unit_v1(tmp_path_factory, artifact_v1, keys, facts_file, sims):
    """An install root with release 1.0.0 installed and committed (copy it per test)."""
    from deploy.facts import load_facts
    from deploy.install import Unit, install
    root = tmp_path_factory.mktemp("unit-v1") / "root"
    make_unit_data(root / "unit", sims)
    keydir = root / "unit" / "trusted-keys"
    keydir.mkdir(parents=True)
    shutil.copy(keys["ec"].with_suffix(".pub"), keydir / "release.pub")
    out = install(Unit(root), artifact_v1, trust=[], facts=load_facts(facts_file),
                  python=sys.executable)
    assert out.ok, out.line
    return root


@pytest.fixture
def root(unit_v1, tmp_path):
    """A private copy of the session's unit with 1.0.0 installed."""
    dst = tmp_path / "root"
    shutil.copytree(unit_v1, dst, symlinks=True)
    return dst
