"""Build llama.cpp's own tools (llama-bench, llama-batched-bench,
llama-server, llama-quantize, llama-mtmd-cli) from the llama.cpp source
vendored in the pinned llama-cpp-python sdist, into the bench venv's
``bin/``, once.

These are the peers' own measuring tools: llama-bench's pp512/tg128 and
llama-server with ``-np 8`` anchor the benches (issue: "llama.cpp's own
tools as the anchor"); llama-mtmd-cli (tools/mtmd/, the CMake target of
that name) runs an image prompt on a text GGUF and its mmproj GGUF
(benches/vision_gguf.py writes both from a Gemma 3 vision directory). The
sdist comes from PyPI through the bench venv's pip, cmake and ninja from
PyPI too (requirements/bench.txt); the build is for this CPU
(``GGML_NATIVE``) without AMX (see the Makefile's LLAMA_CMAKE_ARGS) and
without curl (no network at run time).

Usage: python benches/llama_cpp_tools.py BENCH_VENV [CMAKE_ARG ...]
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements" / "bench.txt"
TOOLS = ("llama-bench", "llama-batched-bench", "llama-server", "llama-quantize", "llama-mtmd-cli")


def pinned_llama_cpp_python() -> str:
    """The ``llama-cpp-python==X`` line of requirements/bench.txt."""
    for line in REQUIREMENTS.read_text().splitlines():
        if re.fullmatch(r"llama-cpp-python==[\w.]+", line.strip()):
            return line.strip()
    raise SystemExit(f"{REQUIREMENTS}: no pinned llama-cpp-python==VERSION line")


def stamp(requirement: str, cmake_args: list[str]) -> str:
    """What the tools were built from, kept beside them: a change rebuilds them."""
    return f"{requirement} {' '.join(cmake_args)}\n"


def main(venv: Path, cmake_args: list[str]) -> None:
    requirement = pinned_llama_cpp_python()
    done = venv / "bin" / ".llama-cpp-tools"
    if all((venv / "bin" / tool).is_file() for tool in TOOLS) and done.is_file() and done.read_text() == stamp(requirement, cmake_args):
        print(f"llama_cpp_tools: {', '.join(TOOLS)} already built from {requirement}")
        return
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    with tempfile.TemporaryDirectory(prefix="llama-cpp-tools-") as scratch:
        work = Path(scratch)
        subprocess.run([*pip, "download", "--no-deps", "--no-binary", "llama-cpp-python", "-d", str(work), requirement], check=True)
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        (source,) = work.glob("llama_cpp_python-*/vendor/llama.cpp")
        build = work / "build"
        cmake = str(venv / "bin" / "cmake")
        configure = [cmake, "-S", str(source), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={venv / 'bin' / 'ninja'}"]
        configure += ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", *cmake_args]
        subprocess.run(configure, check=True)
        subprocess.run([cmake, "--build", str(build), "--target", *TOOLS, "--parallel"], check=True)
        for tool in TOOLS:
            shutil.copy2(build / "bin" / tool, venv / "bin" / tool)
    done.write_text(stamp(requirement, cmake_args))
    print(f"llama_cpp_tools: built {', '.join(TOOLS)} from {requirement} into {venv / 'bin'}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
