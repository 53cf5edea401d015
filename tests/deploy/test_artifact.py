"""Artifacts: what mender-artifact writes passes our verifier, what we build passes
`mender-artifact validate`, and every alteration, unknown key, wrong target and lower
security version is refused with one line naming what did not match."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deploy.artifact import load_public_keys
from deploy.facts import UnitFacts
from deploy.verify import verify_artifact
from edge.errors import BundleError, ConfigError

from deploy_testlib import V1, cli

FACTS = UnitFacts(arch="x86_64", device_type="hsi-edge-x86_64")


def _keys(keys, *names):
    return load_public_keys([keys[n].with_suffix(".pub") for n in names])


def rewrite(src: Path, dst: Path, member: str, fn) -> Path:
    """Copy the outer tar, passing ``member``'s bytes through ``fn`` (order kept)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name == member:
                data = fn(data)
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    return dst


def in_tar(name: str, fn, gz: bool):
    """``fn`` applied to member ``name`` of a (gzipped) tar given as bytes."""
    def apply(blob: bytes) -> bytes:
        raw = gzip.decompress(blob) if gz else blob
        out = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tin, tarfile.open(fileobj=out,
                                                                          mode="w") as tout:
            for m in tin.getmembers():
                data = tin.extractfile(m).read()
                if m.name == name:
                    data = fn(data)
                    m.size = len(data)
                tout.addfile(m, io.BytesIO(data))
        return gzip.compress(out.getvalue(), compresslevel=1) if gz else out.getvalue()
    return apply


def flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


def test_our_artifact_verifies_with_ec_and_rsa(make_artifact, artifact_v1, keys):
    inner = verify_artifact(artifact_v1, _keys(keys, "ec"), FACTS)
    assert inner["version"] == V1 and inner["security_version"] == 1
    assert {f["path"] for f in inner["files"]} >= {"config/unit.yaml", "sbom.cdx.json",
                                                   "golden/golden.npz", "selftest.json"}
    assert all(len(f["sha256"]) == 64 and f["mode"] in ("0644", "0755") for f in inner["files"])
    assert inner["model"]["engine"]["precision"] == "fp32"
    from edge.inference import load_model_card
    from edge.models import demo_card_path
    card = load_model_card(demo_card_path("tivita"))
    assert inner["model"]["engine"]["profile"][0] == [card.input.name] + 3 * [
        [1, card.input.channels, card.input.height, card.input.width]]
    rsa_art = make_artifact("1.0.1", key="rsa")
    assert verify_artifact(rsa_art, _keys(keys, "other", "rsa"), FACTS)["version"] == "1.0.1"


@pytest.mark.parametrize("key", ["ec", "rsa"])
def test_mender_artifact_validate_accepts_ours(make_artifact, artifact_v1, keys, key):
    art = artifact_v1 if key == "ec" else make_artifact("1.0.2", key="rsa")
    proc = subprocess.run(["mender-artifact", "validate", str(art), "-k",
                           str(keys[key].with_suffix(".pub"))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "validated successfully" in proc.stdout + proc.stderr
    read = subprocess.run(["mender-artifact", "read", str(art)], capture_output=True,
                          text=True).stdout
    assert "Type:   hsi-edge" in read and "hsi-edge-x86_64" in read


def test_artifact_written_directly_by_mender_artifact_verifies(tmp_path, keys, artifact_v1):
    """An artifact assembled with the plain mender-artifact command line (our payload files
    taken out of ours) passes the Python verifier: we read the tool's format, not our own."""
    with tarfile.open(artifact_v1) as t:
        data = t.extractfile("data/0000.tar.gz").read()
        hdr = t.extractfile("header.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(data)) as d:
        d.extractall(tmp_path / "p")
    with tarfile.open(fileobj=io.BytesIO(hdr)) as h:
        meta = h.extractfile("headers/0000/meta-data").read()
    (tmp_path / "meta.json").write_bytes(meta)
    out = tmp_path / "direct.mender"
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "hsi-edge", "-n", "direct",
                    "-t", "hsi-edge-x86_64", "-f", str(tmp_path / "p" / "hsi-edge-manifest.json"),
                    "-f", str(tmp_path / "p" / "release.tar"), "-m", str(tmp_path / "meta.json"),
                    "-k", str(keys["rsa"]), "-o", str(out)], check=True, capture_output=True)
    assert verify_artifact(out, _keys(keys, "rsa"), FACTS)["version"] == V1


def test_unknown_key_refused(artifact_v1, keys):
    with pytest.raises(BundleError, match=r"manifest.sig: the signature does not verify "
                                          r"against any of the 1 trusted key"):
        verify_artifact(artifact_v1, _keys(keys, "other"), FACTS)


def test_unsigned_refused(tmp_path, artifact_v1, keys):
    src = tmp_path / "unsigned.mender"
    with tarfile.open(artifact_v1) as tin, tarfile.open(src, "w") as tout:
        for m in tin.getmembers():
            if m.name != "manifest.sig":
                tout.addfile(m, tin.extractfile(m))
    with pytest.raises(BundleError, match="the artifact is not signed"):
        verify_artifact(src, _keys(keys, "ec"), FACTS)


def test_flipped_byte_in_manifest_refused(tmp_path, artifact_v1, keys):
    bad = rewrite(artifact_v1, tmp_path / "m.mender", "manifest", flip)
    with pytest.raises(BundleError, match="manifest.sig: the signature does not verify"):
        verify_artifact(bad, _keys(keys, "ec"), FACTS)


def test_flipped_byte_in_header_refused(tmp_path, artifact_v1, keys):
    def raise_sv(meta: bytes) -> bytes:  # the attack a flipped header enables: 1 -> 9
        return meta.replace(b'"security_version":1', b'"security_version":9')
    bad = rewrite(artifact_v1, tmp_path / "h.mender", "header.tar.gz",
                  in_tar("headers/0000/meta-data", raise_sv, gz=True))
    with pytest.raises(BundleError, match=r"header.tar.gz: sha256 .* does not match the signed "
                                          r"manifest"):
        verify_artifact(bad, _keys(keys, "ec"), FACTS)


def test_flipped_byte_in_payload_manifest_refused(tmp_path, artifact_v1, keys):
    bad = rewrite(artifact_v1, tmp_path / "p.mender", "data/0000.tar.gz",
                  in_tar("hsi-edge-manifest.json", flip, gz=True))
    with pytest.raises(BundleError, match=r"data/0000/hsi-edge-manifest.json: sha256 .* does "
                                          r"not match the signed manifest"):
        verify_artifact(bad, _keys(keys, "ec"), FACTS)


def test_flipped_byte_in_every_release_file_refused(tmp_path, artifact_v1, keys, tree):
    ks = _keys(keys, "ec")
    for entry in tree[1]["files"]:
        name = entry["path"]
        if entry["size"] == 0:
            continue
        bad = rewrite(artifact_v1, tmp_path / "f.mender", "data/0000.tar.gz",
                      in_tar("release.tar", in_tar(name, flip, gz=False), gz=True))
        with pytest.raises(BundleError, match=rf"release.tar: {name}: size .* sha256 .* do not "
                                              rf"match the release manifest"):
            verify_artifact(bad, ks, FACTS)


@pytest.mark.parametrize("facts, message", [
    (UnitFacts(arch="aarch64"), r"target.arch: this unit is aarch64, the release is for x86_64"),
    (UnitFacts(arch="x86_64", device_type="hsi-edge-orin"),
     r"device_type: this unit is 'hsi-edge-orin', the release is for 'hsi-edge-x86_64'"),
])
def test_wrong_target_refused(artifact_v1, keys, facts, message):
    with pytest.raises(BundleError, match=message):
        verify_artifact(artifact_v1, _keys(keys, "ec"), facts)


GPU_TARGET = {"arch": ["aarch64"], "l4t": {"min": "36.3.0", "max": "36.4.99"},
              "cuda_major": 12, "tensorrt": "10.3", "compute_capabilities": ["8.7"]}
ORIN = dict(arch="aarch64", device_type="hsi-edge-x86_64", l4t="36.4.0", cuda="12.6",
            tensorrt="10.3.0.30", compute_capabilities=("8.7",))


@pytest.fixture(scope="module")
def gpu_artifact(make_artifact):
    return make_artifact("1.1.0", target=GPU_TARGET)


def test_gpu_target_accepted_on_matching_unit(gpu_artifact, keys):
    assert verify_artifact(gpu_artifact, _keys(keys, "ec"), UnitFacts(**ORIN))["target"] == \
        GPU_TARGET


@pytest.mark.parametrize("change, message", [
    ({"l4t": "35.4.1"}, r"target.l4t: this unit has L4T 35.4.1, the release needs L4T 36.3.0 "
                        r"to 36.4.99"),
    ({"l4t": None}, r"target.l4t: this unit has no L4T"),
    ({"cuda": "11.4"}, r"target.cuda_major: this unit has CUDA 11.4, the release needs CUDA 12.x"),
    ({"tensorrt": "8.6.2"}, r"target.tensorrt: this unit has TensorRT 8.6.2, the release needs "
                            r"TensorRT 10.3.x"),
    ({"tensorrt": None}, r"target.tensorrt: this unit has TensorRT none"),
    ({"compute_capabilities": ("7.2",)}, r"target.compute_capabilities: this unit's GPU is "
                                         r"compute capability 7.2, the release has kernels for 8.7"),
    ({"compute_capabilities": ()}, r"target.compute_capabilities: this unit has no GPU"),
])
def test_each_gpu_constraint_refused(gpu_artifact, keys, change, message):
    with pytest.raises(BundleError, match=message):
        verify_artifact(gpu_artifact, _keys(keys, "ec"), UnitFacts(**{**ORIN, **change}))


def test_lower_security_version_refused(artifact_v1, keys, tmp_path):
    (tmp_path / "security_version").write_text("2\n")
    with pytest.raises(BundleError, match=r"security_version 1 is lower than this unit's 2 "
                                          r"\(anti-downgrade"):
        verify_artifact(artifact_v1, _keys(keys, "ec"), FACTS, tmp_path)
    (tmp_path / "security_version").write_text("1\n")
    assert verify_artifact(artifact_v1, _keys(keys, "ec"), FACTS, tmp_path)


def test_cli_verify_one_line(artifact_v1, keys, facts_file):
    ok = cli("deploy", "verify", str(artifact_v1), "--trust", str(keys["ec"].with_suffix(".pub")),
             "--facts", str(facts_file))
    assert ok.returncode == 0, ok.stderr
    assert f"OK: hsi-edge-cpu {V1} (security version 1)" in ok.stdout
    bad = cli("deploy", "verify", str(artifact_v1), "--trust",
              str(keys["other"].with_suffix(".pub")), "--facts", str(facts_file))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "signature does not verify" in bad.stderr
    priv = cli("deploy", "verify", str(artifact_v1), "--trust", str(keys["ec"]))
    assert priv.returncode == 2 and "is not a PEM public key" in priv.stderr


def test_trust_requires_a_key():
    with pytest.raises(ConfigError, match="--trust: no public key given"):
        load_public_keys([])


def test_build_without_mender_artifact_names_the_package(tmp_path, keys, monkeypatch):
    from deploy.release import mender_artifact_tool
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BundleError, match=r"mender-artifact not found: .*package "
                                          r"'mender-artifact'"):
        mender_artifact_tool()


def test_sbom_is_cyclonedx_and_lists_the_wheel_and_model(tree):
    t, manifest = tree
    doc = json.loads((t / "sbom.cdx.json").read_text())
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.5"
    comps = {c["name"]: c for c in doc["components"]}
    assert comps["hsi-edge"]["purl"].startswith("pkg:pypi/hsi-edge@")
    assert comps["hsi-edge"]["hashes"][0]["alg"] == "SHA-256"
    model = comps["demo-tivita"]
    assert model["type"] == "machine-learning-model"
    assert model["hashes"][0]["content"] == manifest["model"]["onnx_sha256"]
    # hsi-edge-only wheelhouse: the unit provides the runtime requirements
    assert comps["numpy"]["properties"][0] == {"name": "hsi-edge:provided-by", "value": "unit"}
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    try:
        errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(
            (t / "sbom.cdx.json").read_text())
    except ImportError as exc:  # validation needs the library's optional jsonschema extra
        pytest.skip(f"CycloneDX schema validation unavailable: {exc}")
    assert errors is None, errors


def test_example_release_files_load():
    from deploy.spec import load_release_spec
    from edge.pipeline.config import load_app_config
    root = Path(__file__).resolve().parents[2] / "deploy" / "examples"
    orin = load_release_spec(root / "jetson-orin.yaml")
    assert orin.python.platform == "manylinux_2_35_aarch64" and orin.python.version == "3.10"
    assert orin.target.compute_capabilities == ("8.7",) and orin.kernels.build
    assert load_release_spec(root / "cpu-unit.yaml").wheelhouse.mode == "hsi-edge-only"
    for cfg in root.glob("*.config.yaml"):
        load_app_config(str(cfg))


def test_release_file_errors_name_the_key(tmp_path):
    from deploy.spec import load_release_spec
    p = tmp_path / "r.yaml"
    p.write_text("format: hsi-edge-release/1\nname: x\nsecurity_version: 1\n"
                 "device_types: [d]\ntarget: {arch: [x86_64], tensorrt: 10}\n")
    with pytest.raises(ConfigError, match=r"r.yaml: target.tensorrt: expected a string, got 10"):
        load_release_spec(p)
    p.write_text("format: hsi-edge-release/1\nname: x\nsecurity_version: 1\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"bogus: unknown key"):
        load_release_spec(p)


def test_cli_build_prints_one_line_summary(tmp_path, wheel, keys):
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "cpu-unit.yaml"
    r = cli("deploy", "build", str(example), "--key", str(keys["ec"]), "--out",
            str(tmp_path / "dist"), "--wheel", str(wheel))
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert "\n" not in line
    assert line.startswith(str(tmp_path / "dist" / "hsi-edge-cpu-0.1.0+cpu1.mender"))
    assert ": hsi-edge-cpu 0.1.0+cpu1 (security version 1) for hsi-edge-x86_64 " \
           "[x86_64, CPU], " in line and line.endswith(" MB")
    import os
    no_tool = cli("deploy", "build", str(example), "--key", str(keys["ec"]), "--out",
                  str(tmp_path / "d2"), env={"PATH": os.path.dirname(sys.executable)})
    assert no_tool.returncode == 2 and no_tool.stderr.count("\n") == 1
    assert "package 'mender-artifact'" in no_tool.stderr
