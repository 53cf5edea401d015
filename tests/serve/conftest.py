"""Fixtures of the service page tests (helpers in serve_scene.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason="the service page needs the 'serve' extra")
pytest.importorskip("uvicorn", reason="the service page needs the 'serve' extra")

from serve_scene import Served  # noqa: E402


@pytest.fixture
def served():
    s = Served()
    try:
        yield s
    finally:
        s.close()
