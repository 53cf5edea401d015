"""nvcc builds of every kernel (sm_87, sm_90), the AOT manifest logic, launch configuration,
the kernels CLI and the backend's behaviour without PyCUDA -- all without a GPU.

The build runs once per session (about 10 s on 2 cores): each .cu is compiled once per arch
with ``-Xptxas -v``; the test fails on a compile error or any register spill and compares the
register counts with the recorded cuda_kernels/registers.json.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cuda_kernels as ck
from cuda_kernels import build as kb
from edge.backends.cuda_ops import STATIC_SHARED_LIMIT, tile_launch
from edge.errors import BackendUnavailable, ConfigError

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="needs nvcc (the CUDA toolkit) on PATH")
ARCHS = ("sm_87", "sm_90")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("prebuilt")
    return out, kb.build(ARCHS, out)


def test_every_kernel_compiles_without_spills(built):
    _, man = built
    for arch in ARCHS:
        rep = man["registers"][arch]
        assert set(rep) == {k for m in ck.MODULES.values() for k in m.kernels}, arch
        for kernel, r in rep.items():
            assert r["spill_stores"] == 0 and r["spill_loads"] == 0, f"{kernel} spills on {arch}"
            assert r["stack"] == 0, f"{kernel} uses {r['stack']} B of local memory on {arch}"
            assert 0 < r["registers"] <= 64, f"{kernel}: {r['registers']} registers on {arch}"


def test_registers_match_the_recorded_table(built):
    _, man = built
    rec = json.loads(kb.REGISTERS_JSON.read_text())
    if rec["nvcc_version"] != man["nvcc_version"]:
        pytest.skip(f"registers.json was recorded with nvcc {rec['nvcc_version']}, this is "
                    f"{man['nvcc_version']}: rerun 'hsi-edge kernels build --write-registers'")
    assert rec["registers"] == man["registers"], \
        "kernels changed: rerun 'hsi-edge kernels build --write-registers'"
    assert kb.registers_table(man) in kb.REGISTERS_MD.read_text()


def test_manifest_lists_binaries_and_hashes(built):
    out, man = built
    assert man["archs"] == list(ARCHS)
    assert man["sources"] == ck.source_hashes()
    assert set(man["sources"]) >= {m.source for m in ck.MODULES.values()} | set(ck.HEADERS)
    for name, mod in ck.MODULES.items():
        entry = man["modules"][name]
        assert entry["kernels"] == list(mod.kernels)
        for arch in ARCHS:
            data = (out / entry["cubin"][arch]).read_bytes()
            assert data[:4] == b"\x7fELF", f"{entry['cubin'][arch]} is not a cubin"
        ptx = (out / entry["ptx"]).read_text()
        assert entry["ptx_arch"] == "compute_87" and ".target sm_87" in ptx
        for kernel in mod.kernels:
            assert f".entry {kernel}(" in ptx, kernel
    assert ck.manifest_problems(out, "sm_90") == []


def test_select_binary_cubin_ptx_or_runtime_compile(built):
    out, _ = built
    path, why = ck.select_binary("chain", out, "sm_90")
    assert path == out / "chain.sm_90.cubin" and why == "cubin for sm_90"
    path, why = ck.select_binary("chain", out, "sm_89")
    assert path == out / "chain.compute_87.ptx" and "JIT" in why
    path, why = ck.select_binary("chain", out, "sm_80")
    assert path is None and "no cubin for sm_80 and no compatible PTX" in why
    with pytest.raises(ConfigError, match=r"module: expected one of .*got 'nope'"):
        ck.select_binary("nope", out, "sm_90")


def test_changed_added_or_removed_source_makes_the_build_stale(built, tmp_path):
    out, _ = built
    src = tmp_path / "src"
    shutil.copytree(ck.KERNEL_DIR, src, ignore=shutil.ignore_patterns("prebuilt", "__pycache__"))
    assert ck.manifest_problems(out, "sm_87", kernel_dir=src) == []
    (src / "chain.cu").write_text((src / "chain.cu").read_text() + "\n// edit\n")
    (src / "extra.cuh").write_text("#pragma once\n")
    (src / "sto2.cu").unlink()
    problems = ck.manifest_problems(out, "sm_87", kernel_dir=src)
    assert problems == ["chain.cu changed since the build (stale manifest)",
                        "extra.cuh added since the build (stale manifest)",
                        "sto2.cu removed since the build (stale manifest)"]
    path, why = ck.select_binary("unmix", out, "sm_87", kernel_dir=src)
    assert path is None and "chain.cu changed" in why


def test_missing_manifest_or_arch(built, tmp_path):
    out, _ = built
    assert ck.manifest_problems(tmp_path, "sm_87") == [f"no manifest.json in {tmp_path}"]
    problems = ck.manifest_problems(out, "sm_72")
    assert problems[0] == "module 'flatfield' has no cubin for sm_72 (built for sm_87, sm_90)"
    (tmp_path / "manifest.json").write_text("{not json")
    assert ck.read_manifest(tmp_path) is None


def test_compile_error_names_the_source(tmp_path):
    with pytest.raises(kb.KernelBuildError, match=r"nvcc failed on chain\.cu for sm_87"):
        kb.compile_module("chain", "sm_87", tmp_path / "x.cubin", nvcc=shutil.which("false"))
    src = ck.runtime_source("unmix")
    assert src.startswith(f'#line 1 "{ck.KERNEL_DIR / "unmix.cu"}"\n')


def test_nvcc_reports_errors_at_the_cu_line(tmp_path):
    """A run-time compile of the #line-prefixed text blames the .cu file, not a temp file."""
    bad = ck.runtime_source("sto2").replace("sto2[i] =", "sto2[i] = undefined_name +")
    (tmp_path / "kernel.cu").write_text(bad)
    proc = subprocess.run([kb.find_nvcc(), "-cubin", "-arch=sm_87", "-I", str(ck.KERNEL_DIR),
                           "-o", str(tmp_path / "k.cubin"), str(tmp_path / "kernel.cu")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"{ck.KERNEL_DIR / 'sto2.cu'}(" in proc.stderr and "undefined_name" in proc.stderr


def test_parse_archs_and_missing_nvcc(monkeypatch):
    assert kb.parse_archs("sm_87, sm_90,sm_87") == ("sm_87", "sm_90")
    assert kb.parse_archs(["sm_90a"]) == ("sm_90a",)
    with pytest.raises(ConfigError, match=r"--arch: expected comma-separated GPU archs like "
                                          r"sm_87,sm_90, got 'compute_87'"):
        kb.parse_archs("compute_87")
    with pytest.raises(ConfigError, match="at least one GPU arch"):
        kb.parse_archs([])
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    with pytest.raises(BackendUnavailable, match="nvcc not found on PATH"):
        kb.find_nvcc()


@pytest.mark.parametrize("bands", [1, 16, 25, 100, 128, 255, 256])
@pytest.mark.parametrize("npix", [1, 91, 307200, 1080 * 1920])
def test_tile_launch_fits_and_covers(bands, npix):
    ln = tile_launch(npix, bands)
    block = ln.block[0]
    assert block % 32 == 0 and 32 <= block <= 256
    assert ln.stride % 2 == 1 and ln.stride >= bands
    assert ln.shared == block * 4 * (ln.stride + 1) <= STATIC_SHARED_LIMIT
    assert ln.grid[0] * block >= npix > (ln.grid[0] - 1) * block


def test_tile_launch_rejects_unsupported_sizes():
    with pytest.raises(ConfigError, match=r"bands: the CUDA kernels support 1-256 bands, got 257"):
        tile_launch(10, 257)
    with pytest.raises(ConfigError, match=r"npix: expected at least one pixel, got 0"):
        tile_launch(0, 16)


def test_cli_kernels_build_and_info(tmp_path, capsys):
    from edge.cli import main
    assert main(["kernels", "build", "--arch", "sm87"]) == 2
    assert "--arch: expected comma-separated GPU archs" in capsys.readouterr().err
    assert main(["kernels", "info", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"prebuilt {tmp_path}: NOT usable -- no manifest.json" in out
    assert "chain.cu" in out and "compile at run time" in out


@pytest.mark.skipif(importlib.util.find_spec("pycuda") is not None,
                    reason="PyCUDA is installed here; this checks the message without it")
def test_backend_without_pycuda_says_what_to_install():
    from edge.backends.cuda import CudaBackend
    with pytest.raises(BackendUnavailable,
                       match=r"PyCUDA is not installed .*pip install 'hsi-edge\[cuda\]' \(needs "
                             r"the CUDA toolkit\) and an NVIDIA GPU"):
        CudaBackend(np.linspace(500, 1000, 100))


def test_importing_the_backend_needs_no_pycuda_pil_or_tqdm():
    code = ("import sys, edge.backends.cuda, edge.processing; "
            "print(sorted(m for m in ('pycuda', 'PIL', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
