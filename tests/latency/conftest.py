"""No latency test depends on the real clocks of the machine it runs on: every session (and a
worker subprocess, which inherits the environment) reads the clock state from an empty
recorded folder unless a test gives its own (edge.latency.clocks, ROOT_ENV)."""

from __future__ import annotations

import pytest

from edge.latency.clocks import ROOT_ENV


@pytest.fixture(autouse=True)
def recorded_clocks(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("clocks")
    monkeypatch.setenv(ROOT_ENV, str(root))
    return root
