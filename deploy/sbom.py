"""The release's SBOM in CycloneDX JSON (1.5), made with ``cyclonedx-python-lib``.

Components: hsi-edge itself (the application), every wheel and sdist in the wheelhouse (name
and version from the file name, purl ``pkg:pypi/...``, sha256 of the file), the model
(machine-learning-model, sha256 of its ONNX content), and, for an ``hsi-edge-only``
wheelhouse, the runtime requirements the unit's site packages must provide (no hash: not
shipped; property ``hsi-edge:provided-by = unit``).  FDA §524B asks for an SBOM per device
software release (research/deploy.md, section 3).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from edge.core.fileio import sha256_file
from edge.errors import BackendUnavailable

__all__ = ["write_sbom"]


def _name_version(path: Path) -> tuple[str, str]:
    stem = path.name
    if stem.endswith(".whl"):
        name, version = stem.split("-")[:2]
    else:
        m = re.match(r"(.+)-([0-9][^-]*)\.(tar\.gz|zip|tar\.bz2)$", stem)
        name, version = (m.group(1), m.group(2)) if m else (stem, "unknown")
    return name.replace("_", "-").lower(), version


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return [ln.split(":", 1)[1].strip() for ln in lines
            if ln.startswith("Requires-Dist:") and "extra ==" not in ln]


def write_sbom(path: Path, *, name: str, version: str, wheelhouse: Path,
               model: dict[str, Any] | None) -> None:
    """Write the CycloneDX JSON SBOM of a release tree to ``path``."""
    try:
        from cyclonedx.model import HashAlgorithm, HashType, Property
        from cyclonedx.model.bom import Bom
        from cyclonedx.model.component import Component, ComponentType
        from cyclonedx.output import make_outputter
        from cyclonedx.schema import OutputFormat, SchemaVersion
        from packageurl import PackageURL
    except ImportError as exc:
        raise BackendUnavailable(f"deploy build: the SBOM needs cyclonedx-python-lib ({exc}); "
                                 f"pip install 'hsi-edge[deploy]'") from None

    app = Component(name=name, version=version, type=ComponentType.APPLICATION,
                    bom_ref=f"{name}@{version}")
    bom = Bom()
    bom.metadata.component = app
    hsi_wheel = None
    for f in sorted(wheelhouse.iterdir()):
        pkg, ver = _name_version(f)
        if pkg == "hsi-edge":
            hsi_wheel = f
        bom.components.add(Component(
            name=pkg, version=ver, type=ComponentType.LIBRARY, bom_ref=f"pypi:{pkg}@{ver}",
            purl=PackageURL(type="pypi", name=pkg, version=ver),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256_file(f))],
            properties=[Property(name="hsi-edge:file", value=f"wheelhouse/{f.name}")]))
    shipped = {_name_version(f)[0] for f in wheelhouse.iterdir()}
    if hsi_wheel is not None and hsi_wheel.suffix == ".whl":
        for req in _requires(hsi_wheel):
            pkg = re.split(r"[<>=!~;\[ ]", req, 1)[0].replace("_", "-").lower()
            if pkg not in shipped:
                bom.components.add(Component(
                    name=pkg, type=ComponentType.LIBRARY, bom_ref=f"unit:{pkg}",
                    purl=PackageURL(type="pypi", name=pkg), description=f"requirement {req}",
                    properties=[Property(name="hsi-edge:provided-by", value="unit")]))
    if model:
        bom.components.add(Component(
            name=model["name"], type=ComponentType.MACHINE_LEARNING_MODEL,
            bom_ref=f"model:{model['name']}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=model["onnx_sha256"])],
            properties=[Property(name="hsi-edge:file", value=model["onnx"]),
                        Property(name="hsi-edge:precision",
                                 value=model["engine"]["precision"])]))
    bom.register_dependency(app, list(bom.components))
    out = make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_5)
    path.write_text(out.output_as_string(indent=1) + "\n")
