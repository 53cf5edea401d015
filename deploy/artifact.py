"""Read and verify a Mender Artifact (format v3) in Python: no Go tool on the unit.

The outer tar holds, in this order (mender-artifact ``Documentation/artifact-format-v3.md``,
checked against what ``mender-artifact`` 3.9 writes)::

    version            {"format":"mender","version":3}
    manifest           "<sha256>  <name>" per line: version, header.tar.gz, data/0000/<file>
    manifest.sig       base64 signature of ``manifest``: RSA PKCS#1 v1.5 / SHA-256, or
                       ECDSA P-256 / SHA-256 as raw r||s (64 bytes; DER also accepted)
    header.tar.gz      header-info, headers/0000/type-info, headers/0000/meta-data
    data/0000.tar.gz   the payload files (for hsi-edge: hsi-edge-manifest.json, release.tar)

:class:`ArtifactReader` checks, in order and before anything is written on the unit: the
signature over ``manifest`` against the trusted keys, the sha256 of ``version`` and of the
header, the header's payload type and its meta-data.  The payload is then streamed
(:meth:`ArtifactReader.payload`): each file is hashed as it is read and compared with the
signed manifest at its end, so a consumer that stages it must discard what it wrote when the
stream raises.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from deploy import MANIFEST_NAME, PAYLOAD_TYPE, TREE_NAME
from edge.errors import BundleError, ConfigError

__all__ = ["ArtifactReader", "ArtifactHeader", "HashingReader", "load_public_keys",
           "parse_inner_manifest", "key_fingerprint"]

log = logging.getLogger(__name__)

_VERSION_DOC = {"format": "mender", "version": 3}
_HEADER_NAMES = ("header.tar.gz", "header.tar", "header.tar.xz", "header.tar.zst")


def load_public_keys(paths: list[str | os.PathLike]) -> list[Any]:
    """PEM public keys (RSA or EC P-256) from files or folders of ``*.pem``/``*.pub`` files.

    Raises
    ------
    ConfigError
        No key given, a file that is missing or is not a supported PEM public key.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix in (".pem", ".pub"))
        else:
            files.append(p)
    if not files:
        raise ConfigError("--trust: no public key given (expected PEM files of RSA or "
                          "ECDSA P-256 public keys, or a folder of them)")
    keys = []
    for f in files:
        try:
            key = load_pem_public_key(f.read_bytes())
        except OSError as exc:
            raise ConfigError(f"--trust: cannot read {f}: {exc.strerror or exc}") from None
        except ValueError:
            raise ConfigError(f"--trust: {f} is not a PEM public key (a private key or "
                              f"another format?)") from None
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name != "secp256r1":
            raise ConfigError(f"--trust: {f}: EC curve {key.curve.name} is not supported "
                              f"(Mender signs with P-256)")
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise ConfigError(f"--trust: {f}: {type(key).__name__} is not supported "
                              f"(RSA or ECDSA P-256)")
        keys.append(key)
    return keys


def key_fingerprint(key: Any) -> str:
    """sha256 of the key's DER SubjectPublicKeyInfo (first 16 hex digits)."""
    from cryptography.hazmat.primitives import serialization
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def _signature_ok(key: Any, message: bytes, sig_b64: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        sig = base64.b64decode(sig_b64.strip(), validate=True)
    except ValueError:
        return False
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if len(sig) == 64:  # Mender's raw r||s
                sig = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                           int.from_bytes(sig[32:], "big"))
            key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes what passes through it (sha256) and counts bytes."""

    def __init__(self, raw: IO[bytes], name: str = "", expected: str | None = None):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self.name, self.expected = name, expected

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        data = self.raw.read(len(buf))
        n = len(data)
        buf[:n] = data
        self.sha.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def read_verified(self) -> bytes:
        """All of the stream, after its sha256 matched the signed manifest."""
        data = self.read()
        got = self.sha.hexdigest()
        if self.expected is not None and got != self.expected:
            raise BundleError(f"{self.name}: sha256 {got[:16]}... does not match the signed "
                              f"manifest ({self.expected[:16]}...): the file was altered")
        return data


@dataclass
class ArtifactHeader:
    """What the verified header says."""

    name: str
    device_types: list[str]
    provides: dict[str, Any]
    meta: dict[str, Any]
    payload_files: list[str]
    signer: str
    digests: dict[str, str] = field(default_factory=dict)


class ArtifactReader:
    """Verify an artifact's signature and header, then stream its payload.

    Parameters
    ----------
    path : path of the ``.mender`` file
    trust : list of public keys (:func:`load_public_keys`)

    Use::

        reader = ArtifactReader(path, keys)
        header = reader.header          # signature + header verified
        for name, stream in reader.payload():
            ...                         # stream.read(); BundleError at its end if altered
    """

    def __init__(self, path: str | os.PathLike, trust: list[Any]):
        self.path = Path(path)
        self.trust = trust
        self._tar: tarfile.TarFile | None = None
        self._header: ArtifactHeader | None = None

    # -- outer tar --------------------------------------------------------------------------
    def _open(self) -> tarfile.TarFile:
        try:
            return tarfile.open(self.path, mode="r|")
        except FileNotFoundError:
            raise BundleError(f"{self.path}: no such file") from None
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{self.path}: not a Mender artifact (not a tar file: {exc})"
                              ) from None

    def _next(self, tar: tarfile.TarFile, want: tuple[str, ...]) -> tarfile.TarInfo:
        try:
            member = tar.next()
        except tarfile.TarError as exc:
            raise BundleError(f"{self.path}: damaged tar after {want[0]!r}: {exc}") from None
        if member is None or member.name not in want:
            got = "end of file" if member is None else repr(member.name)
            raise BundleError(f"{self.path}: expected {want[0]!r} in the artifact, got {got} "
                              f"(Mender artifact v3 order: version, manifest, manifest.sig, "
                              f"header, data)")
        return member

    @staticmethod
    def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int = 16 << 20) -> bytes:
        if member.size > limit:
            raise BundleError(f"artifact: {member.name} is {member.size} bytes, more than "
                              f"the {limit} allowed")
        f = tar.extractfile(member)
        return f.read() if f else b""

    @property
    def header(self) -> ArtifactHeader:
        if self._header is None:
            self._header = self._verify_header()
        return self._header

    def _verify_header(self) -> ArtifactHeader:
        tar = self._open()
        self._tar = tar
        version = self._read(tar, self._next(tar, ("version",)))
        try:
            vdoc = json.loads(version)
        except ValueError:
            vdoc = None
        if vdoc != _VERSION_DOC:
            raise BundleError(f"{self.path}: version: expected {json.dumps(_VERSION_DOC)}, got "
                              f"{version[:80]!r}")
        manifest = self._read(tar, self._next(tar, ("manifest",)))
        sig_member = self._next(tar, ("manifest.sig",) + _HEADER_NAMES)
        if sig_member.name != "manifest.sig":
            raise BundleError(f"{self.path}: the artifact is not signed (no manifest.sig); "
                              f"sign it with mender-artifact write ... -k KEY")
        sig = self._read(tar, sig_member)
        signer = next((k for k in self.trust if _signature_ok(k, manifest, sig)), None)
        if signer is None:
            raise BundleError(f"{self.path}: manifest.sig: the signature does not verify "
                              f"against any of the {len(self.trust)} trusted key(s) (signed by "
                              f"an unknown key, or the manifest was altered)")
        digests = self._parse_manifest(manifest)
        self._check(digests, "version", hashlib.sha256(version).hexdigest())
        hdr_member = self._next(tar, _HEADER_NAMES)
        raw = self._read(tar, hdr_member)
        self._check(digests, hdr_member.name, hashlib.sha256(raw).hexdigest())
        files = self._parse_header(raw, hdr_member.name)
        payload = sorted(n[len("data/0000/"):] for n in digests if n.startswith("data/0000/"))
        if sorted(files["payload_files"]) != payload and files["payload_files"]:
            log.debug("header lists no files; using the manifest's")
        info, type_info, meta = files["header-info"], files["type-info"], files["meta-data"]
        header = ArtifactHeader(
            name=str(info.get("artifact_provides", {}).get("artifact_name", "")),
            device_types=list(info.get("artifact_depends", {}).get("device_type", [])),
            provides=dict(type_info.get("artifact_provides") or {}), meta=meta,
            payload_files=payload, signer=key_fingerprint(signer), digests=digests)
        log.info("artifact %s: signature by key %s and header verified", header.name,
                 header.signer)
        return header

    def _parse_manifest(self, manifest: bytes) -> dict[str, str]:
        digests: dict[str, str] = {}
        for line in manifest.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) != 2 or len(parts[0]) != 64:
                raise BundleError(f"{self.path}: manifest: malformed line {line[:100]!r}")
            digests[parts[1]] = parts[0]
        return digests

    def _check(self, digests: dict[str, str], name: str, got: str) -> None:
        want = digests.get(name)
        if want is None:
            raise BundleError(f"{self.path}: manifest: no checksum for {name!r}")
        if want != got:
            raise BundleError(f"{self.path}: {name}: sha256 {got[:16]}... does not match the "
                              f"signed manifest ({want[:16]}...): the file was altered")

    def _parse_header(self, raw: bytes, name: str) -> dict[str, Any]:
        mode = "r:gz" if name.endswith(".gz") else "r:xz" if name.endswith(".xz") else "r:"
        if name.endswith(".zst"):
            raise BundleError(f"{self.path}: {name}: zstd headers are not supported; write "
                              f"the artifact with --compression gzip")
        docs: dict[str, Any] = {"type-info": {}, "meta-data": {}, "payload_files": []}
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode=mode) as htar:
                for m in htar:
                    if not m.isfile():
                        continue
                    data = htar.extractfile(m).read()  # type: ignore[union-attr]
                    key = {"header-info": "header-info", "headers/0000/type-info": "type-info",
                           "headers/0000/meta-data": "meta-data"}.get(m.name)
                    if key:
                        docs[key] = json.loads(data) if data.strip() else {}
                    elif m.name.startswith("headers/0001"):
                        raise BundleError(f"{self.path}: header: more than one payload; an "
                                          f"hsi-edge release has exactly one")
        except (tarfile.TarError, ValueError, EOFError) as exc:
            raise BundleError(f"{self.path}: {name}: cannot read the header: {exc}") from None
        if "header-info" not in docs:
            raise BundleError(f"{self.path}: {name}: no header-info")
        types = [p.get("type") for p in docs["header-info"].get("payloads", [])]
        if types != [PAYLOAD_TYPE]:
            raise BundleError(f"{self.path}: header-info: payload type {types}, expected "
                              f"[{PAYLOAD_TYPE!r}] (an artifact for another update module)")
        return docs

    # -- payload ----------------------------------------------------------------------------
    def payload(self) -> Iterator[tuple[str, HashingReader]]:
        """Yield ``(file name, stream)`` for each payload file, in artifact order.

        The caller reads each stream (fully or not; the rest is drained); when it is done
        the file's sha256 and size are compared with the signed manifest, and a mismatch
        raises :class:`BundleError` naming the file.  Files the manifest does not list, or
        listed files that are missing, raise too.
        """
        header = self.header
        tar = self._tar
        assert tar is not None
        member = self._next(tar, ("data/0000.tar.gz", "data/0000.tar", "data/0000.tar.xz"))
        outer = tar.extractfile(member)
        wrapped = HashingReader(outer)  # type: ignore[arg-type]
        mode = ("r|gz" if member.name.endswith(".gz") else
                "r|xz" if member.name.endswith(".xz") else "r|")
        seen = []
        try:
            with tarfile.open(fileobj=io.BufferedReader(wrapped, 1 << 16), mode=mode) as data:
                for m in data:
                    name = f"data/0000/{m.name}"
                    if not m.isfile() or name not in header.digests:
                        raise BundleError(f"{self.path}: payload file {m.name!r} is not in the "
                                          f"signed manifest")
                    stream = HashingReader(data.extractfile(m), name,  # type: ignore[arg-type]
                                           header.digests[name])
                    yield m.name, stream
                    stream.drain()
                    self._check(header.digests, name, stream.sha.hexdigest())
                    seen.append(m.name)
        except (tarfile.TarError, EOFError, OSError) as exc:  # zlib.error is not an OSError
            raise BundleError(f"{self.path}: {member.name}: damaged payload: {exc}") from None
        except Exception as exc:
            if type(exc).__name__ == "error" and type(exc).__module__ == "zlib":
                raise BundleError(f"{self.path}: {member.name}: damaged payload: {exc}"
                                  ) from None
            raise
        missing = sorted(set(header.payload_files) - set(seen))
        if missing:
            raise BundleError(f"{self.path}: payload files missing: {', '.join(missing)}")

    def read_all(self) -> dict[str, Any]:
        """Verify everything without writing anything; returns the inner manifest.

        Each file of the release tree is hashed against the inner manifest too.
        """
        inner = None
        for name, stream in self.payload():
            if name == MANIFEST_NAME:
                inner = parse_inner_manifest(stream.read_verified(), self.path)
            elif name == TREE_NAME:
                if inner is None:
                    raise BundleError(f"{self.path}: {TREE_NAME} before {MANIFEST_NAME}")
                from deploy.payload import iter_tree_verified
                for _ in iter_tree_verified(stream, inner, None):
                    pass
        if inner is None:
            raise BundleError(f"{self.path}: no {MANIFEST_NAME} in the payload")
        return inner


def parse_inner_manifest(raw: bytes, where: Any) -> dict[str, Any]:
    """The inner manifest (JSON) with its required keys checked."""
    from deploy import RELEASE_FORMAT
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{where}: {MANIFEST_NAME}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != RELEASE_FORMAT:
        raise BundleError(f"{where}: {MANIFEST_NAME}: format is not {RELEASE_FORMAT!r}")
    for key in ("version", "security_version", "target", "files", "model"):
        if key not in doc:
            raise BundleError(f"{where}: {MANIFEST_NAME}: missing key {key!r}")
    return doc
