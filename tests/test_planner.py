"""`mistralvllm plan`: per-layer ISQ topologies that fit a memory budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mistralvllm import ConfigError, Topology
from mistralvllm._core import inspect_model
from mistralvllm.config import load_config
from mistralvllm.planner import LADDERS, ModelInventory, degrade_order, parse_memory, plan_path, plan_topology

MIB = 2**20


@pytest.fixture(scope="module")
def inventory(plain_model: Path) -> ModelInventory:
    return ModelInventory.read(plain_model)


@pytest.mark.parametrize(
    "text,expected", [("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000), ("800 MiB", 800 * MIB), ("500mb", 500_000_000), ("4096", 4096)]
)
def test_parse_memory(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "2 GiBs", "-1GB", ""])
def test_parse_memory_refuses_what_is_not_an_amount(text: str) -> None:
    with pytest.raises(ConfigError, match="expected an amount like 2GiB"):
        parse_memory(text)


def test_inventory_counts_every_parameter(inventory: ModelInventory, plain_model: Path) -> None:
    assert inventory.num_layers == 30
    total = sum(inventory.layer_matrix_params) + sum(inventory.layer_other_params) + inventory.other_params
    assert total * 4 == pytest.approx(inspect_model(plain_model)["size_bytes"], rel=0.001)  # f32 weights
    assert inventory.kv_bytes_per_token == 2 * 30 * 3 * 64  # K and V, 30 layers, 3 KV heads of 64


def test_middle_layers_are_lowered_first() -> None:
    order = degrade_order(6)
    assert set(order[:2]) == {2, 3} and set(order[-2:]) == {0, 5}


@pytest.mark.parametrize("quality", list(LADDERS))
def test_a_tighter_budget_never_yields_a_larger_model(inventory: ModelInventory, quality: str) -> None:
    path = list(plan_path(inventory, quality, 4, 2048))  # type: ignore[arg-type]
    sizes = [plan.total_bytes for plan in path]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) > 1
    budgets = range(sizes[-1], sizes[0] + 64 * MIB, 7 * MIB)
    plans = [plan_topology(inventory, budget, quality=quality, context=2048) for budget in budgets]  # type: ignore[arg-type]
    for budget, plan in zip(budgets, plans, strict=True):
        assert plan.total_bytes <= budget
    weights = [plan.weight_bytes for plan in plans]
    assert weights == sorted(weights), "a larger budget gave a smaller model somewhere"
    assert plans[0].layers == (LADDERS[quality][-1],) * 30  # the tightest budget: all of the lowest type


def test_too_small_a_budget_says_what_the_smallest_plan_needs(inventory: ModelInventory) -> None:
    with pytest.raises(ConfigError, match=r"too small .* the smallest plan \(all Q2K, 2048 tokens of KV cache\) needs \d+ MiB"):
        plan_topology(inventory, 100 * MIB, context=2048)


def test_plan_writes_a_topology_file_and_a_config_section(plain_model: Path, tmp_path: Path) -> None:
    common = [sys.executable, "-m", "mistralvllm", "plan", "--model", str(plain_model), "--memory", "460MiB", "--context", "1024"]
    yaml_run = subprocess.run([*common, "-o", str(tmp_path / "plan.yml")], capture_output=True, text=True, timeout=120)
    assert yaml_run.returncode == 0, yaml_run.stderr
    json_run = subprocess.run([*common, "-o", str(tmp_path / "plan.json"), "--json"], capture_output=True, text=True, timeout=120)
    report = json.loads(json_run.stdout)
    assert report["estimate_bytes"]["total"] <= 460 * MIB
    from_yaml = Topology.from_file(tmp_path / "plan.yml").to_dict()
    section = json.loads((tmp_path / "plan.json").read_text())
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"model": {"path": str(plain_model)}, **section}))
    topology = load_config(config_file).build_topology()
    assert topology is not None and topology.to_dict() == from_yaml
    assert len(from_yaml) > 1  # 460 MiB needs mixed types


def test_plan_check_fits_the_budget_when_loaded(plain_model: Path) -> None:
    budget = "520MiB"
    result = subprocess.run(
        [sys.executable, "-m", "mistralvllm", "plan", "--model", str(plain_model), "--memory", budget, "--context", "1024", "--check", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    check = report["check"]
    assert 0 < check["measured_bytes"] <= parse_memory(budget), check
    assert math.isfinite(check["perplexity"]) and check["perplexity"] < 1.5 * check["base_perplexity"], check


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--memory", "lots"], "expected an amount like 2GiB"),
        (["--memory", "100MiB"], "too small"),
        (["--memory", "1GiB", "-o", "plan.txt"], "expected a .yml/.yaml topology file or a .json"),
    ],
)
def test_plan_command_errors(plain_model: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mistralvllm", "plan", "--model", str(plain_model), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 1 and fragment in result.stderr, result.stderr


def test_plan_needs_a_plain_model(default_model: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mistralvllm", "plan", "--model", str(default_model.parent), "--memory", "1GiB"], capture_output=True, text=True
    )
    assert result.returncode == 1 and "config.json" in result.stderr
