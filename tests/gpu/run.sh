#!/usr/bin/env bash
# The whole GPU check in one go, offline (../shared/GPU.md): pytest -m gpu, the kernel
# benchmark, compute-sanitizer memcheck of one small launch per kernel. Full logs go to the
# folder given as $1 (default gpu-logs); a short table is printed last.
#   usage: bash tests/gpu/run.sh LOGDIR
set -uo pipefail
cd "$(dirname "$0")/../.."
logs=${1:-gpu-logs}
mkdir -p "$logs"
if ls .whl/*.whl >/dev/null 2>&1; then   # PyCUDA wheel built by ../shared/tools/gpu-wheels.sh
  python3 -m pip install -q --no-index --no-deps --target "$HOME/site" .whl/*.whl
fi
export PYTHONPATH=$HOME/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  git rev-parse HEAD 2>/dev/null; nvcc --version | tail -1; } > "$logs/machine.txt" 2>&1

python3 -m pytest tests/gpu -m gpu -q -p no:cacheprovider -o addopts="" \
  --junitxml="$logs/pytest-gpu.xml" > "$logs/pytest-gpu.log" 2>&1
rc_tests=$?
python3 tests/benchmarks/bench_kernels.py --out "$logs" > "$logs/bench.log" 2>&1
rc_bench=$?

# memcheck: one small launch of every kernel (the per-op and fused tests on a 7x13 frame)
rc_san=0
if command -v compute-sanitizer >/dev/null 2>&1; then
  compute-sanitizer --tool memcheck --error-exitcode 99 --log-file "$logs/memcheck.log" \
    python3 -m pytest tests/gpu -m gpu -q -p no:cacheprovider -o addopts="" \
      -k "7-13-25 or post and 7-13" > "$logs/memcheck-pytest.log" 2>&1
  rc_san=$?
else
  echo "compute-sanitizer not found" > "$logs/memcheck.log"; rc_san=127
fi

echo
echo "=== GPU check ($(head -1 "$logs/machine.txt")) — logs in $logs ==="
printf '%-22s %s\n' "pytest -m gpu" "$([ $rc_tests -eq 0 ] && echo PASS || echo "FAIL ($rc_tests)"): $(tail -1 "$logs/pytest-gpu.log")"
printf '%-22s %s\n' "memcheck" "$([ $rc_san -eq 0 ] && echo PASS || echo "FAIL ($rc_san)"): $(grep -h 'ERROR SUMMARY' "$logs/memcheck.log" | tail -1)"
printf '%-22s %s\n' "benchmark" "$([ $rc_bench -eq 0 ] && echo OK || echo "FAIL ($rc_bench)")"
sed -n '/^kernel benchmark/,$p' "$logs/bench.log"
[ $rc_tests -eq 0 ] && [ $rc_san -eq 0 ] && [ $rc_bench -eq 0 ]
