"""The patch series as git history (scripts/patch_series.py, make
patches-edit / make patches-export): laid out and written back it gives the
same files byte for byte, and what it writes is what scripts/patch_crates.py
applies. Standard library and git only: no build needed."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load(name: str) -> types.ModuleType:
    """The script as a module, shared with tests/test_patch_crates.py."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


patch_crates = _load("patch_crates")
patch_series = _load("patch_series")
PatchError = patch_crates.PatchError


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgSign=false", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("series", ["rayon-core-1.13.0", "cudaforge-0.1.6"])
def test_a_series_laid_out_and_exported_is_the_same_files(series: str, tmp_path: Path) -> None:
    """export(edit(patches)) == patches, byte for byte, for small real crates."""
    shutil.copytree(REPO / "patches" / series, tmp_path / "patches" / series)
    shutil.copy(REPO / "Cargo.lock", tmp_path / "Cargo.lock")
    patch_series.edit(tmp_path, [])
    repo = tmp_path / "patched-edit" / series.rsplit("-", 1)[0]
    patches = sorted((REPO / "patches" / series).glob("*.patch"))
    assert git(repo, "rev-list", "--count", "upstream..HEAD").strip() == str(len(patches))
    shutil.rmtree(tmp_path / "patches" / series)
    patch_series.export(tmp_path, [])
    for original in (REPO / "patches" / series).iterdir():
        assert (tmp_path / "patches" / series / original.name).read_bytes() == original.read_bytes(), original.name
    assert sorted(p.name for p in (tmp_path / "patches" / series).iterdir()) == sorted(p.name for p in (REPO / "patches" / series).iterdir())


def _crate(version: str, files: dict[str, bytes]) -> bytes:
    """A .crate (gzipped tar under demo-<version>/) holding these files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"demo-{version}/{name}")
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SOURCE = {
    "Cargo.toml": b'[package]\nname = "demo"\nversion = "1.0.0"\n',
    "src/lib.rs": b"".join(f"pub fn f{i}() -> u32 {{\n    {i}\n}}\n\n".encode() for i in range(12)),
    "src/old.rs": b"// to be deleted\npub const OLD: u8 = 1;\n",
    "README": b"no newline at the end",
    ".gitignore": b"src/\n",  # a crate's own ignore rules must not hide its sources
}


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository root patching a synthetic crate, demo 1.0.0 (no patches yet)."""
    monkeypatch.setenv("CARGO_HOME", str(tmp_path / "cargo-home"))
    monkeypatch.setenv("MISTRALVLLM_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "root"
    (root / "patches" / "demo-1.0.0").mkdir(parents=True)
    _publish(tmp_path, root, "1.0.0", SOURCE)
    return root


def _publish(tmp_path: Path, root: Path, version: str, files: dict[str, bytes]) -> str:
    """The crate in the step's download cache and pinned by Cargo.lock; its sha256."""
    data = _crate(version, files)
    (tmp_path / "cache" / "crates").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache" / "crates" / f"demo-{version}.crate").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    source = 'source = "registry+https://github.com/rust-lang/crates.io-index"'
    (root / "Cargo.lock").write_text(f'[[package]]\nname = "demo"\nversion = "{version}"\n{source}\nchecksum = "{digest}"\n')
    if (root / "patches" / f"demo-{version}").is_dir():
        (root / "patches" / f"demo-{version}" / "SHA256SUMS").write_text(f"{digest}  demo-{version}.crate\n")
    return digest


def _tree(directory: Path) -> dict[str, bytes]:
    skip = {".git", patch_crates.STAMP}
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not skip & set(p.relative_to(directory).parts)
    }


def _edit_demo(repo: Path) -> None:
    """Three patches: a change, a new file and a deleted one, a last line without newline."""
    lib = repo / "src" / "lib.rs"
    lib.write_text(lib.read_text().replace("    3\n", "    3 + 1\n").replace("    9\n", "    9 * 2\n"))
    git(repo, "commit", "-qam", "Demo: f3 and f9 changed\n\nWhat was wrong: two values.\nHow it showed: nowhere.\nProof: none.")
    (repo / "src" / "new.rs").write_text("pub const NEW: u8 = 2;\n")
    (repo / "src" / "old.rs").unlink()
    git(repo, "add", "--all", "--force")
    git(repo, "commit", "-qm", "A new file, an old one gone\n\n# not a comment: kept verbatim\n")
    (repo / "README").write_text("no newline at the end, still")
    git(repo, "commit", "-qam", "README's last line")


def test_an_edited_series_is_exported_as_patch_crates_applies_it(demo: Path) -> None:
    patch_series.edit(demo, ["demo"])
    repo = demo / "patched-edit" / "demo"
    assert _tree(repo) == {name: data for name, data in SOURCE.items()}
    _edit_demo(repo)
    patch_series.export(demo, ["demo"])
    written = sorted(p.name for p in (demo / "patches" / "demo-1.0.0").glob("*.patch"))
    assert written == ["0001-demo-f3-and-f9-changed.patch", "0002-a-new-file-an-old-one-gone.patch", "0003-readme-s-last-line.patch"]
    first = (demo / "patches" / "demo-1.0.0" / written[0]).read_text()
    assert first.startswith("Demo: f3 and f9 changed\n\nWhat was wrong: two values.\n") and "\n\n--- a/src/lib.rs\n+++ b/src/lib.rs\n" in first
    assert "diff --git" not in first and "\nindex " not in first
    # What cargo builds is what the repository holds.
    [prepared] = patch_crates.prepare(demo, quiet=True)
    assert _tree(prepared) == _tree(repo)
    # And laid out again, the series exports to the same bytes.
    exported = {p.name: p.read_bytes() for p in (demo / "patches" / "demo-1.0.0").iterdir()}
    shutil.rmtree(repo)
    patch_series.edit(demo, ["demo"])
    assert git(repo, "log", "--format=%B", "-1", "HEAD~1") == "A new file, an old one gone\n\n# not a comment: kept verbatim\n\n"
    patch_series.export(demo, ["demo"])
    assert {p.name: p.read_bytes() for p in (demo / "patches" / "demo-1.0.0").iterdir()} == exported


def test_commits_not_yet_exported_are_never_overwritten(demo: Path) -> None:
    patch_series.edit(demo, ["demo"])
    repo = demo / "patched-edit" / "demo"
    _edit_demo(repo)
    with pytest.raises(PatchError, match=r"has commits that differ from .*make patches-export"):
        patch_series.edit(demo, ["demo"])
    (repo / "README").write_text("uncommitted")
    with pytest.raises(PatchError, match="has changes not committed"):
        patch_series.export(demo, ["demo"])


def test_a_commit_with_a_fixup_is_folded_into_its_patch(demo: Path) -> None:
    patch_series.edit(demo, ["demo"])
    repo = demo / "patched-edit" / "demo"
    _edit_demo(repo)
    patch_series.export(demo, ["demo"])
    (repo / "src" / "lib.rs").write_text((repo / "src" / "lib.rs").read_text().replace("    9 * 2\n", "    9 * 3\n"))
    git(repo, "commit", "-qa", "--fixup=HEAD~2")
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@localhost", "rebase", "-q", "-i", "--autosquash", "upstream"],
        env={**os.environ, "GIT_SEQUENCE_EDITOR": "true"},
        check=True,
        capture_output=True,
    )
    patch_series.export(demo, ["demo"])
    first = (demo / "patches" / "demo-1.0.0" / "0001-demo-f3-and-f9-changed.patch").read_text()
    assert "+    9 * 3\n" in first and "9 * 2" not in first
    assert len(list((demo / "patches" / "demo-1.0.0").glob("*.patch"))) == 3


def test_the_series_moves_to_a_new_release(demo: Path, tmp_path: Path) -> None:
    """upstream: the new release under the commits, then export to patches/demo-<new>/."""
    patch_series.edit(demo, ["demo"])
    repo = demo / "patched-edit" / "demo"
    _edit_demo(repo)
    patch_series.export(demo, ["demo"])
    newer = {**SOURCE, "Cargo.toml": SOURCE["Cargo.toml"].replace(b"1.0.0", b"1.1.0"), "CHANGELOG": b"1.1.0\n"}
    digest = _publish(tmp_path, demo, "1.1.0", newer)
    patch_series.upstream(demo, "demo", "1.1.0")
    patch_series.export(demo, ["demo"])
    assert not (demo / "patches" / "demo-1.0.0").exists()
    assert (demo / "patches" / "demo-1.1.0" / "SHA256SUMS").read_text() == f"{digest}  demo-1.1.0.crate\n"
    [prepared] = patch_crates.prepare(demo, quiet=True)
    assert prepared.name == "demo-1.1.0" and _tree(prepared) == _tree(repo)
    assert (prepared / "CHANGELOG").is_file() and not (prepared / "src" / "old.rs").exists()


def test_a_release_the_lock_file_does_not_pin_is_refused(demo: Path) -> None:
    patch_series.edit(demo, ["demo"])
    with pytest.raises(PatchError, match=r"pins no demo 2\.0\.0 .*cargo update -p demo --precise 2\.0\.0"):
        patch_series.upstream(demo, "demo", "2.0.0")
