#!/usr/bin/env bash
# The whole GPU check in one go, offline (../shared/GPU.md): a preflight of what the run needs,
# one kernel build for this GPU, pytest -m gpu, compute-sanitizer memcheck of one small launch
# per kernel, the kernel benchmark. Full logs go to the folder given as $1 (default gpu-logs);
# a short table is printed last. Exit 0 only if every part passed.
#   usage: bash tests/gpu/run.sh LOGDIR
# Needs on the GPU machine: python3 with numpy, pyyaml, pytest; nvcc (PATH, $CUDA_HOME or
# /usr/local/cuda); PyCUDA and its pure-Python dependencies -- from .whl/ (built by
# ../shared/tools/gpu-wheels.sh for Python 3.12; .whl/ is git-ignored, carry it to the
# machine) or already on PYTHONPATH. $PYTHON picks the interpreter (default python3).
# The preflight (tests/gpu/preflight.py) stops the run with one line per problem: wheels for
# another Python or a newer glibc, a failed pip install, a driver older than the CUDA PyCUDA
# was built against or than the nvcc that builds the kernels.
set -uo pipefail
cd "$(dirname "$0")/../.."
logs=${1:-gpu-logs}
mkdir -p "$logs"
logs=$(cd "$logs" && pwd)
py=${PYTHON:-python3}
whl=${HSI_WHL_DIR:-.whl}
if ls "$whl"/*.whl >/dev/null 2>&1; then
  if ! "$py" tests/gpu/preflight.py wheels "$whl" > "$logs/wheels.log" 2>&1; then
    cat "$logs/wheels.log"; echo "preflight: FAIL (wheels); nothing was run"; exit 1
  fi
  if ! "$py" -m pip install -q --no-index --no-deps --target "$HOME/site" "$whl"/*.whl \
      > "$logs/pip.log" 2>&1; then
    echo "FAILED pip install of $whl/ ($(grep -m1 -E 'ERROR|error' "$logs/pip.log" || tail -1 "$logs/pip.log")); full log: $logs/pip.log"
    echo "preflight: FAIL (pip); nothing was run"; exit 1
  fi
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
pytest_gpu=("$py" -m pytest tests/gpu -m gpu -q -rs -p no:cacheprovider -o addopts="")

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  git rev-parse HEAD 2>/dev/null || echo "commit: not a git checkout"
  nvcc --version | tail -1; "$py" --version; } > "$logs/machine.txt" 2>&1

# Preflight: every import the run needs, the driver against PyCUDA's build and nvcc, then
# one kernel build for this GPU's arch.
"$py" tests/gpu/preflight.py gpu > "$logs/preflight.log" 2>&1
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
  "$py" tests/benchmarks/bench_kernels.py --out "$logs" --prebuilt "$HSI_GPU_PREBUILT" \
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
