"""The hardware's nominal peak for a data type: threads x clock x operations per cycle.

Operations per cycle are upper bounds for the instruction set found (both vector pipes busy,
every thread a whole core), so that a floor computed from them is one no run can beat. The
clock is what the machine reports; a VM often reports its base clock while the CPU boosts
higher, which is why the bench also measures what the inference library reaches on plain
matrix products and holds each row against the larger of the two.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from edge.formats.variants import BY_NAME
from edge.system.cpu import cpu_flags, read_cpuinfo

# (flag that must be present, operations per cycle per core, what it assumes), best first.
X86 = {
    "float32": (
        ("avx512f", 64, "AVX-512: 2 FMA pipes x 16 float32 lanes x 2"),
        ("fma", 32, "AVX2+FMA: 2 FMA pipes x 8 float32 lanes x 2"),
        ("avx", 16, "AVX: 1 add + 1 multiply pipe x 8 lanes"),
        ("sse2", 8, "SSE2: 1 add + 1 multiply pipe x 4 lanes"),
    ),
    "float16": (
        ("avx512fp16", 128, "AVX512-FP16: 2 FMA pipes x 32 float16 lanes x 2"),
        ("avx512f", 64, "AVX-512: float16 weights computed as float32"),
        ("fma", 32, "AVX2+FMA: float16 weights computed as float32"),
        ("avx", 16, "AVX: float16 weights computed as float32"),
        ("sse2", 8, "SSE2: float16 weights computed as float32"),
    ),
    "int8": (
        ("avx512_vnni", 256, "AVX-512 VNNI: 2 pipes x 64 u8*s8 multiply-adds (vpdpbusd) x 2"),
        ("avx512bw", 256, "AVX-512BW: 2 pipes x 64 u8*s8 products (vpmaddubsw) x 2"),
        ("avx_vnni", 128, "AVX-VNNI: 2 pipes x 32 u8*s8 multiply-adds (vpdpbusd ymm) x 2"),
        ("avx2", 128, "AVX2: 2 pipes x 32 u8*s8 products (vpmaddubsw) x 2"),
        ("sse4_1", 64, "SSE4.1: 2 pipes x 16 u8*s8 products (pmaddubsw) x 2"),
    ),
}
ARM = {
    "float32": (("asimd", 16, "NEON: 2 FMA pipes x 4 float32 lanes x 2"), ("fp", 4, "VFP: 2 pipes x 1 lane x 2")),
    "float16": (
        ("asimdhp", 32, "NEON FP16: 2 FMA pipes x 8 float16 lanes x 2"),
        ("asimd", 16, "NEON: float16 weights computed as float32"),
    ),
    "int8": (
        ("i8mm", 128, "i8mm: 2 pipes x 32 int8 multiply-adds (smmla) x 2"),
        ("asimddp", 64, "dot product: 2 pipes x 16 int8 multiply-adds (sdot) x 2"),
        ("asimd", 32, "NEON: 2 pipes x 8 int8 multiply-adds (smlal) x 2"),
    ),
}


@dataclass(frozen=True)
class NominalPeak:
    dtype: str
    threads: int
    ghz: float | None
    clock_source: str
    ops_per_cycle: int | None
    isa: str

    @property
    def gops(self) -> float | None:
        """Giga-operations per second (2 per multiply-add), or None when the clock is unknown."""
        if self.ghz is None or self.ops_per_cycle is None:
            return None
        return self.threads * self.ghz * self.ops_per_cycle

    def explain(self) -> str:
        if self.gops is None:
            return f"{self.dtype}: nominal peak unknown ({self.isa}; clock {self.clock_source})"
        return (
            f"{self.dtype}: {self.threads} thread(s) x {self.ghz:.2f} GHz ({self.clock_source}) x "
            f"{self.ops_per_cycle} ops/cycle ({self.isa}) = {self.gops:.0f} GOP/s"
        )


def clock_ghz(cpuinfo: str | None = None) -> tuple[float | None, str]:
    """The highest clock the machine states, and where it came from."""
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        return khz / 1e6, "cpufreq maximum"
    except (OSError, ValueError):
        pass
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    mhz = [float(line.split(":", 1)[1]) for line in cpuinfo.splitlines() if line.startswith("cpu MHz")]
    if mhz:
        return max(mhz) / 1e3, "/proc/cpuinfo's cpu MHz; the boost clock may be higher"
    return None, "not reported"


def nominal_peak(
    dtype: str, threads: int, flags: set[str] | None = None, clock: tuple[float | None, str] | None = None
) -> NominalPeak:
    """The nominal peak of ``threads`` cores for ``dtype`` ("float32", "float16" or "int8") on this CPU."""
    flags = cpu_flags() if flags is None else flags
    ghz, source = clock_ghz() if clock is None else clock
    arm = bool({"asimd", "fp"} & flags) if flags else platform.machine().lower() in ("aarch64", "arm64")
    table = ARM if arm and "sse2" not in flags else X86
    for flag, ops, isa in table[dtype]:
        if flag in flags:
            return NominalPeak(dtype, threads, ghz, source, ops, isa)
    return NominalPeak(dtype, threads, ghz, source, None, "no known vector instruction set")


def variant_dtype(variant: str) -> str:
    """The arithmetic a variant's kernels may do: int8 for full-integer and dynamic-range models, float16
    where the CPU computes in half precision, else float32."""
    return BY_NAME[variant].dtype if variant in BY_NAME else "float32"
