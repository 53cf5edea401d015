"""``hsi-edge kernels``: build the CUDA kernels ahead of time, or show their state.

``build [--arch sm_87,sm_90] [--out DIR] [--write-registers]`` writes a cubin per arch, PTX
for the oldest arch and for compute_75 (so sm_80/86 cards JIT it) and ``manifest.json``
(cuda_kernels/build.py; the backend loads only what the driver can: see
:func:`cuda_kernels.select_binary`); ``info [--dir DIR]`` prints the sources and
their hashes, nvcc, whether the prebuilt binaries are current, and the recorded registers.
Needs nvcc for ``build`` only; no GPU and no PyCUDA.  ``cpu [--cache DIR]`` builds the native
CPU chain (``cuda_kernels/cpu_chain.cpp``, the ``native`` backend) with the host's C++
compiler, or finds the cached build, and prints where it is -- run it once when flashing a unit
so the first ``hsi-edge run --backend native`` does not compile.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("kernels", help="build the CUDA kernels ahead of time / show "
                              "their state", description=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="kernels_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="cubin per arch + PTX (oldest arch, compute_75) + "
                                     "manifest.json")
    b.add_argument("--arch", default="sm_87,sm_90",
                   help="comma-separated GPU archs (default: sm_87,sm_90 = Jetson Orin, Hopper)")
    b.add_argument("--out", default=None,
                   help="output directory (default: cuda_kernels/prebuilt in the package)")
    b.add_argument("--jobs", type=int, default=None, help="parallel nvcc processes")
    b.add_argument("--write-registers", action="store_true",
                   help="also record registers per kernel in cuda_kernels/REGISTERS.md")
    i = sub.add_parser("info", help="sources, nvcc, prebuilt status, registers")
    i.add_argument("--dir", default=None, help="prebuilt directory to check "
                   "(default: cuda_kernels/prebuilt)")
    i.add_argument("--arch", default=None, help="also check for a cubin of this arch")
    c = sub.add_parser("cpu", help="build (or find) the native CPU chain for this machine")
    c.add_argument("--cache", default=None, help="build cache folder (default: "
                   "$HSI_EDGE_NATIVE_CACHE or ~/.cache/hsi-edge/native)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.kernels_command == "build":
        return _build(args)
    if args.kernels_command == "cpu":
        return _cpu(args)
    return _info(args)


def _cpu(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge.backends import native_build as nb
    from edge.backends.native import default_threads

    cache = Path(args.cache) if args.cache else nb.default_cache_dir()
    cxx = nb.find_compiler()
    _, openmp = nb.load_library(cache)
    path = nb.library_path(cxx, openmp, cache)
    print(f"native CPU chain: {path}")
    print(f"compiler {cxx}; flags {' '.join(nb.build_flags(openmp))}")
    print(f"threads: {default_threads() if openmp else 1}"
          f"{'' if openmp else ' (built without OpenMP)'}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from cuda_kernels import build as kb

    archs = kb.parse_archs(args.arch)
    manifest = kb.build(archs, args.out, jobs=args.jobs)
    out = args.out or str(__import__("cuda_kernels").DEFAULT_PREBUILT_DIR)
    print(f"built {len(manifest['modules'])} modules for {', '.join(archs)} with nvcc "
          f"{manifest['nvcc_version']} into {out}")
    print(kb.registers_table(manifest), end="")
    if args.write_registers:
        kb.write_registers(manifest)
        print(f"recorded registers in {kb.REGISTERS_MD}")
    spills = [(a, k) for a, rep in manifest["registers"].items() for k, r in rep.items()
              if r["spill_stores"] or r["spill_loads"]]
    return 1 if spills else 0


def _info(args: argparse.Namespace) -> int:
    import cuda_kernels as ck
    from cuda_kernels import build as kb
    from edge.errors import BackendUnavailable

    print(f"kernel sources: {ck.KERNEL_DIR}")
    for name, digest in ck.source_hashes().items():
        print(f"  {name:16s} sha256 {digest[:16]}")
    try:
        nvcc = kb.find_nvcc()
        print(f"nvcc: {nvcc} ({kb.nvcc_version(nvcc)})")
    except BackendUnavailable as exc:
        print(f"nvcc: not available ({exc})")
    prebuilt = args.dir or ck.DEFAULT_PREBUILT_DIR
    problems = ck.manifest_problems(prebuilt, args.arch)
    if problems:
        print(f"prebuilt {prebuilt}: NOT usable -- " + "; ".join(problems))
        print("  the cuda backend will compile at run time (development path)")
    else:
        man = ck.read_manifest(prebuilt)
        print(f"prebuilt {prebuilt}: current, archs {', '.join(man['archs'])}, nvcc "
              f"{man['nvcc_version']}")
    if kb.REGISTERS_JSON.is_file():
        rec = json.loads(kb.REGISTERS_JSON.read_text())
        print(f"recorded registers (nvcc {rec['nvcc_version']}):")
        print(kb.registers_table(rec), end="")
    return 0
