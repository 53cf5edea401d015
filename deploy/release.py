"""``hsi-edge deploy build``: assemble a release tree and write it as a signed Mender
Artifact with the real ``mender-artifact`` tool.

Release tree (``release.tar`` in the payload; every file listed in the inner manifest with
size, mode and sha256)::

    wheelhouse/          the hsi-edge wheel (+ runtime dependencies in ``full`` mode,
                         sdists of packages without a wheel for the target)
    model/               <card name>.yaml + its ONNX file
    config/unit.yaml     the unit config, model.card pointing at model/
    kernels/             cubins + PTX + manifest.json (``hsi-edge kernels build``), GPU only
    systemd/, udev/      units and rules installed by the integrator's image
    mender/hsi-edge      the Mender update module (for the image: /usr/share/mender/modules/v3)
    golden/              self-test fixtures (:mod:`deploy.golden`)
    selftest.json        the release's self-test settings (devices, timeouts, limits)
    sbom.cdx.json        CycloneDX SBOM (:mod:`deploy.sbom`)

No TensorRT engine is shipped: engines are built on the unit and cached there
(:mod:`edge.inference.engine_cache` keys), because a plan does not move between TensorRT
versions or GPUs (FACTS.md, TensorRT).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy import MANIFEST_NAME, PAYLOAD_TYPE, RELEASE_FORMAT, TREE_NAME, UNIT_FORMAT_VERSION
from deploy.spec import ReleaseSpec
from edge import __version__
from edge.core.config import load_yaml
from edge.core.fileio import sha256_file
from edge.errors import BundleError, ConfigError

__all__ = ["build_release", "prepare_tree", "write_artifact", "mender_artifact_tool",
           "build_wheel", "tree_manifest", "BuildResult"]

log = logging.getLogger(__name__)

DEPLOY_DIR = Path(__file__).resolve().parent
CHECKOUT = DEPLOY_DIR.parent
#: The runtime dependencies an hsi-edge venv must import (hsi-edge-only wheelhouses check
#: them on the unit).
RUNTIME_MODULES = ("numpy", "yaml", "serial", "onnxruntime", "PIL", "tqdm")


@dataclasses.dataclass
class BuildResult:
    artifact: Path
    manifest: dict[str, Any]
    size: int

    def summary(self) -> str:
        m = self.manifest
        t = m["target"]
        where = ", ".join(m["device_types"])
        gpu = (f", CC {'/'.join(t['compute_capabilities'])}" if t["compute_capabilities"]
               else ", CPU")
        return (f"{self.artifact}: {m['name']} {m['version']} (security version "
                f"{m['security_version']}) for {where} [{'/'.join(t['arch'])}{gpu}], "
                f"{len(m['files'])} files, {self.size / 1e6:.1f} MB")


def mender_artifact_tool() -> str:
    """Path of ``mender-artifact``; BundleError naming the Debian package when missing."""
    exe = shutil.which("mender-artifact")
    if exe is None:
        raise BundleError("mender-artifact not found: install it on the build machine "
                          "(Debian/Ubuntu package 'mender-artifact': apt-get install "
                          "mender-artifact)")
    return exe


def _run(cmd: list[str], what: str, **kw: Any) -> subprocess.CompletedProcess:
    log.info("%s: %s", what, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except OSError as exc:
        raise BundleError(f"{what}: cannot run {cmd[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        tail = errors[-2:] or lines[-3:]
        raise BundleError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc


def build_wheel(source: Path, out_dir: Path) -> Path:
    """Build the hsi-edge wheel of ``source`` (a checkout) into ``out_dir``.

    The tracked and untracked-not-ignored files are copied first, so the checkout itself
    gets no ``build/`` folder (others may be working in it).
    """
    if not (source / "pyproject.toml").exists():
        raise ConfigError(f"source: {source} is not an hsi-edge checkout (no pyproject.toml)")
    with tempfile.TemporaryDirectory(prefix="hsi-edge-src-") as tmp:
        files = _checkout_files(source)
        for rel in files:
            dst = Path(tmp) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dst)
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), tmp],
             "hsi-edge wheel", timeout=600)
    wheels = sorted(out_dir.glob("hsi_edge-*.whl"))
    if not wheels:
        raise BundleError(f"hsi-edge wheel: pip wrote no wheel into {out_dir}")
    return wheels[-1]


def _checkout_files(source: Path) -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache"}
        names = [str(p.relative_to(source)) for p in source.rglob("*")
                 if p.is_file() and not (set(p.relative_to(source).parts) & skip)]
    return [n for n in names if (source / n).is_file()]


def _wheelhouse(spec: ReleaseSpec, tree: Path, wheel: Path | None) -> dict[str, Any]:
    wh = tree / "wheelhouse"
    wh.mkdir()
    if wheel is None:
        source = spec.resolve(spec.source) if spec.source else CHECKOUT
        wheel = build_wheel(source, wh)
    else:
        if not wheel.is_file():
            raise ConfigError(f"--wheel: {wheel} does not exist")
        shutil.copy2(wheel, wh / wheel.name)
    info: dict[str, Any] = {"mode": spec.wheelhouse.mode, "hsi_edge_wheel": wheel.name,
                            "requirements": [], "sdists": list(spec.wheelhouse.sdists)}
    if spec.wheelhouse.mode == "full":
        req = f"{wh / wheel.name}" + (f"[{','.join(spec.wheelhouse.extras)}]"
                                      if spec.wheelhouse.extras else "")
        py = spec.python.version.replace(".", "")
        _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
              "--platform", spec.python.platform, "--python-version", spec.python.version,
              "--implementation", "cp", "--abi", f"cp{py}", "--dest", str(wh), req],
             "wheelhouse (pip download)", timeout=1800)
        if spec.wheelhouse.sdists:
            _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary=:all:",
                  "--dest", str(wh), *spec.wheelhouse.sdists], "wheelhouse sdists", timeout=1800)
    info["requirements"] = sorted(p.name for p in wh.iterdir())
    return info


def _model(spec: ReleaseSpec, cfg, tree: Path) -> tuple[Path | None, dict[str, Any] | None]:
    from edge.inference import load_model_card
    from edge.inference.onnx_hash import onnx_content_sha256
    from edge.pipeline.app import resolve_model_card
    card_ref = spec.model.card
    if card_ref not in ("demo", "none"):
        card_ref = str(spec.resolve(card_ref))
    card_path = resolve_model_card(card_ref, cfg.camera.preset)
    if card_path is None:
        return None, None
    card = load_model_card(card_path)  # checks its sha256 when the card has one
    mdir = tree / "model"
    mdir.mkdir()
    onnx = card.onnx_path
    shutil.copy2(onnx, mdir / onnx.name)
    for extra in sorted(onnx.parent.glob(onnx.name + ".data")):  # external weights
        shutil.copy2(extra, mdir / extra.name)
    text = Path(card_path).read_text()
    (mdir / f"{card.name}.yaml").write_text(text)
    shapes = [[card.input.name, s, s, s] for s in
              [[1, card.input.channels, card.input.height, card.input.width]]]
    info = {"name": card.name, "card": f"model/{card.name}.yaml", "onnx": f"model/{onnx.name}",
            "onnx_sha256": onnx_content_sha256(onnx),
            "engine": {"precision": spec.model.precision, "profile": shapes}}
    return mdir / f"{card.name}.yaml", info


def _unit_config(spec: ReleaseSpec, tree: Path, card_rel: str | None):
    from edge.pipeline.config import load_app_config
    src = spec.resolve(spec.config) if spec.config else None
    cfg = load_app_config(str(src) if src else None)
    doc = load_yaml(src, what="unit config") if src else {}
    doc = doc or {}
    doc.setdefault("model", {})
    doc["model"]["card"] = card_rel or "none"
    return cfg, doc


def prepare_tree(spec: ReleaseSpec, tree: Path, *, wheel: Path | None = None) -> dict[str, Any]:
    """Fill ``tree`` (an empty folder) with the release files; returns the inner manifest."""
    import yaml

    from deploy.sbom import write_sbom
    from edge.pipeline.config import load_app_config

    t0 = time.monotonic()
    version = spec.version or __version__
    cfg, _ = _unit_config(spec, tree, None)
    card_path, model_info = _model(spec, cfg, tree)
    _, cfg_doc = _unit_config(spec, tree, model_info["card"] if model_info else None)
    (tree / "config").mkdir()
    (tree / "config" / "unit.yaml").write_text(yaml.safe_dump(cfg_doc, sort_keys=False))
    load_app_config(str(tree / "config" / "unit.yaml"))  # what ships must load
    wheel_info = _wheelhouse(spec, tree, wheel)
    kernels = None
    if spec.kernels.build:
        out = tree / "kernels"
        archs = ",".join(spec.kernels.archs) or "sm_87"
        _run([sys.executable, "-m", "edge", "kernels", "build", "--arch", archs, "--out",
              str(out)], "kernels build (needs nvcc)", timeout=1800)
        kernels = {"archs": list(spec.kernels.archs)}
    for sub, pattern in (("systemd", "*.service"), ("systemd", "*.target"),
                         ("udev", "*.rules"), ("mender", "hsi-edge")):
        dst = tree / sub
        dst.mkdir(exist_ok=True)
        for f in sorted((DEPLOY_DIR / sub).glob(pattern)):
            shutil.copy2(f, dst / f.name)
    g = spec.selftest.golden
    _golden_with_shipped_code(tree, wheel_info, dict(
        card=str(card_path) if card_path else None, config=str(tree / "config" / "unit.yaml"),
        preset=g.preset or cfg.camera.preset or "tivita", rows=g.rows, cols=g.cols,
        seed=g.seed, precision=spec.model.precision))
    st = dataclasses.asdict(spec.selftest)
    (tree / "selftest.json").write_text(json.dumps(st, indent=2) + "\n")
    write_sbom(tree / "sbom.cdx.json", name=spec.name, version=version,
               wheelhouse=tree / "wheelhouse", model=model_info)
    manifest = {
        "format": RELEASE_FORMAT, "name": spec.name, "version": version,
        "hsi_edge_version": __version__, "security_version": spec.security_version,
        "device_types": list(spec.device_types),
        "target": {"arch": list(spec.target.arch),
                   "l4t": dataclasses.asdict(spec.target.l4t) if spec.target.l4t else None,
                   "cuda_major": spec.target.cuda_major, "tensorrt": spec.target.tensorrt,
                   "compute_capabilities": list(spec.target.compute_capabilities)},
        "python": dataclasses.asdict(spec.python), "wheelhouse": wheel_info,
        "venv": dataclasses.asdict(spec.venv), "runtime_modules": list(RUNTIME_MODULES),
        "model": model_info, "kernels": kernels, "unit_format_version": UNIT_FORMAT_VERSION,
        "selftest": {"timeout_s": spec.selftest.timeout_s,
                     "max_failed_starts": spec.selftest.max_failed_starts},
        "built": {"host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime()),
                  "seconds": None},
        "files": tree_manifest(tree),
    }
    manifest["built"]["seconds"] = round(time.monotonic() - t0, 1)
    return manifest


def _golden_with_shipped_code(tree: Path, wheel_info: dict[str, Any], args: dict[str, Any]
                              ) -> None:
    """Make the golden fixtures with the code of the shipped hsi-edge wheel (unpacked and
    imported first), not the code this command runs from: the fixtures must describe what
    the unit will run, even when the checkout changed after the wheel was built."""
    import zipfile
    with tempfile.TemporaryDirectory(prefix="hsi-edge-code-") as code:
        with zipfile.ZipFile(tree / "wheelhouse" / wheel_info["hsi_edge_wheel"]) as z:
            z.extractall(code)
        script = ("import json, sys\n"
                  "from deploy.golden import make_golden\n"
                  "from edge.pipeline.config import load_app_config\n"
                  "a = json.loads(sys.argv[1])\n"
                  "make_golden(sys.argv[2], a['card'], load_app_config(a['config']),\n"
                  "            preset=a['preset'], rows=a['rows'], cols=a['cols'],\n"
                  "            seed=a['seed'], precision=a['precision'])\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [code] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
        _run([sys.executable, "-c", script, json.dumps(args), str(tree / "golden")],
             "golden fixtures (with the shipped code)", timeout=1800, env=env, cwd=code)


def tree_manifest(tree: Path) -> list[dict[str, Any]]:
    """Every regular file under ``tree``: path (POSIX, relative), size, mode, sha256."""
    files = []
    for p in sorted(tree.rglob("*")):
        if p.is_symlink() or not p.is_file():
            if p.is_symlink():
                raise BundleError(f"release tree: {p.relative_to(tree)} is a symlink; "
                                  f"releases hold regular files only")
            continue
        mode = 0o755 if p.stat().st_mode & stat.S_IXUSR else 0o644
        files.append({"path": p.relative_to(tree).as_posix(), "size": p.stat().st_size,
                      "mode": f"{mode:04o}", "sha256": sha256_file(p)})
    return files


def _write_tree_tar(tree: Path, manifest: dict[str, Any], out: Path) -> None:
    """A deterministic tar of the tree: manifest order, root-owned, fixed mtime."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in manifest["files"]:
            info = tar.gettarinfo(str(tree / entry["path"]), arcname=entry["path"])
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            info.mode = int(entry["mode"], 8)
            with open(tree / entry["path"], "rb") as f:
                tar.addfile(info, f)


def meta_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The header meta-data: what a unit checks before reading the payload (Mender allows
    only flat values and lists of scalars there)."""
    t = manifest["target"]
    meta = {"format": manifest["format"], "version": manifest["version"],
            "hsi_edge_version": manifest["hsi_edge_version"],
            "security_version": manifest["security_version"], "arch": t["arch"],
            "compute_capabilities": t["compute_capabilities"]}
    if t["l4t"]:
        meta["l4t_min"], meta["l4t_max"] = t["l4t"]["min"], t["l4t"]["max"]
    if t["cuda_major"] is not None:
        meta["cuda_major"] = t["cuda_major"]
    if t["tensorrt"]:
        meta["tensorrt"] = t["tensorrt"]
    return meta


def target_from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`meta_summary` for the target."""
    return {"arch": list(meta.get("arch") or []),
            "l4t": ({"min": meta["l4t_min"], "max": meta["l4t_max"]}
                    if "l4t_min" in meta else None),
            "cuda_major": meta.get("cuda_major"), "tensorrt": meta.get("tensorrt"),
            "compute_capabilities": list(meta.get("compute_capabilities") or [])}


def write_artifact(tree: Path, manifest: dict[str, Any], key: Path, out_dir: Path) -> Path:
    """Sign and write ``<name>-<version>.mender`` with ``mender-artifact write module-image``."""
    tool = mender_artifact_tool()
    if not key.is_file():
        raise ConfigError(f"--key: {key} does not exist (a PEM private key, RSA or ECDSA P-256)")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{manifest['name']}-{manifest['version']}"
    out = out_dir / f"{name}.mender"
    tmp_out = out_dir / f".{name}.mender.tmp"
    with tempfile.TemporaryDirectory(prefix="hsi-edge-payload-") as tmp:
        mpath = Path(tmp) / MANIFEST_NAME
        mpath.write_text(json.dumps(manifest, indent=1) + "\n")
        tpath = Path(tmp) / TREE_NAME
        _write_tree_tar(tree, manifest, tpath)
        meta = Path(tmp) / "meta-data.json"
        meta.write_text(json.dumps(meta_summary(manifest)))
        cmd = [tool, "write", "module-image", "-T", PAYLOAD_TYPE, "-n", name,
               "--software-name", "hsi-edge", "--software-version", manifest["version"],
               "-f", str(mpath), "-f", str(tpath), "-m", str(meta), "-k", str(key),
               "--compression", "gzip", "-o", str(tmp_out)]
        for dt in manifest["device_types"]:
            cmd += ["-t", dt]
        try:
            _run(cmd, "mender-artifact write", timeout=600)
        except BundleError as exc:
            if "PKCS8" in str(exc):
                raise ConfigError(
                    f"--key: {key} is a PKCS#8 key; mender-artifact reads traditional PEM keys "
                    f"(BEGIN EC PRIVATE KEY / BEGIN RSA PRIVATE KEY): convert it with "
                    f"'openssl ec -in KEY -out KEY.ec' or 'openssl rsa -in KEY -out KEY.rsa "
                    f"-traditional'") from None
            raise
        os.replace(tmp_out, out)
    return out


def build_release(spec: ReleaseSpec, key: str | os.PathLike, out_dir: str | os.PathLike, *,
                  wheel: str | os.PathLike | None = None) -> BuildResult:
    """Build the release of ``spec`` and write it as a signed artifact into ``out_dir``."""
    mender_artifact_tool()  # refuse before minutes of work
    key = Path(key)
    if not key.is_file():
        raise ConfigError(f"--key: {key} does not exist (a PEM private key, RSA or ECDSA P-256)")
    with tempfile.TemporaryDirectory(prefix="hsi-edge-release-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        manifest = prepare_tree(spec, tree, wheel=Path(wheel) if wheel else None)
        out = write_artifact(tree, manifest, key, Path(out_dir))
    return BuildResult(out, manifest, out.stat().st_size)
