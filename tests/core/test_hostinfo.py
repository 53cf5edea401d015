"""Host self-description parsers (CPU model, L4T, nvcc) on recorded texts."""

from __future__ import annotations

from edge.core.hostinfo import cpu_model, parse_cpu_model, parse_l4t, parse_nvcc_release

X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n"
# an older aarch64 kernel names the board under "Hardware" and has no "model name"
ARM = "processor\t: 0\nBogoMIPS\t: 62.50\nCPU part\t: 0xd42\n\nHardware\t: NVIDIA Orin\n"
NV_TEGRA = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64"
NVCC = ("nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 12.4, "
        "V12.4.131\nBuild cuda_12.4.r12.4/compiler.34097967_0\n")


def test_cpu_model_from_cpuinfo_text():
    assert parse_cpu_model(X86) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    assert parse_cpu_model(ARM) == "NVIDIA Orin"
    assert parse_cpu_model("processor\t: 0\n") is None
    got = cpu_model()
    assert got is None or (isinstance(got, str) and got == got.strip() and got)


def test_l4t_and_nvcc_release():
    assert parse_l4t(NV_TEGRA) == "36.4.0"
    assert parse_l4t("Ubuntu 22.04") is None
    assert parse_nvcc_release(NVCC) == "12.4"
    assert parse_nvcc_release("") is None
