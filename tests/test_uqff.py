"""UQFF: quantize a plain model once (with the seed's topology), save it, and
load it later without quantizing again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mistralvllm import ConfigError, SamplingParams, Session, Topology
from mistralvllm._core import inspect_model
from mistralvllm.config import load_config

REPO = Path(__file__).resolve().parent.parent
QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def seed_topology() -> Topology:
    topology = load_config(REPO / "config" / "plain-topology.json").build_topology()
    assert topology is not None
    return topology


@pytest.fixture(scope="module")
def uqff_model(plain_model: Path, seed_topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A UQFF directory written while quantizing, and the greedy answer then."""
    out = tmp_path_factory.mktemp("uqff") / "smollm2-seed-topology"
    with Session(plain_model, device="cpu", topology=seed_topology, write_uqff=out / "model.uqff") as session:
        answer = session.chat(QUESTION, SamplingParams(max_tokens=24)).text
    return out, answer


def test_uqff_round_trip_gives_the_same_greedy_text(uqff_model: tuple[Path, str], tmp_path: Path) -> None:
    out, answer = uqff_model
    names = {p.name for p in out.iterdir()}
    assert {"model-0.uqff", "residual.safetensors", "config.json", "tokenizer.json"} <= names
    found = inspect_model(out)
    assert found["format"] == "uqff" and found["num_layers"] == 30 and found["size_bytes"] > 0
    # The directory stands alone: moved elsewhere, it loads the same.
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    with Session(moved, device="cpu") as session:
        info = session.info()
        assert info["format"] == "uqff" and info["isq"] is None
        assert session.chat(QUESTION, SamplingParams(max_tokens=24)).text == answer


def test_uqff_is_smaller_than_the_plain_weights(uqff_model: tuple[Path, str], plain_model: Path) -> None:
    # mistral.rs 0.8.1 stores the tied embedding twice (in residual.safetensors
    # and as an f32 lm_head in the .uqff), so the saving is less than the ISQ types suggest.
    out, _ = uqff_model
    assert sum(f.stat().st_size for f in out.iterdir()) < 0.7 * inspect_model(plain_model)["size_bytes"]


@pytest.mark.parametrize(
    "options,fragment",
    [
        ({}, "UQFF stores ISQ-quantized weights"),
        ({"isq": "Q4K", "write_uqff": "model.bin"}, "expected a file name ending in .uqff"),
    ],
)
def test_write_uqff_needs_isq_and_a_uqff_name(plain_model: Path, tmp_path: Path, options: dict[str, str], fragment: str) -> None:
    options = {"write_uqff": "model.uqff", **options}
    with pytest.raises(ConfigError, match=fragment):
        Session(plain_model, device="cpu", **{**options, "write_uqff": str(tmp_path / options["write_uqff"])})  # type: ignore[arg-type]


def test_uqff_and_gguf_models_are_already_quantized(uqff_model: tuple[Path, str], default_model: Path, tmp_path: Path) -> None:
    out, _ = uqff_model
    with pytest.raises(ConfigError, match="a uqff model is already quantized"):
        Session(out, device="cpu", isq="Q4K")
    with pytest.raises(ConfigError, match="UQFF stores ISQ-quantized weights"):
        Session(default_model, write_uqff=tmp_path / "m.uqff")


def test_quantize_command(plain_model: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "q4k"
    result = subprocess.run(
        [sys.executable, "-m", "mistralvllm", "quantize", "--model", str(plain_model), "--isq", "Q4K", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "load from UQFF" in result.stdout and "same greedy answer after loading: yes" in result.stdout
    assert inspect_model(out)["format"] == "uqff"
    both = subprocess.run(
        [sys.executable, "-m", "mistralvllm", "quantize", "--model", str(plain_model), "-o", str(out)], capture_output=True, text=True
    )
    assert both.returncode == 2 and "give --isq or --topology" in both.stderr
