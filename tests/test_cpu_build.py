"""The wheel's second build of `_core` (x86-64-v3): joined into the wheel by
scripts/add_cpu_build.py and picked at import by mistralvllm.cpu_build."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mistralvllm
from mistralvllm.cpu_build import X86_64_V3_DIR, X86_64_V3_FLAGS, cpu_flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from add_cpu_build import WheelError, add_cpu_build  # noqa: E402


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("mistralvllm-1.0.dist-info/RECORD", "stale\n")
    return path


def test_the_v3_extension_is_added_with_its_record_line(tmp_path: Path) -> None:
    default = _wheel(tmp_path / "default.whl", {"mistralvllm/__init__.py": b"", "mistralvllm/_core.abi3.so": b"default"})
    v3 = _wheel(tmp_path / "v3.whl", {"mistralvllm/__init__.py": b"", "mistralvllm/_core.abi3.so": b"v3 build"})
    assert add_cpu_build(default, v3) == "mistralvllm/_x86_64_v3/_core.abi3.so"
    with zipfile.ZipFile(default) as wheel:
        assert wheel.read("mistralvllm/_x86_64_v3/_core.abi3.so") == b"v3 build"
        assert wheel.read("mistralvllm/_core.abi3.so") == b"default"
        record = wheel.read("mistralvllm-1.0.dist-info/RECORD").decode().splitlines()
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"v3 build").digest()).rstrip(b"=").decode()
    assert f"mistralvllm/_x86_64_v3/_core.abi3.so,sha256={digest},8" in record
    assert record[-1] == "mistralvllm-1.0.dist-info/RECORD,," and "stale" not in record
    add_cpu_build(default, v3)  # again: replaced, not doubled
    with zipfile.ZipFile(default) as wheel:
        assert wheel.namelist().count("mistralvllm/_x86_64_v3/_core.abi3.so") == 1


def test_a_wheel_without_one_extension_is_refused(tmp_path: Path) -> None:
    default = _wheel(tmp_path / "default.whl", {"mistralvllm/_core.abi3.so": b"default"})
    empty = _wheel(tmp_path / "v3.whl", {"mistralvllm/__init__.py": b""})
    with pytest.raises(WheelError, match=r"v3\.whl: expected one mistralvllm/_core\*\.so"):
        add_cpu_build(default, empty)


def _import_build(package_root: Path, **env: str) -> str:
    code = "import mistralvllm; print(mistralvllm.CPU_BUILD, mistralvllm._core.__file__)"
    environment = {name: value for name, value in os.environ.items() if name != "MISTRALVLLM_CPU_BUILD"}
    environment.update(PYTHONPATH=str(package_root), **env)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True).stdout


def test_the_v3_build_is_imported_where_the_cpu_runs_it(tmp_path: Path) -> None:
    package = Path(mistralvllm.__file__).parent
    copy = tmp_path / "mistralvllm"
    shutil.copytree(package, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    extension = next(copy.glob("_core*.so"))
    (copy / X86_64_V3_DIR).mkdir()
    shutil.copy(extension.resolve(), copy / X86_64_V3_DIR / extension.name)
    assert _import_build(tmp_path, MISTRALVLLM_CPU_BUILD="default").split()[1] == str(extension)
    if cpu_flags() >= X86_64_V3_FLAGS:
        build, path = _import_build(tmp_path).split()
        assert (build, path) == ("x86-64-v3", str(copy / X86_64_V3_DIR / extension.name))
    else:
        assert _import_build(tmp_path).split()[0] == "default"
