"""tests/gpu/run.sh's preflight refuses clearly on the CPU: wheels for another Python or a
newer glibc, a failed pip install (the script stops; nothing else runs), a PyCUDA that does
not import.  The driver comparison itself is tested in tests/cuda/test_driver_policy.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("hsi_gpu_preflight", ROOT / "tests" / "gpu" /
                                               "preflight.py")
preflight = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(preflight)
PY = preflight.python_tag()


def _wheel(directory: Path, name: str, glibc: str | None = "2.34") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with zipfile.ZipFile(path, "w") as z:
        if glibc:   # a shared object referencing glibc symbol versions, newest `glibc`
            z.writestr("pkg/_ext.cpython-312-x86_64-linux-gnu.so",
                       f"\x7fELF...GLIBC_2.2.5\x00GLIBC_2.17\x00GLIBC_{glibc}\x00".encode())
        z.writestr("pkg/__init__.py", "")
    return path


def test_wheels_for_another_python_or_a_newer_glibc_are_named(tmp_path):
    good = _wheel(tmp_path, f"pycuda-2026.1-{PY}-{PY}-linux_x86_64.whl")
    pure = _wheel(tmp_path, "pytools-2025.2-py3-none-any.whl", glibc=None)
    other = _wheel(tmp_path, "markupsafe-3.0-cp39-cp39-manylinux_2_17_x86_64.whl", "2.17")
    assert preflight.wheel_problems([good, pure], PY, (2, 35)) == []
    assert preflight.wheel_glibc(good) == (2, 34) and preflight.wheel_glibc(pure) is None
    problems = preflight.wheel_problems([good, other], PY, (2, 31))
    assert problems == [
        f"markupsafe-3.0-cp39-cp39-manylinux_2_17_x86_64.whl is for cp39, but python3 here is "
        f"{PY} (Python {sys.version.split()[0]}): run with that Python (PYTHON=python3.12 bash "
        f"tests/gpu/run.sh) or rebuild .whl/ for this one",
        f"pycuda-2026.1-{PY}-{PY}-linux_x86_64.whl needs glibc >= 2.34, this system has glibc "
        f"2.31 (Ubuntu 22.04 or newer); rebuild the wheel on a system no newer than this one"]


def _run_sh(tmp_path, whl_dir):
    env = {**os.environ, "HSI_WHL_DIR": str(whl_dir), "PYTHON": sys.executable,
           "HOME": str(tmp_path / "home")}
    logs = tmp_path / "logs"
    proc = subprocess.run(["bash", "tests/gpu/run.sh", str(logs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, logs


def test_run_sh_stops_on_wheels_for_another_python(tmp_path):
    _wheel(tmp_path / "whl", "pycuda-2026.1-cp39-cp39-linux_x86_64.whl", glibc="2.17")
    proc, logs = _run_sh(tmp_path, tmp_path / "whl")
    assert proc.returncode == 1
    assert "FAILED wheels: pycuda-2026.1-cp39-cp39-linux_x86_64.whl is for cp39" in proc.stdout
    assert proc.stdout.rstrip().endswith("preflight: FAIL (wheels); nothing was run")
    assert not (logs / "pytest-gpu.log").exists() and not (logs / "pip.log").exists()


def test_run_sh_stops_when_pip_fails(tmp_path):
    # The right tags, but no .dist-info: pip refuses it.
    _wheel(tmp_path / "whl", f"broken-1.0-{PY}-{PY}-linux_x86_64.whl", glibc="2.17")
    proc, logs = _run_sh(tmp_path, tmp_path / "whl")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"FAILED pip install of {tmp_path / 'whl'}/ (" in proc.stdout
    assert proc.stdout.rstrip().endswith("preflight: FAIL (pip); nothing was run")
    assert not (logs / "preflight.log").exists() and not (logs / "pytest-gpu.log").exists()


def test_gpu_preflight_without_pycuda_says_what_is_missing(capsys):
    if importlib.util.find_spec("pycuda") is not None:
        pytest.skip("PyCUDA is installed here")
    assert preflight.main(["gpu"]) == 1
    out = capsys.readouterr().out
    assert ("import pycuda.driver: FAILED: preflight: PyCUDA is not installed (No module named "
            "'pycuda')") in out
