"""Which recordings a corpus holds, and the fingerprint that says a result is still current.

A corpus is either

- a folder tree: every folder below it that holds a ``recording.json`` (written by
  :class:`drivers.recorder.Recorder`, e.g. ``hsi-edge simulate``) is one recording; its
  calibration record is the ``calibration/`` folder beside the frames when there is one.  A
  folder with TIVITA cubes (``*_SpecCube.dat``, as in htc's ``subject/timestamp/`` layout) is
  one recording too (reflectance: no calibration record needed);
- a manifest (YAML) listing recordings and their calibration records::

      recordings:
        - path: site-a/case-001            # relative to the manifest (or absolute)
          calibration: site-a/cal-0317     # optional: a record folder; default
                                           # <path>/calibration when it exists
          id: case-001                     # optional: default the path as written

  A manifest may list any recording ``hsi-edge run`` replays (NPZ folder, TIVITA ``.dat``,
  ENVI ``.hdr``, ``.npy`` stack).

The recording id (its path relative to the corpus, ``/``-separated) names its result files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge import __version__
from edge.errors import ConfigError

__all__ = ["Recording", "discover", "recording_fingerprint", "config_hash", "model_hash",
           "safe_name", "recorded_preset"]

MANIFEST_KEYS = {"path", "calibration", "id"}
#: TIVITA cube files (htc's ``subject/timestamp/<timestamp>_SpecCube.dat`` layout).
TIVITA_SUFFIX = "_SpecCube.dat"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Recording:
    """One recording of a corpus.

    Attributes
    ----------
    id : str
        Stable name within the corpus (``/``-separated relative path or the manifest's id).
    path : str
        Absolute path of the recording (folder or file), as workers open it.
    calibration : str or None
        Absolute path of its calibration record folder; None when it has none.
    """

    id: str
    path: str
    calibration: str | None


def safe_name(rec_id: str) -> str:
    """File-name form of a recording id (``a/b c`` -> ``a__b_c``), plus a short hash so two
    ids that map to the same characters never share a result file."""
    digest = hashlib.sha256(rec_id.encode("utf-8")).hexdigest()[:8]
    # no leading dot: '../x' must not become a hidden file (or '..')
    stem = _UNSAFE.sub("_", rec_id.replace("/", "__")).strip("._")[:80] or "recording"
    return f"{stem}-{digest}"


def _default_calibration(path: Path) -> str | None:
    cal = path / "calibration"
    return str(cal) if (cal / "record.yaml").is_file() else None


def discover(corpus: str | os.PathLike) -> list[Recording]:
    """The recordings of ``corpus`` (folder tree or manifest YAML), sorted by id.

    Raises
    ------
    ConfigError
        ``corpus`` does not exist, holds no recording, or the manifest is malformed (names
        the file, the entry and the key).
    """
    root = Path(corpus)
    if not root.exists():
        raise ConfigError(f"CORPUS: {str(root)!r} does not exist (a folder of recordings or a "
                          "manifest .yaml)")
    if root.is_file():
        recs = _from_manifest(root)
    else:
        recs = _from_tree(root)
    if not recs:
        raise ConfigError(f"CORPUS: no recordings in {str(root)!r} (expected folders with a "
                          "recording.json, or a manifest listing them)")
    return sorted(recs, key=lambda r: r.id)


def _from_tree(root: Path) -> list[Recording]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        # hidden folders are the recorder's staging/old copies; calibration holds no frames
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "calibration")
        tivita = any(f.endswith(TIVITA_SUFFIX) for f in filenames)
        if "recording.json" in filenames or tivita:
            path = Path(dirpath).resolve()
            rel = Path(dirpath).relative_to(root).as_posix()
            out.append(Recording(rel if rel != "." else path.name, str(path),
                                 _default_calibration(path)))
            dirnames[:] = []  # a recording does not hold further recordings
    return out


def _from_manifest(path: Path) -> list[Recording]:
    from edge.core.config import load_yaml

    doc = load_yaml(path, what="corpus manifest")
    entries = doc.get("recordings") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: recordings: expected a list of recordings, got "
                          f"{type(entries).__name__ if isinstance(doc, dict) else type(doc).__name__}")
    base = path.resolve().parent
    out: list[Recording] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{path}: recordings[{i}]"
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping with 'path', got "
                              f"{type(entry).__name__}")
        unknown = set(entry) - MANIFEST_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                              f"allowed: {', '.join(sorted(MANIFEST_KEYS))}")
        for key in MANIFEST_KEYS & set(entry):
            if not isinstance(entry[key], str) or not entry[key]:
                raise ConfigError(f"{where}.{key}: expected a non-empty string, got "
                                  f"{entry[key]!r}")
        if "path" not in entry:
            raise ConfigError(f"{where}.path: required (the recording's folder or file)")
        rec_path = (base / entry["path"]).resolve()
        cal = entry.get("calibration")
        calibration = str((base / cal).resolve()) if cal else _default_calibration(rec_path)
        rec_id = entry.get("id", entry["path"])
        if rec_id in seen:
            raise ConfigError(f"{where}.id: {rec_id!r} is listed twice; ids must be unique")
        seen.add(rec_id)
        out.append(Recording(rec_id, str(rec_path), calibration))
    return out


def recorded_preset(rec: Recording) -> str | None:
    """The camera preset named by the recording's ``recording.json`` (None if unknown)."""
    try:
        doc = json.loads((Path(rec.path) / "recording.json").read_text(encoding="utf-8"))
        return (doc.get("camera") or {}).get("preset")
    except (OSError, ValueError, AttributeError):
        return None


def _stat_list(path: Path) -> list[Any]:
    """(relative name, size, mtime_ns) of every file of ``path`` (a folder or one file)."""
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    if not path.is_dir():
        return [["<missing>", -1, -1]]
    items = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:
                continue
            items.append([p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
    return items


def recording_fingerprint(rec: Recording, cfg_hash: str, mdl_hash: str) -> str:
    """sha256 over the recording's path and files (size, mtime), its calibration record's,
    the config hash, the model hash and the hsi-edge version: a result with the same
    fingerprint need not be computed again."""
    doc = {"id": rec.id, "path": rec.path, "files": _stat_list(Path(rec.path)),
           "calibration": rec.calibration,
           "calibration_files": _stat_list(Path(rec.calibration)) if rec.calibration else None,
           "config": cfg_hash, "model": mdl_hash, "version": __version__}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()


def config_hash(cfg: Any) -> str:
    """sha256 of a (frozen dataclass) configuration, canonical JSON."""
    return hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True, default=str)
                          .encode("utf-8")).hexdigest()


def model_hash(card_path: str | os.PathLike | None) -> str:
    """sha256 over a model card file and its ONNX content ("none" without a model).

    A card or model that cannot be read hashes to a marker naming the problem; the task then
    reports the error itself.
    """
    if card_path is None:
        return "none"
    from edge.core.fileio import sha256_file

    card = Path(card_path)
    try:
        h = hashlib.sha256(sha256_file(card).encode("ascii"))
        from edge.inference import load_model_card
        from edge.inference.onnx_hash import onnx_content_sha256
        onnx = load_model_card(card, verify_hash=False).onnx_path
        h.update(onnx_content_sha256(onnx).encode("ascii"))
        return h.hexdigest()
    except Exception as exc:  # noqa: BLE001 - reported by the task, not here
        return f"unreadable:{type(exc).__name__}"
