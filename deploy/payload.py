"""The payload side of a release: the release tree checked file by file against the inner
manifest (:func:`iter_tree_verified`), and the payload as a Mender update module receives it
(:class:`ModuleWorkDir`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import IO, Any, Iterator

from deploy import MANIFEST_NAME, PAYLOAD_TYPE, TREE_NAME
from deploy.artifact import ArtifactHeader, HashingReader
from edge.errors import BundleError

__all__ = ["iter_tree_verified", "ModuleWorkDir"]


def _safe_rel(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and ".." not in parts and "" not in parts


def iter_tree_verified(stream: IO[bytes], inner: dict[str, Any], dest: Path | None
                       ) -> Iterator[str]:
    """Read ``release.tar`` from ``stream``; check each file against the inner manifest.

    With ``dest``, each file is written below it (mode from the manifest, fsync'ed) as it is
    hashed.  Yields each file's path after it checked out.

    Raises
    ------
    BundleError
        A file not in the manifest, not a regular file, outside the tree, with another size
        or sha256, or a manifest file missing from the tar (names the file).
    """
    want = {f["path"]: f for f in inner["files"]}
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream, 1 << 16), mode="r|") as tar:  # type: ignore[arg-type]
            for m in tar:
                entry = want.get(m.name)
                if entry is None or m.name in seen or not _safe_rel(m.name) or not m.isfile():
                    raise BundleError(f"{TREE_NAME}: {m.name!r} is not a file of the release "
                                      f"manifest")
                src = tar.extractfile(m)
                h = hashlib.sha256()
                size = 0
                out = None
                if dest is not None:
                    target = dest / m.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    out = open(target, "wb")
                try:
                    for chunk in iter(lambda: src.read(1 << 20), b""):  # type: ignore[union-attr]
                        h.update(chunk)
                        size += len(chunk)
                        if out is not None:
                            out.write(chunk)
                    if out is not None:
                        out.flush()
                        os.fsync(out.fileno())
                finally:
                    if out is not None:
                        out.close()
                if size != entry["size"] or h.hexdigest() != entry["sha256"]:
                    raise BundleError(f"{TREE_NAME}: {m.name}: size {size} / sha256 "
                                      f"{h.hexdigest()[:16]}... do not match the release "
                                      f"manifest ({entry['size']} / {entry['sha256'][:16]}...)")
                if dest is not None:
                    os.chmod(dest / m.name, int(entry["mode"], 8))
                seen.add(m.name)
                yield m.name
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{TREE_NAME}: damaged: {exc}") from None
    missing = sorted(set(want) - seen)
    if missing:
        raise BundleError(f"{TREE_NAME}: files of the manifest missing: "
                          f"{', '.join(missing[:5])}")



class ModuleWorkDir:
    """The payload as a Mender update module sees it: ``DIR/header/{header-info, type-info,
    meta-data}`` and ``DIR/files/<payload files>`` (update-modules-v3 file API).

    The Mender client has verified the signature (its ``ArtifactVerifyKey``) and every
    payload checksum before ArtifactInstall; the inner manifest then checks every file of
    the release tree as :class:`ArtifactReader` does.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        hdr = self.path / "header"
        try:
            info = json.loads((hdr / "header-info").read_text())
            type_info = json.loads((hdr / "type-info").read_text())
            meta_text = (hdr / "meta-data").read_text() if (hdr / "meta-data").exists() else ""
        except (OSError, ValueError) as exc:
            raise BundleError(f"{self.path}: not a Mender update module folder: {exc}") from None
        types = [p.get("type") for p in info.get("payloads", [])]
        if types and types != [PAYLOAD_TYPE]:
            raise BundleError(f"{self.path}: payload type {types}, expected [{PAYLOAD_TYPE!r}]")
        self.header = ArtifactHeader(
            name=str(info.get("artifact_provides", {}).get("artifact_name", "")),
            device_types=list(info.get("artifact_depends", {}).get("device_type", [])),
            provides=dict(type_info.get("artifact_provides") or {}),
            meta=json.loads(meta_text) if meta_text.strip() else {},
            payload_files=[MANIFEST_NAME, TREE_NAME], signer="mender-client")

    def payload(self) -> Iterator[tuple[str, HashingReader]]:
        for name in (MANIFEST_NAME, TREE_NAME):
            try:
                f = open(self.path / "files" / name, "rb")
            except OSError as exc:
                raise BundleError(f"{self.path}: payload file {name}: {exc.strerror}") from None
            with f:
                yield name, HashingReader(f, f"files/{name}")
