"""The nominal peak: instruction sets and clock in, an upper bound out, for CPUs we do not have too."""

from __future__ import annotations

import pytest

from edge.benchmark.peak import clock_ghz, nominal_peak, variant_dtype
from edge.system.cpu import cpu_flags

CLOCK = (3.0, "test clock")


@pytest.mark.parametrize(
    ("flags", "dtype", "ops"),
    [
        ({"sse2", "avx", "avx2", "fma"}, "float32", 32),
        ({"sse2", "avx", "avx2", "fma"}, "int8", 128),
        ({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}, "int8", 256),
        ({"avx2", "fma", "avx512f"}, "float32", 64),
        ({"avx2", "fma", "avx_vnni"}, "int8", 128),
        ({"fp", "asimd"}, "int8", 32),
        ({"fp", "asimd", "asimddp"}, "int8", 64),
        ({"fp", "asimd", "asimddp", "i8mm"}, "int8", 128),
        ({"fp", "asimd", "asimdhp"}, "float16", 32),
        ({"fp", "asimd"}, "float32", 16),
    ],
)
def test_ops_per_cycle_follow_the_instruction_set(flags, dtype, ops):
    peak = nominal_peak(dtype, 2, flags, CLOCK)
    assert peak.ops_per_cycle == ops and peak.gops == pytest.approx(2 * 3.0 * ops)
    assert "3.00 GHz" in peak.explain() and str(ops) in peak.explain()


def test_unknown_clock_gives_no_figure_rather_than_a_guess():
    peak = nominal_peak("float32", 4, {"avx2", "fma"}, (None, "not reported"))
    assert peak.gops is None and "unknown" in peak.explain()


def test_reads_this_machines_flags_and_clock():
    cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2445.426\nflags\t\t: fpu sse2 avx avx2 fma\n"
    assert {"avx2", "fma"} <= cpu_flags(cpuinfo)
    ghz, source = clock_ghz(cpuinfo)
    assert ghz is not None and ghz > 0 and source  # cpufreq where the machine has it, else cpu MHz


def test_variant_arithmetic():
    assert [variant_dtype(v) for v in ("int8", "dynamic", "onnx_int8", "float16", "float32", "onnx")] == [
        "int8", "int8", "int8", "float16", "float32", "float32"
    ]  # fmt: skip
