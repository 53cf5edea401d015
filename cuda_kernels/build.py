"""Ahead-of-time build of the kernels: a cubin per arch, PTX, and ``manifest.json``.

``hsi-edge kernels build`` calls :func:`build`.  The manifest records the SHA-256 of every
source (a later change makes the build stale, see :func:`cuda_kernels.manifest_problems`),
the nvcc version, the archs, the kernel names and the ptxas resource report (registers, spill
bytes, stack) per kernel and arch.  Files are written to a temporary directory inside
``out_dir`` first and the manifest last, so a failed build never leaves a manifest that
claims binaries it does not have.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from cuda_kernels import (KERNEL_DIR, MANIFEST_FORMAT, MANIFEST_NAME, MODULES, PTX_BASE_ARCH,
                          arch_number, source_hashes)
from edge.errors import BackendUnavailable, ConfigError, HsiEdgeError

__all__ = ["KernelBuildError", "DEFAULT_ARCHS", "find_nvcc", "nvcc_version", "parse_archs",
           "compile_module", "parse_ptxas", "build", "NVCC_FLAGS"]

log = logging.getLogger(__name__)

#: Jetson Orin (sm_87) and Hopper (sm_90): the archs CI compiles for.
DEFAULT_ARCHS: tuple[str, ...] = ("sm_87", "sm_90")
#: -lineinfo keeps source lines for compute-sanitizer and profilers at no run-time cost.
NVCC_FLAGS: tuple[str, ...] = ("-std=c++17", "-O3", "-lineinfo")
_ARCH_RE = re.compile(r"^sm_(\d{2,3})[a-z]?$")


class KernelBuildError(HsiEdgeError):
    """nvcc failed on a kernel source (the message carries nvcc's diagnostics)."""


def find_nvcc() -> str:
    """Path of nvcc: ``$CUDA_HOME/bin/nvcc``, else the one on PATH.

    Raises
    ------
    BackendUnavailable
        If there is none.
    """
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if not found:
        raise BackendUnavailable("nvcc not found on PATH or in $CUDA_HOME/bin: install the "
                                 "CUDA toolkit to build kernels")
    return found


def nvcc_version(nvcc: str | None = None) -> str:
    """nvcc's release, e.g. ``"13.0.88"`` (from ``nvcc --version``)."""
    out = subprocess.run([nvcc or find_nvcc(), "--version"], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"V(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else out.strip().splitlines()[-1]


def parse_archs(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"sm_87,sm_90"`` (or an iterable) -> ``("sm_87", "sm_90")``, validated and de-duplicated.

    Raises
    ------
    ConfigError
        If an entry is not of the form ``sm_XY`` (e.g. ``sm_87``, ``sm_90a``).
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    archs: list[str] = []
    for a in (i.strip() for i in items):
        if not _ARCH_RE.match(a):
            raise ConfigError(f"--arch: expected comma-separated GPU archs like sm_87,sm_90, "
                              f"got {a!r}")
        if a not in archs:
            archs.append(a)
    if not archs:
        raise ConfigError("--arch: expected at least one GPU arch such as sm_87")
    return tuple(archs)


def parse_ptxas(text: str) -> dict[str, dict[str, int]]:
    """Per-kernel resources from ``-Xptxas -v`` output.

    Returns
    -------
    dict of kernel name to {"registers", "spill_stores", "spill_loads", "stack"} (ints)
    """
    report: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            current = report.setdefault(m.group(1), {"registers": 0, "spill_stores": 0,
                                                     "spill_loads": 0, "stack": 0})
            continue
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = report.setdefault(m.group(1), {"registers": 0, "spill_stores": 0,
                                                     "spill_loads": 0, "stack": 0})
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m.group(1))
    return report


def compile_module(module: str, arch: str, out: Path, *, nvcc: str | None = None,
                   ptx: bool = False) -> dict[str, dict[str, int]]:
    """Compile one module to ``out`` (cubin for ``arch``, or PTX for its virtual arch).

    Returns the ptxas report (empty for PTX).  Raises :class:`KernelBuildError` with nvcc's
    diagnostics (which name the ``.cu`` file and line) on failure.
    """
    src = KERNEL_DIR / MODULES[module].source
    if ptx:   # the plain virtual arch: compute_90a PTX would JIT on compute capability 9.0 only
        target = ["-ptx", f"-arch=compute_{arch_number(arch)}"]
    else:
        target = ["-cubin", f"-arch={arch}", "-Xptxas", "-v"]
    cmd = [nvcc or find_nvcc(), *NVCC_FLAGS, *target, "-I", str(KERNEL_DIR), "-o", str(out),
           str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelBuildError(f"nvcc failed on {src.name} for {arch} (exit "
                               f"{proc.returncode}): {proc.stderr.strip()}")
    return {} if ptx else parse_ptxas(proc.stdout + proc.stderr)


def build(archs: Iterable[str] = DEFAULT_ARCHS, out_dir: Path | str | None = None, *,
          nvcc: str | None = None, jobs: int | None = None) -> dict:
    """Build every module for ``archs``, plus PTX for the oldest of them and for
    :data:`cuda_kernels.PTX_BASE_ARCH` (compute_75); write the manifest.

    Parameters
    ----------
    archs : iterable of str
        Real archs such as ``sm_87`` (Jetson Orin) or ``sm_90`` (H100/H200).
    out_dir : path, optional
        Output directory (created); default :data:`cuda_kernels.DEFAULT_PREBUILT_DIR`.
    nvcc : str, optional
        nvcc to use (default :func:`find_nvcc`).
    jobs : int, optional
        Parallel nvcc processes (default: CPU count).

    Returns
    -------
    dict
        The manifest that was written.
    """
    from cuda_kernels import DEFAULT_PREBUILT_DIR
    archs = parse_archs(archs)
    nvcc = nvcc or find_nvcc()
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_PREBUILT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    hashes = source_hashes()
    ptx_archs = sorted({f"sm_{arch_number(a)}" for a in (min(archs, key=arch_number),
                                                          PTX_BASE_ARCH)}, key=arch_number)
    # A fresh 0o700 folder (never a predictable name that a planted link could redirect).
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    jobs_list = [(m, a, False) for m in MODULES for a in archs] + [(m, a, True) for m in MODULES
                                                                    for a in ptx_archs]

    def one(job):
        m, a, is_ptx = job
        name = f"{m}.compute_{arch_number(a)}.ptx" if is_ptx else f"{m}.{a}.cubin"
        log.info("nvcc %s -> %s", MODULES[m].source, name)
        return job, name, compile_module(m, a, tmp / name, nvcc=nvcc, ptx=is_ptx)

    try:
        with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
            results = list(pool.map(one, jobs_list))
        modules: dict[str, dict] = {m: {"source": MODULES[m].source,
                                        "kernels": list(MODULES[m].kernels), "cubin": {},
                                        "ptx": {}}
                                    for m in MODULES}
        registers: dict[str, dict] = {a: {} for a in archs}
        for (m, a, is_ptx), name, report in results:
            if is_ptx:
                modules[m]["ptx"][f"compute_{arch_number(a)}"] = name
            else:
                modules[m]["cubin"][a] = name
                registers[a].update(report)
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = {"format": MANIFEST_FORMAT, "nvcc_version": nvcc_version(nvcc),
                "nvcc_flags": list(NVCC_FLAGS), "archs": list(archs), "sources": hashes,
                "modules": modules, "registers": registers}
    for a, rep in registers.items():
        for k, r in rep.items():
            if r["spill_stores"] or r["spill_loads"]:
                log.warning("%s spills registers on %s: %d bytes stored, %d loaded", k, a,
                            r["spill_stores"], r["spill_loads"])
    tmp_manifest = out_dir / (MANIFEST_NAME + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_manifest, out_dir / MANIFEST_NAME)
    log.info("wrote %d binaries and %s to %s", len(results), MANIFEST_NAME, out_dir)
    return manifest


#: Recorded ptxas resources (written by ``hsi-edge kernels build --write-registers``).
REGISTERS_JSON = KERNEL_DIR / "registers.json"
REGISTERS_MD = KERNEL_DIR / "REGISTERS.md"


def registers_table(manifest: dict) -> str:
    """Markdown table of registers / spills / stack per kernel and arch from a manifest."""
    archs = manifest["archs"]
    lines = ["| kernel | " + " | ".join(f"{a} regs" for a in archs) + " | spills | stack |",
             "|---|" + "---:|" * len(archs) + "---:|---:|"]
    kernels = sorted({k for a in archs for k in manifest["registers"][a]})
    for k in kernels:
        regs = [str(manifest["registers"][a].get(k, {}).get("registers", "-")) for a in archs]
        spill = sum(manifest["registers"][a].get(k, {}).get(f, 0) for a in archs
                    for f in ("spill_stores", "spill_loads"))
        stack = max(manifest["registers"][a].get(k, {}).get("stack", 0) for a in archs)
        lines.append(f"| `{k}` | " + " | ".join(regs) + f" | {spill} B | {stack} B |")
    return "\n".join(lines) + "\n"


def write_registers(manifest: dict) -> None:
    """Record the manifest's ptxas report in registers.json and REGISTERS.md (the README's source)."""
    record = {"nvcc_version": manifest["nvcc_version"], "nvcc_flags": manifest["nvcc_flags"],
              "archs": manifest["archs"], "registers": manifest["registers"]}
    REGISTERS_JSON.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    REGISTERS_MD.write_text(
        "# Kernel resources (ptxas -v)\n\n"
        f"Recorded by `hsi-edge kernels build --write-registers` with nvcc "
        f"{manifest['nvcc_version']} (`{' '.join(manifest['nvcc_flags'])}`). "
        "`tests/cuda/test_cuda_compile.py` recompiles every kernel for these archs, fails on "
        "any spill and compares the counts with `registers.json` (when the nvcc version is the "
        "same). Tiled kernels run 32-256 threads per block (edge/backends/cuda_ops.py), so "
        "registers never limit occupancy before shared memory does.\n\n"
        + registers_table(manifest))
