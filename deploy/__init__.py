"""Releases for edge units: build, verify, install, self-test, roll back.

A release is a Mender Artifact (format v3) of module type ``hsi-edge``, written and signed by
the real ``mender-artifact`` tool (:mod:`deploy.release`), verified in Python with no Go tool
on the unit (:mod:`deploy.artifact`, :mod:`deploy.facts`), installed side by side with the
running release and switched atomically under a journal (:mod:`deploy.install`), and gated by
the self-test (:mod:`deploy.selftest`, golden fixtures from :mod:`deploy.golden`).

On-disk layout of a unit (``--root DIR``; ``/opt/hsi-edge`` on a unit)::

    DIR/releases/<version>/      one installed release (manifest.json, venv/, model/, ...)
    DIR/releases/<version>.tmp/  a release being staged (removed by the next call if stale)
    DIR/current -> releases/<v>  the release that runs (switched with one rename)
    DIR/previous -> releases/<u> the release a rollback returns to
    DIR/state/                   journal.json, releases.json (committed/pending/bad)
    DIR/unit/                    per-unit data, never touched by install/rollback/gc
                                 (``/var/lib/hsi-edge`` on a unit): identity.yaml,
                                 calibration/, engines/, logs/, selftest/, security_version,
                                 format_version, trusted-keys/

Imports: ``deploy`` sits above the pipeline (DESIGN.md layering); nothing below imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Mender payload type (= name of the update module on the unit).
PAYLOAD_TYPE = "hsi-edge"
#: Format tag of the inner manifest and of release YAML files.
RELEASE_FORMAT = "hsi-edge-release/1"
#: Payload file names inside ``data/0000.tar.gz`` (in this order).
MANIFEST_NAME = "hsi-edge-manifest.json"
TREE_NAME = "release.tar"
#: Version of the per-unit data layout this code reads and writes (see install.migrate_unit).
UNIT_FORMAT_VERSION = 1

#: The install root when neither ``--root`` nor ``$HSI_EDGE_ROOT`` names one.
DEFAULT_ROOT = "/opt/hsi-edge"

__all__ = ["PAYLOAD_TYPE", "RELEASE_FORMAT", "MANIFEST_NAME", "TREE_NAME", "UNIT_FORMAT_VERSION",
           "DEFAULT_ROOT", "default_root", "default_unit_dir", "unit_dir_of"]


def default_root() -> str:
    """The install root of the CLI's ``--root``: ``$HSI_EDGE_ROOT``, else :data:`DEFAULT_ROOT`."""
    return os.environ.get("HSI_EDGE_ROOT", DEFAULT_ROOT)


def default_unit_dir() -> str | None:
    """The CLI's ``--unit-dir``: ``$HSI_EDGE_UNIT_DIR``, else None (then :func:`unit_dir_of`)."""
    return os.environ.get("HSI_EDGE_UNIT_DIR")


def unit_dir_of(root: str | os.PathLike, unit_dir: str | os.PathLike | None = None) -> Path:
    """The per-unit data folder: ``unit_dir`` when given, else ``ROOT/unit`` (absolute)."""
    return Path(unit_dir).absolute() if unit_dir else Path(root).absolute() / "unit"
