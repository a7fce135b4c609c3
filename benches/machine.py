"""The machine a bench runs on, as its results name it.

Results are files named ``<date>-<host>-<bench>.json``; two machines with
the same host name (every VM here is ``vm``) but different CPUs must not
overwrite each other's figures, so the host carries the widest x86 vector
extension the CPU has: ``vm-avx512``, ``vm-avx2``.
"""

from __future__ import annotations

import platform
from datetime import date
from pathlib import Path
from typing import Any

REPORTED_FLAGS = {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}


def cpu_flags() -> list[str]:
    """The CPU's vector flags that matter to the kernels (empty off x86 Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        if line.startswith("flags"):
            return sorted(set(line.split(":", 1)[1].split()) & REPORTED_FLAGS)
    return []


def host() -> str:
    """This machine's name in results: host name and widest vector extension."""
    flags = cpu_flags()
    widest = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else ""
    name = platform.node() or "host"
    return f"{name}-{widest}" if widest else name


def described(threads: int) -> dict[str, Any]:
    """What every results file opens with: the date, this machine and the threads used."""
    return {
        "date": date.today().isoformat(),
        "host": host(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "threads": threads,
    }
