"""PEP 517 backend for `pip install .` and the sdist: maturin's, after
preparing the patched crates that Cargo.toml's [patch] names.

Cargo reads ``[patch.crates-io]`` before any build script runs, so the
patched sources (scripts/patch_crates.py) must exist before maturin calls
cargo, for a wheel, for its metadata, and for an sdist. An sdist carries
``patches/`` and this script, never the patched upstream sources
(``[tool.maturin] include`` / ``exclude`` in pyproject.toml).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import maturin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patch_crates import PatchError, prepare

ROOT = Path(__file__).resolve().parent.parent

get_requires_for_build_wheel = maturin.get_requires_for_build_wheel
get_requires_for_build_sdist = maturin.get_requires_for_build_sdist
get_requires_for_build_editable = maturin.get_requires_for_build_editable


def _prepare() -> None:
    try:
        prepare(ROOT)
    except PatchError as e:
        raise SystemExit(f"patch_crates: error: {e}") from None


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    _prepare()
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    _prepare()
    return maturin.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None) -> str:
    _prepare()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None) -> str:
    _prepare()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    _prepare()
    return maturin.build_sdist(sdist_directory, config_settings)
