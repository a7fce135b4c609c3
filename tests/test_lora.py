"""LoRA adapters from local directories, merged into the plain model at load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mistralvllm import ConfigError, ModelLoadError, SamplingParams, Session
from mistralvllm.config import load_config
from model_makers import random_lora

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def adapter(plain_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_lora(plain_model, tmp_path_factory.mktemp("lora") / "adapter")


def _answer(model: Path, **options: object) -> str:
    with Session(model, device="cpu", **options) as session:  # type: ignore[arg-type]
        return session.chat(QUESTION, SamplingParams(max_tokens=16)).text


def test_adapter_changes_the_output_and_the_base_comes_back(plain_model: Path, adapter: Path) -> None:
    base = _answer(plain_model)
    with Session(plain_model, device="cpu", lora=[adapter]) as session:
        adapted = session.chat(QUESTION, SamplingParams(max_tokens=16)).text
        (adapter_id,) = session.info()["lora_adapters"]
    assert adapted != base
    assert adapter_id.startswith("mistralvllm-local/")
    # Loading without it (same thread, same process) gives the base answer again.
    assert _answer(plain_model) == base
    # The same adapter gives the same output every time.
    assert _answer(plain_model, lora=[adapter]) == adapted


def test_adapter_from_the_config_file(plain_model: Path, adapter: Path, tmp_path: Path) -> None:
    shutil.copytree(adapter, tmp_path / "my-adapter")
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"model": {"path": str(plain_model), "device": "cpu", "lora": ["my-adapter"]}}))
    options = load_config(config_file).session_options()
    assert options["lora"] == [str(tmp_path / "my-adapter")]
    assert Session(**options).info()["lora_adapters"][0].startswith("mistralvllm-local/")


def _broken(adapter: Path, tmp_path: Path, change: str) -> Path:
    target = tmp_path / "broken"
    shutil.copytree(adapter, target)
    config = json.loads((target / "adapter_config.json").read_text())
    if change == "no weights":
        (target / "adapter_model.safetensors").unlink()
    elif change == "regex modules":
        config["target_modules"] = "q_proj|v_proj"
    elif change == "no rank":
        del config["r"]
    elif change == "not json":
        (target / "adapter_config.json").write_text("{")
        return target
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(
    "change,fragment",
    [
        ("no weights", "no adapter_model.safetensors"),
        ("regex modules", "target_modules: expected a list"),
        ("no rank", "r: expected the rank"),
        ("not json", "not readable JSON"),
    ],
)
def test_broken_adapters_name_the_file(plain_model: Path, adapter: Path, tmp_path: Path, change: str, fragment: str) -> None:
    with pytest.raises(ModelLoadError) as error:
        Session(plain_model, device="cpu", lora=[_broken(adapter, tmp_path, change)])
    assert fragment in str(error.value) and "broken" in str(error.value)


def test_adapter_errors(default_model: Path, plain_model: Path, adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such adapter directory"):
        Session(plain_model, device="cpu", lora=[tmp_path / "missing"])
    with pytest.raises(ConfigError, match="LoRA adapters are merged into plain"):
        Session(default_model, lora=[adapter])
