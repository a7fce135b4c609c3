"""The patch layer over the published crates (scripts/patch_crates.py): it
builds the patched sources from the exact crates.io release, and stops with
a message naming the file when anything does not fit."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from service import REPO

spec = importlib.util.spec_from_file_location("patch_crates", REPO / "scripts" / "patch_crates.py")
assert spec is not None and spec.loader is not None
patch_crates = importlib.util.module_from_spec(spec)
sys.modules["patch_crates"] = patch_crates
spec.loader.exec_module(patch_crates)
PatchError = patch_crates.PatchError

CRATE = "mistralrs-core-0.8.1"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of what the step reads, for one crate: its patches and Cargo.lock."""
    shutil.copytree(REPO / "patches" / CRATE, tmp_path / "patches" / CRATE)
    shutil.copy(REPO / "Cargo.lock", tmp_path / "Cargo.lock")
    return tmp_path


@pytest.fixture(scope="module")
def published() -> bytes:
    """The published .crate, as the step finds it here (Cargo's cache or its own)."""
    expected = (REPO / "patches" / CRATE / "SHA256SUMS").read_text().split()[0]
    data = patch_crates._crate_bytes("mistralrs-core", "0.8.1", expected, Path.home() / ".cache" / "mistralvllm" / "crates")
    assert hashlib.sha256(data).hexdigest() == expected
    return data


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Cargo cache and a 'crates.io' that is a local directory."""
    registry = tmp_path / "registry"
    (registry / "mistralrs-core").mkdir(parents=True)
    monkeypatch.setenv("CARGO_HOME", str(tmp_path / "cargo-home"))
    monkeypatch.setenv("MISTRALVLLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(patch_crates, "DOWNLOAD_URL", registry.as_uri() + "/{name}/{name}-{version}.crate")
    return registry


def test_the_patched_sources_are_built_from_the_published_crate(root: Path) -> None:
    [prepared] = patch_crates.prepare(root, quiet=True)
    assert prepared == root / "patched" / CRATE
    attention = (prepared / "src/attention/backends/cpu.rs").read_text()
    # Our patches, in order: the first (0001-cpu-attention-kernel) puts one
    # kernel in place of the single-query one, the last (0013-cpu-silu-...)
    # uses that kernel's e^x.
    assert "fn softmax_and_weighted_values" in attention and "fn flash_attn_cpu_single_q" not in attention
    assert "crate::attention::exp_of_non_positive" in (prepared / "src/ops.rs").read_text()
    assert (prepared / "Cargo.toml").is_file()
    stamp = prepared / patch_crates.STAMP
    before = stamp.stat().st_mtime_ns, (prepared / "src/lib.rs").stat().st_mtime_ns
    patch_crates.prepare(root, quiet=True)
    assert (stamp.stat().st_mtime_ns, (prepared / "src/lib.rs").stat().st_mtime_ns) == before, "an unchanged patch set must not rebuild"


def test_the_repository_patches_are_what_cargo_builds() -> None:
    """Cargo.toml points at the step's output for every patched crate."""
    cargo_toml = (REPO / "Cargo.toml").read_text()
    for patch_dir in (p for p in (REPO / "patches").iterdir() if p.is_dir()):
        assert f'path = "patched/{patch_dir.name}"' in cargo_toml
        for patch in patch_dir.glob("*.patch"):
            header = patch.read_text().split("\n--- a/", 1)[0]
            assert "What was wrong:" in header and "How it showed:" in header and "Proof:" in header, patch.name
            assert "\nForwarded: " in header and "\nLast-Update: " in header, patch.name


def test_a_patch_that_does_not_apply_names_itself_and_the_crate(root: Path) -> None:
    patch = next((root / "patches" / CRATE).glob("0001-*.patch"))
    patch.write_text(
        patch.read_text().replace("-    let mut scratch = vec![0f32; kv_tiles * h * dv];", "-    let mut scratch = vec![1f32; kv_tiles * h * dv];")
    )
    with pytest.raises(PatchError, match=rf"{patch.name}: does not apply to mistralrs-core 0.8.1"):
        patch_crates.prepare(root, quiet=True)
    assert not (root / "patched" / CRATE).exists(), "nothing half-patched is left for cargo"


def test_a_lock_file_on_another_version_is_refused(root: Path) -> None:
    lock = root / "Cargo.lock"
    lock.write_text(lock.read_text().replace('name = "mistralrs-core"\nversion = "0.8.1"', 'name = "mistralrs-core"\nversion = "0.8.2"'))
    with pytest.raises(PatchError, match=r"Cargo.lock: pins mistralrs-core 0.8.2, but .*mistralrs-core-0.8.1 patches 0.8.1"):
        patch_crates.prepare(root, quiet=True)


def test_a_corrupted_download_is_refused(root: Path, offline: Path) -> None:
    (offline / "mistralrs-core" / f"{CRATE}.crate").write_bytes(b"not a crate")
    with pytest.raises(PatchError, match=r"sha256 .* is not the .* recorded in patches/mistralrs-core-0.8.1/SHA256SUMS"):
        patch_crates.prepare(root, quiet=True)


def test_a_missing_crate_names_the_place_it_looked(root: Path, offline: Path) -> None:
    with pytest.raises(PatchError, match=rf"{CRATE}.crate: not in Cargo's cache and the download from .* failed"):
        patch_crates.prepare(root, quiet=True)


def test_a_corrupted_cache_entry_is_passed_over(root: Path, published: bytes, offline: Path, tmp_path: Path) -> None:
    """A damaged .crate in Cargo's cache is not used; the good download is."""
    cache = tmp_path / "cargo-home" / "registry" / "cache" / "index.crates.io-test"
    cache.mkdir(parents=True)
    (cache / f"{CRATE}.crate").write_bytes(b"damaged")
    (offline / "mistralrs-core" / f"{CRATE}.crate").write_bytes(published)
    [prepared] = patch_crates.prepare(root, quiet=True)
    assert (prepared / "Cargo.toml").is_file()
    assert (tmp_path / "cache" / "crates" / f"{CRATE}.crate").read_bytes() == published


def test_a_checksum_file_without_the_crate_is_refused(root: Path) -> None:
    (root / "patches" / CRATE / "SHA256SUMS").write_text("")
    with pytest.raises(PatchError, match=rf"SHA256SUMS: expected a line '<sha256>  {CRATE}.crate'"):
        patch_crates.prepare(root, quiet=True)


def test_the_sdist_carries_our_patches_and_no_upstream_source(tmp_path: Path) -> None:
    """`pip install` of the sdist rebuilds the patched crate from crates.io:
    the sdist holds patches/, the step and the [patch] table that points at
    its output, never the patched upstream sources."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    built = subprocess.run(
        [sys.executable, "-c", f"import build_backend; print(build_backend.build_sdist({str(tmp_path)!r}))"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    with tarfile.open(tmp_path / built.stdout.split()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {f"patches/{CRATE}/SHA256SUMS", "scripts/patch_crates.py", "scripts/build_backend.py", "Cargo.lock"} <= names
    assert {p.relative_to(REPO).as_posix() for p in (REPO / "patches" / CRATE).glob("*.patch")} <= names
    assert not [name for name in names if name.startswith("patched/")], sorted(names)[:20]
    with tarfile.open(tmp_path / built.stdout.split()[-1]) as sdist:
        manifest = next(m for m in sdist.getmembers() if m.name.count("/") == 1 and m.name.endswith("/Cargo.toml"))
        assert f'path = "patched/{CRATE}"' in sdist.extractfile(manifest).read().decode()
