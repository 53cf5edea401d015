"""The install root's links and registry, as deploy and the service page read them."""

from __future__ import annotations

import os

import pytest

from deploy.unit import Unit
from edge.core.install_root import REGISTRY, link_version, read_registry
from edge.errors import BundleError


def test_links_name_their_version_and_the_unit_drops_dangling_ones(tmp_path):
    (tmp_path / "releases" / "1.0.0").mkdir(parents=True)
    os.symlink("releases/1.0.0", tmp_path / "current")
    os.symlink("releases/0.9.0", tmp_path / "previous")      # removed release
    assert link_version(tmp_path / "current") == "1.0.0"
    assert link_version(tmp_path / "previous") == "0.9.0"
    assert link_version(tmp_path / "nothing") is None
    unit = Unit(tmp_path)
    assert unit.link_target(unit.current) == "1.0.0"
    assert unit.link_target(unit.previous) is None


def test_registry_absent_is_empty_and_damaged_is_refused(tmp_path):
    assert read_registry(tmp_path / REGISTRY) == {}
    (tmp_path / "state").mkdir()
    (tmp_path / REGISTRY).write_text('["1.0.0"]')
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        read_registry(tmp_path / REGISTRY)
    with pytest.raises(BundleError, match=r"releases\.json: damaged release registry"):
        Unit(tmp_path).registry()
