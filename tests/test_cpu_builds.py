"""The wheel's builds for newer x86-64 levels: which one the package loads
(mistralvllm/cpu_builds.py), and how `make wheel` stages them
(scripts/wheel_cpu_builds.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mistralvllm
from mistralvllm.cpu_builds import LEVEL_FLAGS, choose_build, cpu_flags, shipped_builds

ROOT = Path(__file__).resolve().parent.parent
V4 = LEVEL_FLAGS["x86-64-v4"]
AVX2_ONLY = V4 - {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def test_auto_takes_the_newest_level_the_cpu_runs() -> None:
    assert choose_build("auto", ["x86-64-v4"], V4 | {"avx512_vnni"}) == "x86-64-v4"
    assert choose_build("auto", ["x86-64-v4"], V4 - {"avx512vl"}) is None
    assert choose_build("auto", ["x86-64-v4"], AVX2_ONLY) is None
    assert choose_build("auto", [], V4) is None
    assert choose_build("base", ["x86-64-v4"], V4) is None


def test_the_builds_shipped_are_the_known_levels_with_their_file(tmp_path: Path) -> None:
    for level in ("x86-64-v4", "x86-64-v9"):
        (tmp_path / level).mkdir()
        (tmp_path / level / "_core.abi3.so").write_bytes(b"")
    (tmp_path / "x86-64-v3").mkdir()
    assert shipped_builds(tmp_path) == ["x86-64-v4"]
    assert shipped_builds(tmp_path / "absent") == []


def test_a_build_asked_for_by_name_must_exist_and_suit_the_cpu() -> None:
    assert choose_build("x86-64-v4", ["x86-64-v4"], V4) == "x86-64-v4"
    with pytest.raises(ImportError, match=r"MISTRALVLLM_CPU_BUILD=x86-64-v4: this CPU lacks avx512bw, avx512f; expected auto or base"):
        choose_build("x86-64-v4", ["x86-64-v4"], V4 - {"avx512f", "avx512bw"})
    with pytest.raises(ImportError, match=r"MISTRALVLLM_CPU_BUILD=x86-64-v3: this installation has no such build; expected one of: auto, base$"):
        choose_build("x86-64-v3", [], V4)


def test_cpu_flags_come_from_the_first_processor(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_the_source_trees_build_is_the_base_one() -> None:
    assert mistralvllm.CPU_BUILD == "base"
    assert Path(mistralvllm._core.__file__).parent == Path(mistralvllm.__file__).parent


def _package_with_a_v4_build(tmp_path: Path) -> Path:
    """A copy of the installed package whose cpu/x86-64-v4/ holds a copy of
    this build: the layout of a wheel from `make wheel`."""
    package = Path(mistralvllm.__file__).parent
    copy = tmp_path / "site" / "mistralvllm"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "cpu"))
    (copy / "cpu" / "x86-64-v4").mkdir(parents=True)
    shutil.copy2(mistralvllm._core.__file__, copy / "cpu" / "x86-64-v4" / "_core.abi3.so")
    return copy.parent


# Runs in a fresh interpreter with the copy first on sys.path. It takes this
# CPU for an x86-64-v4 one, or for an AVX2 one (argv[1]), so the test does
# not depend on the machine; then it chats with the default model.
PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("mistralvllm.cpu_builds", "mistralvllm/cpu_builds.py")
builds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(builds)
flags = builds.LEVEL_FLAGS["x86-64-v4"]
builds.cpu_flags = lambda: flags if sys.argv[1] == "v4" else flags - {"avx512f"}
sys.modules["mistralvllm.cpu_builds"] = builds
import mistralvllm
with mistralvllm.Session(mistralvllm.default_model_path()) as session:
    answer = session.chat([{"role": "user", "content": "Say hi."}], mistralvllm.SamplingParams(max_tokens=4, temperature=0.0))
print(json.dumps({"build": mistralvllm.CPU_BUILD, "file": mistralvllm._core.__file__, "tokens": answer.usage.completion_tokens}))
"""


def _probe(site: Path, cpu: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | env
    return subprocess.run([sys.executable, "-c", PROBE, cpu], cwd=site, env=environ, capture_output=True, text=True, timeout=300)


def test_the_wheels_v4_build_is_loaded_where_the_cpu_has_avx512(tmp_path: Path) -> None:
    site = _package_with_a_v4_build(tmp_path)
    loaded = json.loads(_probe(site, "v4").stdout)
    assert loaded["build"] == "x86-64-v4"
    assert loaded["file"] == str(site / "mistralvllm" / "cpu" / "x86-64-v4" / "_core.abi3.so")
    assert loaded["tokens"] == 4
    base = json.loads(_probe(site, "avx2").stdout)
    assert base["build"] == "base" and base["file"] == str(site / "mistralvllm" / "_core.abi3.so")
    chosen = json.loads(_probe(site, "v4", MISTRALVLLM_CPU_BUILD="base").stdout)
    assert chosen["build"] == "base"
    refused = _probe(site, "avx2", MISTRALVLLM_CPU_BUILD="x86-64-v4")
    assert refused.returncode == 1
    assert "ImportError: MISTRALVLLM_CPU_BUILD=x86-64-v4: this CPU lacks avx512f; expected auto or base" in refused.stderr


def test_make_wheel_stages_the_builds_for_its_command_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import wheel_cpu_builds
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    library = tmp_path / "lib_core.so"
    library.write_bytes(b"a build for x86-64-v4")
    built: list[tuple[str, str]] = []
    monkeypatch.setattr(wheel_cpu_builds, "build_level", lambda level, features: built.append((level, features)) or library)
    monkeypatch.setattr(wheel_cpu_builds.platform, "machine", lambda: "x86_64")
    stage = tmp_path / "package" / "cpu"
    monkeypatch.setattr(wheel_cpu_builds, "STAGE_DIR", stage)
    seen = tmp_path / "seen"
    staged = stage / "x86-64-v4" / "_core.abi3.so"
    command = [sys.executable, "-c", f"import shutil; shutil.copy({str(staged)!r}, {str(seen)!r}); raise SystemExit(3)"]
    monkeypatch.setattr(sys, "argv", ["wheel_cpu_builds.py", "--features", "cuda", "--", *command])
    assert wheel_cpu_builds.main() == 3
    assert built == [("x86-64-v4", "cuda")]
    assert seen.read_bytes() == b"a build for x86-64-v4"
    assert not stage.exists()
    # Elsewhere than on x86-64 the command runs alone.
    monkeypatch.setattr(wheel_cpu_builds.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(sys, "argv", ["wheel_cpu_builds.py", "--", sys.executable, "-c", "raise SystemExit(0)"])
    assert wheel_cpu_builds.main() == 0
    assert built == [("x86-64-v4", "cuda")]
