"""Build the extension once more for each newer x86-64 level, and run a
command (maturin's wheel build) with those builds in the package.

The portable build runs on any x86-64 CPU: candle's quantized kernels choose
AVX2/VNNI at run time (patches/candle-core-0.10.2/0001, 0002), but all the
code around them is SSE2. On an AVX-512 CPU that costs ~10% against a build
for the CPU. So the wheel also carries a build for x86-64-v4 (AVX-512), staged at
``python/mistralvllm/cpu/<level>/_core.abi3.so`` for the command
(pyproject.toml's ``[tool.maturin] include`` puts it in the wheel) and
removed afterwards, so the source tree's own import never sees it. On import
the package loads the newest build the CPU runs
(python/mistralvllm/cpu_builds.py).

Each level has its own target dir (``$CARGO_TARGET_DIR-<level>``), so the
portable build stays warm. On another architecture (aarch64) the command runs
without extra builds.

Usage: python scripts/wheel_cpu_builds.py [--features F] -- COMMAND...
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ("x86-64-v4",)
PROFILE = "dist"
STAGE_DIR = ROOT / "python" / "mistralvllm" / "cpu"


def build_level(level: str, features: str) -> Path:
    """Compile the extension for ``level`` (``-C target-cpu``); its library's path."""
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "rust" / "target"))
    target_dir = target_dir.with_name(f"{target_dir.name}-{level}")
    env = {
        **os.environ,
        "CARGO_TARGET_DIR": str(target_dir),
        "RUSTFLAGS": f"{os.environ.get('RUSTFLAGS', '')} -C target-cpu={level}".strip(),
        "PYO3_PYTHON": os.environ.get("PYO3_PYTHON", sys.executable),
    }
    all_features = ",".join(["pyo3/extension-module", *filter(None, features.split(","))])
    command = ["cargo", "build", "--profile", PROFILE, "--lib", "--manifest-path", str(ROOT / "rust" / "Cargo.toml"), "--features", all_features]
    print(f"wheel_cpu_builds: building for {level} in {target_dir}", flush=True)
    subprocess.run(command, env=env, check=True)
    return target_dir / PROFILE / "lib_core.so"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="", help="cargo features of the wheel's build, comma-separated")
    parser.add_argument("command", nargs="+", help="the command to run with the builds staged (after --)")
    args = parser.parse_args()
    levels = LEVELS if platform.machine() in ("x86_64", "AMD64") else ()
    libraries = {level: build_level(level, args.features) for level in levels}
    shutil.rmtree(STAGE_DIR, ignore_errors=True)
    try:
        for level, library in libraries.items():
            (STAGE_DIR / level).mkdir(parents=True)
            shutil.copy2(library, STAGE_DIR / level / "_core.abi3.so")
        return subprocess.run(args.command).returncode
    finally:
        shutil.rmtree(STAGE_DIR, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
