"""pytest-benchmark machine info with the unit's fingerprint.

pytest-benchmark's own ``machine_info`` knows the CPU and Python but not the GPU, driver,
Jetson model, power mode, L4T, CUDA/TensorRT versions or the git commit (NVIDIA/Fuser PR #1198
adds the GPU the same way; ../shared/research/latency_preview.md A.2).  The hook adds
:func:`edge.latency.fingerprint.collect` under ``hsi_edge`` and the hardware key at the top
level, so saved runs (``--benchmark-autosave``) can be sorted per unit, e.g. with
``--benchmark-storage=file://.benchmarks/<hardware_key>``.
"""

from __future__ import annotations


def pytest_benchmark_update_machine_info(config, machine_info):
    from edge.latency.fingerprint import collect

    fp = collect()
    machine_info["hsi_edge"] = fp
    machine_info["hardware_key"] = fp["hardware_key"]
