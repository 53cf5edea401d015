"""Content hash of an ONNX model including its external data files (engine-cache key).

An ONNX model may keep its weights outside the ``.onnx`` file: a ``TensorProto`` with
``data_location = EXTERNAL`` names a file in ``external_data`` (key ``location``, a path
relative to the model's folder; ONNX "External Data" docs, ``onnx.external_data_helper``).
Those weights can change while the ``.onnx`` bytes stay the same, so a key made from the
``.onnx`` file alone would let a stale TensorRT engine be loaded.

:func:`onnx_content_sha256` hashes, in one sha256 stream,

1. the ``.onnx`` bytes, then
2. for each distinct external ``location`` in sorted order: a frame
   ``b"\\0onnx-external\\0" + len(location) (8 bytes LE) + location (UTF-8) + size (8 bytes LE)``
   followed by that file's bytes.

With no external data only step 1 runs, so the result equals
:func:`edge.core.fileio.sha256_file` and engine caches keyed before this module stay valid.

``onnx`` (optional extra) is imported only when the model may reference external data (its
bytes contain ``location``, the key every external-data entry stores verbatim); a model
without it hashes with the standard library alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterator

from edge.errors import BackendUnavailable, DataFormatError

__all__ = ["onnx_content_sha256", "external_data_locations", "confined_path"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Every external-data entry stores this key as raw protobuf string bytes; a file without
# them cannot reference external data, so it needs no parse (and no onnx package).
_MARKER = b"location"
_FRAME = b"\0onnx-external\0"


def _import_onnx():
    try:
        import onnx
        from onnx import external_data_helper
    except ImportError as exc:
        raise BackendUnavailable(
            f"hashing an ONNX model that may store weights in external data files needs the "
            f"'onnx' package ({exc.name or exc} is missing): pip install 'hsi-edge[fp16]' "
            f"(or pip install onnx)") from None
    return onnx, external_data_helper


def _hash_file(h: Any, path: Path, *, scan: bool = False) -> bool:
    """Feed ``path`` into ``h`` in chunks; return whether :data:`_MARKER` occurs (if ``scan``)."""
    found = False
    tail = b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
            if scan and not found:
                # keep the last len-1 bytes so a marker split across two chunks is seen
                found = _MARKER in tail + block
                tail = block[-(len(_MARKER) - 1):]
    return found


def _sub_graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    # Constant values and control-flow bodies (If/Loop/Scan) can hold tensors too.
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        sparse = list(attr.sparse_tensors)
        if attr.HasField("sparse_tensor"):
            sparse.append(attr.sparse_tensor)
        for sp in sparse:
            yield sp.values
            yield sp.indices
        if attr.HasField("g"):
            yield from _sub_graph_tensors(attr.g)
        for g in attr.graphs:
            yield from _sub_graph_tensors(g)


def _model_tensors(model: Any) -> Iterator[Any]:
    yield from _sub_graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def confined_path(owner: Path, location: str, folder: str = "the model's folder"
                  ) -> tuple[Path | None, str]:
    """``location`` as a path inside the folder of the file ``owner``, or why it is not.

    Refused: an empty name, absolute paths (POSIX or Windows, drive letters), any ``..``
    component, and names that resolve outside the folder through a symbolic link.  Used for
    ONNX external data and a model card's ``onnx:`` file.

    Returns
    -------
    (path, problem) : (Path or None, str)
        The path (not resolved) when allowed, else None and a reason for the message.
    """
    if not isinstance(location, str):
        return None, "expected a file name (a string)"
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if (not location or PurePosixPath(location).is_absolute()
            or PureWindowsPath(location).is_absolute() or PureWindowsPath(location).drive
            or ".." in parts):
        return None, (f"is not allowed: expected a path relative to {folder} "
                      f"{str(owner.parent)!r} without '..'")
    base = owner.parent.resolve()
    target = (owner.parent / location).resolve()
    if target != base and base not in target.parents:
        # a symbolic link inside the folder that points elsewhere
        return None, f"resolves to {str(target)!r}, outside {folder} {str(base)!r}"
    return owner.parent / location, ""


def _check_location(model_path: Path, location: str) -> Path:
    """The file ``location`` names, refusing names that leave the model's folder."""
    path, problem = confined_path(model_path, location)
    if path is None:
        raise DataFormatError(f"{model_path}: external data location {location!r} {problem}")
    target = path.resolve()
    if not target.is_file():
        raise DataFormatError(
            f"{model_path}: external data file {location!r} not found (looked for "
            f"{str(model_path.parent / location)!r}); copy it next to the model")
    return model_path.parent / location


def external_data_locations(path: str | os.PathLike) -> list[str]:
    """Distinct external-data ``location`` strings of the model at ``path``, sorted.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file.

    Returns
    -------
    list of str
        Empty when no tensor stores its data externally.

    Raises
    ------
    BackendUnavailable
        The ``onnx`` package is missing.
    DataFormatError
        The file is not a readable ONNX model.
    """
    onnx, helper = _import_onnx()
    path = Path(path)
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, onnx's own errors
        raise DataFormatError(f"{path}: not a readable ONNX model: {exc}"[:400]) from None
    found = {helper.ExternalDataInfo(t).location for t in _model_tensors(model)
             if helper.uses_external_data(t)}
    return sorted(found)


def onnx_content_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of an ONNX model and every external data file it references.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file.

    Returns
    -------
    str
        64 lowercase hex digits; equal to ``sha256_file(path)`` when the model has no external
        data (see the module docstring for the byte layout).

    Raises
    ------
    DataFormatError
        An external data file is missing, or its location is absolute, contains ``..`` or
        resolves outside the model's folder; or a model that mentions ``location`` does not
        parse as ONNX.
    BackendUnavailable
        The model may reference external data and the ``onnx`` package is missing.
    OSError
        The ``.onnx`` file itself cannot be read.
    """
    path = Path(path)
    h = hashlib.sha256()
    if not _hash_file(h, path, scan=True):
        return h.hexdigest()
    locations = external_data_locations(path)
    for location in locations:
        data = _check_location(path, location)
        name = location.encode("utf-8")
        size = data.stat().st_size
        h.update(_FRAME + struct.pack("<Q", len(name)) + name + struct.pack("<Q", size))
        _hash_file(h, data)
    if locations:
        log.debug("%s: hashed with %d external data file(s)", path, len(locations))
    return h.hexdigest()
