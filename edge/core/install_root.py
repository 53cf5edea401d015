"""Reading a unit's install root (``/opt/hsi-edge``): its release links and release registry.

``deploy.unit.Unit`` writes these (under its lock and journal); the service page's status
only reads them.  Both read through here, so the layout is described once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["LINKS", "REGISTRY", "link_version", "read_registry"]

#: The release links at the root: ``current`` and ``previous`` -> ``releases/<version>``.
LINKS = ("current", "previous")
#: The release registry under the root (version -> ``{"state": ..., "time": ...}``).
REGISTRY = Path("state") / "releases.json"


def link_version(link: str | os.PathLike) -> str | None:
    """The release version a link names (its target's last part); None when there is no link.

    Whether ``releases/<version>`` exists is not checked (a dangling link still names it).
    """
    try:
        return Path(os.readlink(link)).name
    except OSError:
        return None


def read_registry(path: str | os.PathLike) -> dict[str, Any]:
    """The release registry at ``path``; ``{}`` when there is none.

    Raises
    ------
    ValueError
        Not UTF-8 JSON, or not a JSON object (a damaged registry: the file is written
        atomically, so this is never an interrupted write).
    OSError
        The file exists but cannot be read.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    return doc
