"""Parsing what a host says about itself: CPU model, L4T release, CUDA toolkit release.

One reader each for the deploy facts (``deploy.facts``), the latency fingerprint
(``edge.latency.fingerprint``) and ``hsi-edge bench``.  The parsers take text and return None
when it does not have the expected form; :func:`cpu_model` also reads ``/proc/cpuinfo``.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

__all__ = ["parse_cpu_model", "cpu_model", "parse_l4t", "parse_nvcc_release"]

#: ``/proc/cpuinfo`` keys naming the CPU, first match wins: x86 ("model name"), older ARM
#: kernels ("Hardware"), Raspberry Pi style boards ("Model").
CPU_MODEL_KEYS = ("model name", "Hardware", "Model")


def parse_cpu_model(cpuinfo: str) -> str | None:
    """The CPU model named in ``/proc/cpuinfo`` text (see :data:`CPU_MODEL_KEYS`), or None."""
    for key in CPU_MODEL_KEYS:
        m = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return None


def cpu_model() -> str | None:
    """This machine's CPU model: ``/proc/cpuinfo``, else ``platform.processor()``, else None."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpu_model(text) or platform.processor() or None


def parse_l4t(text: str) -> str | None:
    """The L4T version in ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 4.0, ...``
    -> ``"36.4.0"``), or None when the text does not have that form."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", text)
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None


def parse_nvcc_release(text: str) -> str | None:
    """The CUDA release in ``nvcc --version`` output (``... release 12.4, V12.4.131`` ->
    ``"12.4"``), or None."""
    m = re.search(r"release (\d+\.\d+)", text)
    return m.group(1) if m else None
