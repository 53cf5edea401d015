#!/usr/bin/env bash
# The whole GPU check in one go, offline (../shared/GPU.md): a preflight of what the run needs,
# one kernel build for this GPU, pytest -m gpu, compute-sanitizer memcheck of one small launch
# per kernel, the kernel benchmark. Full logs go to the folder given as $1 (default gpu-logs);
# a short table is printed last. Exit 0 only if every part passed.
#   usage: bash tests/gpu/run.sh LOGDIR
# Needs on the GPU machine: python3 with numpy, pyyaml, pytest; nvcc (PATH, $CUDA_HOME or
# /usr/local/cuda); PyCUDA and its pure-Python dependencies -- from .whl/ (built by
# ../shared/tools/gpu-wheels.sh; carry it to the machine) or already on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/../.."
logs=${1:-gpu-logs}
mkdir -p "$logs"
logs=$(cd "$logs" && pwd)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target "$HOME/site" .whl/*.whl \
    > "$logs/pip.log" 2>&1 || echo "pip install of .whl/ failed: see $logs/pip.log"
fi
export PYTHONPATH=$HOME/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
if ! command -v nvcc >/dev/null 2>&1; then
  for d in "${CUDA_HOME:-}" /usr/local/cuda; do
    [ -n "$d" ] && [ -x "$d/bin/nvcc" ] && { export PATH=$d/bin:$PATH; break; }
  done
fi
export HSI_REQUIRE_GPU=1                 # tests/gpu/conftest.py: no GPU = error, not skip
export HSI_GPU_PREBUILT=$logs/prebuilt   # built once below, used by pytest and the benchmark
pytest_gpu=(python3 -m pytest tests/gpu -m gpu -q -rs -p no:cacheprovider -o addopts="")

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  git rev-parse HEAD 2>/dev/null || echo "commit: not a git checkout"
  nvcc --version | tail -1; python3 --version; } > "$logs/machine.txt" 2>&1

# Preflight: every import the run needs, then one build for this GPU's arch.
python3 - > "$logs/preflight.log" 2>&1 <<'EOF'
import importlib, sys
ok = True
for mod in ("numpy", "yaml", "pytest", "pycuda.driver", "edge.backends.cuda", "cupy", "torch"):
    try:
        m = importlib.import_module(mod)
        print(f"import {mod}: ok {getattr(m, '__version__', '')}")
    except Exception as exc:
        optional = mod in ("cupy", "torch")
        ok &= optional
        print(f"import {mod}: {'missing (optional baseline)' if optional else 'FAILED'}: {exc!r}")
if ok:
    import pycuda.driver as cuda
    cuda.init()
    dev = cuda.Device(0)
    print(f"device: {dev.name()} cc {dev.compute_capability()} driver {cuda.get_driver_version()}")
    from cuda_kernels import arch_of
    from cuda_kernels.build import build
    import os
    build([arch_of(dev.compute_capability())], os.environ["HSI_GPU_PREBUILT"])
    print("kernel build: ok")
sys.exit(0 if ok else 1)
EOF
rc_pre=$?

rc_tests=skip; rc_san=skip; rc_bench=skip   # not run: preflight failed
if [ $rc_pre -eq 0 ]; then
  "${pytest_gpu[@]}" --junitxml="$logs/pytest-gpu.xml" > "$logs/pytest-gpu.log" 2>&1
  rc_tests=$?
  # memcheck: one small launch of every kernel (per-op + post + fused chain on 7x13 frames)
  if command -v compute-sanitizer >/dev/null 2>&1; then
    compute-sanitizer --tool memcheck --error-exitcode 99 --log-file "$logs/memcheck.log" \
      "${pytest_gpu[@]}" -k "7-13-25 or post and 7-13" > "$logs/memcheck-pytest.log" 2>&1
    rc_san=$?
  else
    echo "compute-sanitizer not found" > "$logs/memcheck.log"; rc_san=127
  fi
  python3 tests/benchmarks/bench_kernels.py --out "$logs" --prebuilt "$HSI_GPU_PREBUILT" \
    > "$logs/bench.log" 2>&1
  rc_bench=$?
fi

status() { case $1 in 0) echo PASS ;; skip) echo "NOT RUN" ;; *) echo "FAIL ($1)" ;; esac; }
echo
echo "=== GPU check ($(head -1 "$logs/machine.txt")) — logs in $logs ==="
printf '%-16s %s\n' "preflight" "$(status $rc_pre): $(grep -hE 'FAILED|device:' "$logs/preflight.log" | tr '\n' ' ')"
printf '%-16s %s\n' "pytest -m gpu" "$(status $rc_tests): $(tail -1 "$logs/pytest-gpu.log" 2>/dev/null)"
printf '%-16s %s\n' "memcheck" "$(status $rc_san): $(grep -h 'ERROR SUMMARY' "$logs/memcheck.log" 2>/dev/null | tail -1); pytest: $(tail -1 "$logs/memcheck-pytest.log" 2>/dev/null)"
printf '%-16s %s\n' "benchmark" "$(status $rc_bench)"
sed -n '/^kernel benchmark/,$p' "$logs/bench.log" 2>/dev/null
[ "$rc_pre" = 0 ] && [ "$rc_tests" = 0 ] && [ "$rc_san" = 0 ] && [ "$rc_bench" = 0 ]
