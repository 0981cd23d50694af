"""What this CPU can do, as the kernels that run the models see it."""

from __future__ import annotations

import platform
from pathlib import Path

# x86 instructions that add u8 x s8 products into 32 bits with no 16-bit step (vpdpbusd, AMX tiles)
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# /proc/cpuinfo flags that numpy's CPUID reading names too: one it denies means cpuinfo is not this process's CPU
CPUID_NAMES = {"avx512_vnni": "AVX512VNNI", "avx512f": "AVX512F", "avx2": "AVX2"}


def is_x86() -> bool:
    """True on a 64- or 32-bit x86 CPU."""
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Instruction-set flags of the first CPU (x86 'flags', ARM 'Features'), as the kernel reports them."""
    if cpuinfo is None:
        cpuinfo = read_cpuinfo()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def read_cpuinfo() -> str:
    """/proc/cpuinfo ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's name: x86's "model name", a Pi's "Model" or an older ARM board's "Hardware" line, else what
    Python's platform says."""
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    names = (
        ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith(("model name", "Model", "Hardware"))
    )
    return next(names, platform.processor())


def _cpuid_features() -> dict[str, bool]:
    """numpy's own reading of CPUID (what a process is really given; {} where numpy does not say)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def x86_int8_dot_product(flags: set[str] | None = None) -> bool:
    """True on an x86 CPU whose int8 kernels add u8 x s8 products straight into 32 bits (VNNI, AMX).

    Without them ONNX Runtime's u8 x s8 kernels (vpmaddubsw) add pairs of products in 16 bits, which
    weights using all 8 bits can saturate. ONNX Runtime chooses its kernels by CPUID, and under an
    emulator (qemu-user) /proc/cpuinfo is the host's while CPUID is the emulated CPU's: both must say
    the same (numpy reads CPUID; it has no name for AVX-VNNI or AMX, so a flag CPUID denies, such as AVX-512
    on an emulated Haswell, discards all of cpuinfo's int8 flags).
    """
    if flags is None:
        if not is_x86():
            return False
        flags = cpu_flags()
        cpuid = _cpuid_features()
        masked = [name for flag, name in CPUID_NAMES.items() if flag in flags and not cpuid.get(name, True)]
        if masked:  # /proc/cpuinfo is another CPU's (an emulator's host): none of its int8 flags is ours
            flags = flags - INT8_DOT_FLAGS
    return bool(flags & INT8_DOT_FLAGS)
