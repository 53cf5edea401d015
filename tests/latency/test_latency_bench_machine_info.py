"""tests/benchmarks/conftest.py puts the fingerprint into pytest-benchmark's machine info."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_json_carries_the_fingerprint(tmp_path):
    shutil.copy(ROOT / "tests" / "benchmarks" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_tiny.py").write_text(
        "def test_tiny(benchmark):\n    benchmark.pedantic(sum, args=([1, 2],), rounds=3)\n")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), "-c", "/dev/null", "--benchmark-enable", f"--benchmark-json={out}",
         str(tmp_path / "test_tiny.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = json.loads(out.read_text())["machine_info"]
    fp = info["hsi_edge"]
    assert info["hardware_key"] == fp["hardware_key"]
    for key in ("cpu_model", "gpu_name", "jetson_model", "l4t", "cuda", "tensorrt",
                "onnxruntime", "numpy", "git_commit", "git_dirty"):
        assert key in fp
