"""Which build of the native extension this CPU runs.

A wheel from `make wheel` carries two builds of ``_core``: the default one
for any x86-64 CPU (its quantized kernels still pick AVX2 at run time,
patches/candle-core-0.10.2/0003), and one compiled for x86-64-v3 (AVX2,
FMA, F16C, BMI: every x86 CPU since 2013-2015), where everything else
candle and mistral.rs compute (activation quantization, norms, softmax) is
vectorized too. The package imports the x86-64-v3 build when the CPU has
those features, before anything imports ``_core``. A build from source
(``make build``, ``pip install .``) has one ``_core`` only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# Where the wheel puts the x86-64-v3 build, beside the default one.
X86_64_V3_DIR = "_x86_64_v3"
# The CPU flags (as /proc/cpuinfo names them) that x86-64-v3 code needs.
X86_64_V3_FLAGS = frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})
# Set to "default" to run the default build on any CPU (to compare them).
OVERRIDE_VARIABLE = "MISTRALVLLM_CPU_BUILD"


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux); empty where /proc/cpuinfo is not there."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def load_core() -> str:
    """Import ``mistralvllm._core`` from the x86-64-v3 build where the wheel
    has one and this CPU runs it; the name of the build that will be used
    (``"x86-64-v3"`` or ``"default"``)."""
    if "mistralvllm._core" in sys.modules or os.environ.get(OVERRIDE_VARIABLE) == "default":
        return "default"
    builds = sorted((Path(__file__).parent / X86_64_V3_DIR).glob("_core*.so"))
    if not builds or not cpu_flags() >= X86_64_V3_FLAGS:
        return "default"
    spec = importlib.util.spec_from_file_location("mistralvllm._core", builds[0])
    if spec is None or spec.loader is None:
        return "default"
    module = importlib.util.module_from_spec(spec)
    sys.modules["mistralvllm._core"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["mistralvllm._core"]
        raise
    # As an import statement would: the package's attribute.
    sys.modules["mistralvllm"]._core = module  # type: ignore[attr-defined]
    return "x86-64-v3"


# The build this process uses; the package imports this module before `_core`.
CPU_BUILD = load_core()
