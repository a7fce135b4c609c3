"""Which build of the extension this process loads.

A wheel from ``make wheel`` carries two builds of ``_core``: the portable one
(any x86-64; its quantized kernels pick AVX2/VNNI at run time) beside this
file, and one compiled for x86-64-v4 (AVX-512) under ``cpu/x86-64-v4/``. The
portable build's code around the kernels (element-wise ops, norms, softmax,
copies) is SSE2, which costs ~10% on an AVX-512 CPU; a build for x86-64-v3
(AVX2) read the same as the portable one there, so the wheel has none. On
import the package loads the newest build this CPU runs, in place of the
portable one. A build from source (``make build``, ``pip install .``) has
only the one beside this file.

``MISTRALVLLM_CPU_BUILD`` chooses by hand: ``auto`` (the default), ``base``
(the build beside this file), or a level such as ``x86-64-v4``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

CPU_BUILD_VARIABLE = "MISTRALVLLM_CPU_BUILD"
BUILDS_DIR = Path(__file__).resolve().parent / "cpu"
EXTENSION_FILE = "_core.abi3.so"

# What each build's code needs from the CPU, as /proc/cpuinfo names it: the
# target features rustc enables for that -C target-cpu (abm is lzcnt, pni
# is sse3, cx16 is cmpxchg16b).
X86_64_V2_FLAGS = frozenset({"sse", "sse2", "fxsr", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16"})
X86_64_V3_FLAGS = X86_64_V2_FLAGS | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
# Oldest level first.
LEVEL_FLAGS: dict[str, frozenset[str]] = {
    "x86-64-v4": X86_64_V3_FLAGS | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's feature flags (empty where there is no /proc/cpuinfo)."""
    try:
        with cpuinfo.open() as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def shipped_builds(builds_dir: Path = BUILDS_DIR) -> list[str]:
    """The levels whose builds are installed, newest first."""
    return [level for level in reversed(LEVEL_FLAGS) if (builds_dir / level / EXTENSION_FILE).is_file()]


def choose_build(requested: str, shipped: list[str], flags: frozenset[str]) -> str | None:
    """The level to load (None: the base build) for a ``MISTRALVLLM_CPU_BUILD``
    value, the levels shipped and the CPU's flags."""
    if requested == "base":
        return None
    if requested == "auto":
        return next((level for level in shipped if LEVEL_FLAGS[level] <= flags), None)
    if requested not in shipped:
        expected = ", ".join(["auto", "base", *shipped])
        raise ImportError(f"{CPU_BUILD_VARIABLE}={requested}: this installation has no such build; expected one of: {expected}")
    missing = sorted(LEVEL_FLAGS[requested] - flags)
    if missing:
        raise ImportError(f"{CPU_BUILD_VARIABLE}={requested}: this CPU lacks {', '.join(missing)}; expected auto or base")
    return requested


def load(package: str, environ: Mapping[str, str] = os.environ) -> str:
    """Load the chosen build as ``<package>._core`` and return its level, or
    return ``"base"`` and leave the base build to the ordinary import."""
    level = choose_build(environ.get(CPU_BUILD_VARIABLE, "auto"), shipped_builds(), cpu_flags())
    if level is None:
        return "base"
    name = f"{package}._core"
    # The file's init function is PyInit__core: the loader finds it by the
    # module's name, not by the file's.
    spec = importlib.util.spec_from_file_location(name, BUILDS_DIR / level / EXTENSION_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    sys.modules[package]._core = module  # type: ignore[attr-defined]  # as an ordinary import of a submodule does
    return level
