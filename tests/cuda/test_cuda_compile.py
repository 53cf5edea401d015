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
        # PTX for the oldest arch built and for compute_75 (sm_80/86 cards have a binary too)
        assert sorted(entry["ptx"]) == ["compute_75", "compute_87"]
        for virtual, target in (("compute_75", "sm_75"), ("compute_87", "sm_87")):
            ptx = (out / entry["ptx"][virtual]).read_text()
            assert f".target {target}" in ptx
            for kernel in mod.kernels:
                assert f".entry {kernel}(" in ptx, kernel
    assert ck.manifest_problems(out, "sm_90") == []


def test_select_binary_cubin_ptx_or_runtime_compile(built):
    out, _ = built
    path, why = ck.select_binary("chain", out, "sm_90")
    assert path == out / "chain.sm_90.cubin" and why == "cubin for sm_90"
    path, why = ck.select_binary("chain", out, "sm_89")
    assert path == out / "chain.compute_87.ptx" and "PTX compute_87 (JIT" in why
    path, why = ck.select_binary("chain", out, "sm_80")     # A100: the compute_75 PTX
    assert path == out / "chain.compute_75.ptx" and "PTX compute_75 (JIT" in why
    path, why = ck.select_binary("chain", out, "sm_72")
    assert path is None and "no cubin for sm_72 and no compatible PTX" in why
    with pytest.raises(ConfigError, match=r"module: expected one of .*got 'nope'"):
        ck.select_binary("nope", out, "sm_90")


def _copy_build(out, dst, **edit):
    """A copy of the build with manifest fields replaced (a constructed manifest)."""
    shutil.copytree(out, dst)
    man = json.loads((dst / ck.MANIFEST_NAME).read_text())
    man.update(edit)
    (dst / ck.MANIFEST_NAME).write_text(json.dumps(man))
    return dst


@pytest.mark.parametrize("driver,nvcc,want", [
    (13000, "13.0.88", "chain.sm_90.cubin"),          # R580+: everything loads
    (12090, "13.0.88", None),                         # nvcc 13 binaries on a CUDA 12 driver
    (12020, "12.6.77", "chain.sm_90.cubin"),          # cubin: minor-version compatible
    (12060, "12.6.77", "chain.sm_90.cubin"),
])
def test_select_binary_picks_only_what_the_driver_loads_cubin(built, tmp_path, driver, nvcc,
                                                              want):
    out = _copy_build(built[0], tmp_path / "b", nvcc_version=nvcc)
    path, why = ck.select_binary("chain", out, "sm_90", driver_version=driver)
    assert (path.name if path else None) == want, why
    if want is None:
        assert why == (f"the kernels were built by nvcc 13.0, newer than this driver's CUDA "
                       f"12.9 (update the driver, or build with the unit's own nvcc)")


@pytest.mark.parametrize("driver,nvcc,want", [
    (13000, "13.0.88", "chain.compute_75.ptx"),
    (12060, "12.6.77", "chain.compute_75.ptx"),
    (12020, "12.6.77", None),                         # PTX needs a driver >= its nvcc
])
def test_select_binary_picks_only_ptx_the_driver_can_jit(built, tmp_path, driver, nvcc, want):
    out = _copy_build(built[0], tmp_path / "b", nvcc_version=nvcc)
    path, why = ck.select_binary("chain", out, "sm_86", driver_version=driver)
    assert (path.name if path else None) == want, why
    if want is None:
        assert why == ("no cubin for sm_86, and its PTX (nvcc 12.6) is newer than this "
                       "driver's CUDA 12.2 can JIT")


def test_arch_specific_builds_are_selected_and_parsed(built, tmp_path):
    """sm_90a crashed select_binary (int('90a')); its cubin runs on compute capability 9.0."""
    out = tmp_path / "b"
    shutil.copytree(built[0], out)
    man = json.loads((out / ck.MANIFEST_NAME).read_text())
    for entry in man["modules"].values():
        entry["cubin"] = {"sm_90a": entry["cubin"]["sm_90"]}
    (out / ck.MANIFEST_NAME).write_text(json.dumps(man))
    path, why = ck.select_binary("chain", out, "sm_90")
    assert path == out / "chain.sm_90.cubin" and why == "cubin for sm_90a"
    path, why = ck.select_binary("chain", built[0], "sm_90a")   # no sm_90a cubin: no crash
    assert path == built[0] / "chain.compute_87.ptx" and "PTX compute_87" in why
    assert [ck.arch_number(a) for a in ("sm_87", "sm_90a", "compute_75", "sm_100")] == [
        87, 90, 75, 100]
    with pytest.raises(ConfigError, match=r"arch: expected a GPU arch like sm_87 or sm_90a, "
                                          r"got 'sm90'"):
        ck.arch_number("sm90")
    ptx = tmp_path / "sto2.ptx"
    kb.compile_module("sto2", "sm_90a", ptx, ptx=True)   # plain compute_90: JITs on any 9.x+
    assert ".target sm_90\n" in ptx.read_text()


def test_driver_release_of_driver_and_nvcc_versions():
    assert ck.driver_release(12060) == (12, 6) and ck.driver_release(13000) == (13, 0)
    assert ck.driver_release("13.0.88") == (13, 0) and ck.driver_release("12.2") == (12, 2)


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
                       match=r"PyCUDA is not installed .*pip install 'hsi-edge\[cuda\]' "
                             r"\(pycuda>=2025\.1\.2, needs the CUDA toolkit\) and an NVIDIA GPU"):
        CudaBackend(np.linspace(500, 1000, 100))


def test_importing_the_backend_needs_no_pycuda_pil_or_tqdm():
    code = ("import sys, edge.backends.cuda, edge.processing; "
            "print(sorted(m for m in ('pycuda', 'PIL', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_shipped_header_is_hashed_into_the_manifest():
    """A header missing from HEADERS (chain_tail.cuh was) would leave prebuilt binaries
    'current' after it changed: every .cuh beside the kernels is listed."""
    import cuda_kernels as ck

    assert set(ck.HEADERS) == {p.name for p in ck.KERNEL_DIR.glob("*.cuh")}
