"""Prepare the patched crates that Cargo.toml's ``[patch.crates-io]`` names.

We build on the published mistral.rs and candle crates and carry our own
fixes to them as patches: ``patches/<crate>-<version>/NNNN-what.patch``.
For each such directory this takes the crate's published source (the
``.crate`` file from Cargo's download cache, else from crates.io), checks it
against the sha256 in ``patches/<crate>-<version>/SHA256SUMS``, unpacks it
into ``patched/<crate>-<version>/`` (generated, git-ignored) and applies the
patches in name order. No upstream source is kept in the repository.

Cargo resolves ``[patch]`` before any build script runs, so this must run
before every cargo or maturin call: the Makefile and the PEP 517 backend
(scripts/build_backend.py) do. A directory already prepared from the same
crate and patches is left alone, so cargo does not rebuild it. Anything
wrong (a patch that does not apply, a checksum that differs, a Cargo.lock
that pins another version) stops the build with a message naming the file.

Usage: python3 scripts/patch_crates.py [REPOSITORY_ROOT]
Standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

DOWNLOAD_URL = "https://static.crates.io/crates/{name}/{name}-{version}.crate"
STAMP = ".mistralvllm-patches"
CRATE_DIR = re.compile(r"^(?P<name>[A-Za-z0-9_-]+?)-(?P<version>\d+\.\d+\.\d+[A-Za-z0-9.+-]*)$")


class PatchError(Exception):
    """The patched sources cannot be prepared; the message names the file."""


def _expected_sha256(patch_dir: Path, crate_file: str) -> str:
    sums = patch_dir / "SHA256SUMS"
    try:
        lines = sums.read_text().splitlines()
    except OSError as e:
        raise PatchError(f"{sums}: cannot read the crate's checksum ({e.strerror})") from None
    for line in lines:
        digest, _, name = line.strip().partition("  ")
        if name == crate_file and re.fullmatch(r"[0-9a-f]{64}", digest):
            return digest
    raise PatchError(f"{sums}: expected a line '<sha256>  {crate_file}'")


def _locked_versions(lock_file: Path, name: str) -> list[str]:
    try:
        text = lock_file.read_text()
    except OSError as e:
        raise PatchError(f"{lock_file}: cannot read ({e.strerror})") from None
    return re.findall(rf'\[\[package\]\]\nname = "{re.escape(name)}"\nversion = "([^"]+)"', text)


def _cargo_cache_dirs() -> list[Path]:
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    return sorted((cargo_home / "registry" / "cache").glob("*"))


def _crate_bytes(name: str, version: str, expected: str, download_dir: Path) -> bytes:
    """The published .crate, from a cache if one holds it with the right checksum."""
    crate_file = f"{name}-{version}.crate"
    for directory in [*_cargo_cache_dirs(), download_dir]:
        candidate = directory / crate_file
        if candidate.is_file():
            data = candidate.read_bytes()
            if hashlib.sha256(data).hexdigest() == expected:
                return data
            print(f"patch_crates: {candidate}: checksum differs from the expected {expected}; ignoring it", file=sys.stderr)
    url = DOWNLOAD_URL.format(name=name, version=version)
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
    except OSError as e:
        raise PatchError(f"{crate_file}: not in Cargo's cache and the download from {url} failed ({e})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise PatchError(f"{url}: sha256 {actual} is not the {expected} recorded in patches/{name}-{version}/SHA256SUMS")
    download_dir.mkdir(parents=True, exist_ok=True)
    (download_dir / crate_file).write_bytes(data)
    return data


def _download_dir() -> Path:
    """Where crates fetched from crates.io are kept (Cargo's cache is only read)."""
    return Path(os.environ.get("MISTRALVLLM_CACHE_DIR", Path.home() / ".cache" / "mistralvllm")) / "crates"


def _unpack(data: bytes, name: str, version: str, into: Path) -> Path:
    prefix = f"{name}-{version}"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.name != prefix and not member.name.startswith(prefix + "/"):
                raise PatchError(f"{prefix}.crate: unexpected entry {member.name!r}")
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, filter="data")
        else:  # Python before 3.10.12: the names were checked above
            archive.extractall(into)
    return into / prefix


def _apply(patch: Path, source: Path, crate: str) -> None:
    result = subprocess.run(
        ["patch", "-p1", "--forward", "--batch", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-", "-d", str(source), "-i", str(patch.resolve())],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise PatchError(f"{patch}: does not apply to {crate} (the version Cargo.lock pins):\n{output}")


def _stamp(expected_sha: str, patches: list[Path]) -> str:
    digest = hashlib.sha256(expected_sha.encode())
    for patch in patches:
        digest.update(patch.name.encode() + b"\0" + patch.read_bytes())
    return digest.hexdigest()


def prepare(root: Path, *, quiet: bool = False) -> list[Path]:
    """Prepare ``patched/<crate>-<version>`` for every directory of ``patches/``."""
    patches_root, out_root = root / "patches", root / "patched"
    lock_file = root / "Cargo.lock"
    download_dir = _download_dir()
    prepared = []
    for patch_dir in sorted(p for p in patches_root.iterdir() if p.is_dir()):
        match = CRATE_DIR.match(patch_dir.name)
        if match is None:
            raise PatchError(f"{patch_dir}: expected a directory named <crate>-<version>, e.g. mistralrs-core-0.8.1")
        name, version = match["name"], match["version"]
        locked = _locked_versions(lock_file, name)
        if version not in locked:
            pinned = ", ".join(locked) or "no version"
            raise PatchError(
                f"{lock_file}: pins {name} {pinned}, but {patch_dir} patches {version}; "
                "port the patches to the locked version (or lock the patched one)"
            )
        patches = sorted(patch_dir.glob("*.patch"))
        expected = _expected_sha256(patch_dir, f"{name}-{version}.crate")
        target = out_root / patch_dir.name
        stamp = _stamp(expected, patches)
        if (target / STAMP).is_file() and (target / STAMP).read_text() == stamp:
            prepared.append(target)
            continue
        out_root.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_root, prefix=".prepare-") as scratch:
            source = _unpack(_crate_bytes(name, version, expected, download_dir), name, version, Path(scratch))
            for patch in patches:
                _apply(patch, source, f"{name} {version}")
            (source / STAMP).write_text(stamp)
            if target.exists():
                shutil.rmtree(target)
            source.rename(target)
        if not quiet:
            print(f"patch_crates: {target.relative_to(root)}: {name} {version} with {len(patches)} patch(es)", file=sys.stderr)
        prepared.append(target)
    return prepared


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    try:
        prepare(root)
    except PatchError as e:
        print(f"patch_crates: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
