"""``hsi-edge deploy verify``: every check a unit makes before it installs a release.

Order (each refusal is one line naming what did not match, and comes before anything is
written): signature and header checksums (:class:`deploy.artifact.ArtifactReader`) -> target
constraints of the header against the unit's facts (:func:`deploy.facts.check_target`) ->
anti-downgrade (the release's security version against the one stored in the unit data
folder) -> every payload checksum, the inner manifest (which must agree with the header)
and every file of the release tree.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

from deploy import MANIFEST_NAME, RELEASE_FORMAT, TREE_NAME
from deploy.artifact import ArtifactReader, parse_inner_manifest
from deploy.payload import iter_tree_verified
from deploy.facts import UnitFacts, check_target
from deploy.release import target_from_meta
from edge.errors import BundleError

__all__ = ["check_header", "read_payload", "verify_artifact", "security_floor",
           "SECURITY_FILE"]

log = logging.getLogger(__name__)

#: In the unit data folder: the lowest security version this unit accepts (raised on commit).
SECURITY_FILE = "security_version"


def security_floor(unit_dir: Path | None) -> int:
    """The stored security version (0 when none is stored)."""
    if unit_dir is None:
        return 0
    try:
        text = (Path(unit_dir) / SECURITY_FILE).read_text().strip()
    except FileNotFoundError:
        return 0
    try:
        return int(text)
    except ValueError:
        raise BundleError(f"{Path(unit_dir) / SECURITY_FILE}: expected an integer, got "
                          f"{text[:40]!r}") from None


def check_header(reader: ArtifactReader, facts: UnitFacts, unit_dir: Path | None
                 ) -> dict[str, Any]:
    """Signature, header, target and anti-downgrade; returns the header meta-data."""
    h = reader.header
    meta = h.meta
    if meta.get("format") != RELEASE_FORMAT:
        raise BundleError(f"{reader.path}: header meta-data format {meta.get('format')!r} is "
                          f"not {RELEASE_FORMAT!r} (not an hsi-edge release)")
    reasons = check_target(target_from_meta(meta), h.device_types, facts)
    if reasons:
        raise BundleError(f"{reader.path}: not for this unit: " + "; ".join(reasons))
    floor = security_floor(unit_dir)
    sv = meta.get("security_version")
    if not isinstance(sv, int) or sv < floor:
        raise BundleError(f"{reader.path}: security_version {sv} is lower than this unit's "
                          f"{floor} (anti-downgrade: a release with a fixed vulnerability "
                          f"cannot be replaced by an older one)")
    return meta


def read_payload(reader: ArtifactReader, meta: dict[str, Any], dest: Path | None = None,
                 on_file: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Stream the payload, verifying it; with ``dest``, extract the tree below it.

    Returns the inner manifest.  ``on_file`` is called after each verified tree file.
    """
    inner = None
    for name, stream in reader.payload():
        if name == MANIFEST_NAME:
            inner = parse_inner_manifest(stream.read_verified(), reader.path)
            _agree(inner, meta, reader)
        elif name == TREE_NAME:
            if inner is None:
                raise BundleError(f"{reader.path}: {TREE_NAME} comes before {MANIFEST_NAME}")
            for path in iter_tree_verified(stream, inner, dest):
                if on_file:
                    on_file(path)
        else:
            raise BundleError(f"{reader.path}: unexpected payload file {name!r}")
    if inner is None:
        raise BundleError(f"{reader.path}: no {MANIFEST_NAME} in the payload")
    return inner


def _agree(inner: dict[str, Any], meta: dict[str, Any], reader: ArtifactReader) -> None:
    for key in ("version", "security_version"):
        if inner.get(key) != meta.get(key):
            raise BundleError(f"{reader.path}: {MANIFEST_NAME}: {key} {inner.get(key)!r} "
                              f"differs from the header's {meta.get(key)!r}")
    if inner["target"] != target_from_meta(meta):
        raise BundleError(f"{reader.path}: {MANIFEST_NAME}: target differs from the header's")


def verify_artifact(path: str | os.PathLike, keys: list[Any], facts: UnitFacts,
                    unit_dir: Path | None = None) -> dict[str, Any]:
    """Every check, nothing written; returns the inner manifest."""
    reader = ArtifactReader(path, keys)
    meta = check_header(reader, facts, unit_dir)
    inner = read_payload(reader, meta)
    log.info("artifact %s verified: %d files", path, len(inner["files"]))
    return inner
