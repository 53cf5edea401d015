"""Out of memory is one line, not numpy's traceback (issue 15 item 16: large rows/cols under a
memory limit)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
import yaml


def _limit_address_space():  # runs in the child before exec
    two_gib = 2 << 30
    resource.setrlimit(resource.RLIMIT_AS, (two_gib, two_gib))


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_AS"), reason="needs RLIMIT_AS (Linux)")
def test_frames_larger_than_memory_give_one_line(tmp_path):
    cfg = tmp_path / "big.yaml"
    cfg.write_text(yaml.safe_dump({"camera": {"rows": 8192, "cols": 8192},
                                   "model": {"card": "none"}}))
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--frames", "1",
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=300, preexec_fn=_limit_address_space)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("hsi-edge run: error: out of memory: the frames "
                                "(camera.rows x camera.cols x bands)"), lines[-1]
