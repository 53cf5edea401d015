"""Fixtures of the calibration tests."""

from __future__ import annotations

import pytest

from bench_camera import BenchCamera


@pytest.fixture
def bench_camera():
    return BenchCamera()
