"""Topology: building, validating, the file format, and loading with ISQ."""

from __future__ import annotations

from pathlib import Path

import pytest

from mistralvllm import ISQ_NAMES, ConfigError, SamplingParams, Session, Topology, TopologyRange
from prompts import ITALY, WATER

SEED_TOPOLOGY = Topology().with_range(0, 8, isq="Q3K").with_range(8, 16, isq="Q4K").with_range(16, 24, isq="Q6K").with_range(24, 32, isq="Q8_0")


def seed_topology_for(num_layers: int) -> Topology:
    """The seed's four ranges, with the last one ending at the model's last layer."""
    return Topology().with_range(0, 8, isq="Q3K").with_range(8, 16, isq="Q4K").with_range(16, 24, isq="Q6K").with_range(24, num_layers, isq="Q8_0")


def test_chained_ranges_are_kept_in_layer_order() -> None:
    topology = Topology().with_range(8, 16, isq="q4k").with_range(0, 8, isq="Q3K", device="cpu")
    assert all(isinstance(r, TopologyRange) for r in topology.ranges)
    assert [(r.start, r.end, r.isq, r.device) for r in topology.ranges] == [
        (0, 8, "Q3K", "cpu"),
        (8, 16, "Q4K", None),
    ]
    assert len(topology) == 2


def test_each_with_range_returns_a_new_topology() -> None:
    base = Topology().with_range(0, 4, isq="Q4K")
    extended = base.with_range(4, 8, isq="Q8_0")
    assert len(base) == 1 and len(extended) == 2
    assert base != extended
    assert base == Topology().with_range(0, 4, isq="Q4K")


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: SEED_TOPOLOGY.with_range(20, 26, isq="Q4K"), ["20-26", "overlaps", "16-24"]),
        (lambda: Topology().with_range(4, 4), ["4-4", "start must be below end"]),
        (lambda: Topology().with_range(9, 3), ["9-3"]),
        (lambda: Topology().with_range(0, 8, isq="Q5X"), ["0-8", "'Q5X'", "Q4K", "Q8_0", "HQQ4"]),
        (lambda: Topology().with_range(0, 8, device="gpu"), ["0-8", "'gpu'", "cuda[N]"]),
        (lambda: Topology().with_pattern("mlp(", isq="Q4K"), ["/mlp(/"]),
    ],
)
def test_invalid_topologies_raise_config_error(build, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        build()
    for fragment in expected:
        assert fragment in str(raised.value)


def test_dict_round_trip_and_repr() -> None:
    topology = SEED_TOPOLOGY.with_pattern("lm_head", isq="Q8_0")
    as_dict = topology.to_dict()
    assert list(as_dict) == ["0-8", "8-16", "16-24", "24-32", "/lm_head/"]
    assert as_dict["24-32"] == {"isq": "Q8_0", "device": None}
    assert Topology.from_dict(as_dict) == topology
    assert "'8-16': {'isq': 'Q4K', 'device': None}" in repr(topology)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        Topology.from_dict({"0-4": {"isq": "Q4K", "quant": "Q8_0"}})


def test_from_file_reads_mistralrs_format(tmp_path: Path) -> None:
    path = tmp_path / "topology.yml"
    path.write_text("'0-8':\n  isq: Q3K\n'8-16':\n  isq: Q4K\n'16-24':\n  isq: Q6K\n'24-32':\n  isq: Q8_0\n")
    assert Topology.from_file(path) == SEED_TOPOLOGY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'0-8':\n  isq: Q3K\n'4-12':\n  isq: Q4K\n", "overlaps"),
        ("'0-8':\n  isq: Q5X\n", "'Q5X'"),
        ("'a-b':\n  isq: Q4K\n", "'a-b'"),
        ("'0-8':\n  isq: Q4K\n  quant: 4\n", "quant"),
        ("- just a list\n", "not a topology file"),
    ],
)
def test_bad_topology_files_name_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        Topology.from_file(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_missing_topology_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read topology file"):
        Topology.from_file(tmp_path / "absent.yml")


def test_isq_names_follow_mistralrs() -> None:
    assert {"Q4K", "Q8_0", "Q3K", "Q6K", "HQQ4"} <= set(ISQ_NAMES)


def test_topology_past_the_last_layer_is_rejected_at_load(tiny_model: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Session(tiny_model, topology=Topology().with_range(0, 1, isq="Q8_0").with_range(1, 4, isq="Q4K"))
    message = str(raised.value)
    assert "1-4" in message and "2 layers" in message and str(tiny_model) in message


def test_seed_topology_does_not_fit_a_30_layer_model(plain_model: Path) -> None:
    with pytest.raises(ConfigError, match="24-32 exceeds the model's 30 layers"):
        Session(plain_model, topology=SEED_TOPOLOGY)


def test_isq_on_a_gguf_model_is_rejected(default_model: Path) -> None:
    with pytest.raises(ConfigError, match="ISQ applies to plain"):
        Session(default_model, topology=Topology().with_range(0, 2, isq="Q4K"))
    with pytest.raises(ConfigError, match="ISQ applies to plain"):
        Session(default_model, isq="Q4K")


def test_tiny_model_loads_with_a_topology(tiny_model: Path) -> None:
    topology = Topology().with_range(0, 1, isq="Q8_0").with_range(1, 2, isq="Q4K")
    with Session(tiny_model, topology=topology) as session:
        info = session.info()
        assert info["topology"] == topology
        assert info["num_layers"] == 2
        result = session.chat(ITALY, SamplingParams(max_tokens=4))
        assert result.usage.completion_tokens >= 1


def test_plain_model_answers_with_the_seed_topology(plain_model: Path) -> None:
    topology = seed_topology_for(30)
    text = "The cat sat on the mat and looked out of the window at the birds in the garden."
    with Session(plain_model, topology=topology) as session:
        assert session.info()["topology"] == topology
        assert session.info()["format"] == "safetensors"
        water = session.chat(WATER, SamplingParams(max_tokens=24)).text
        italy = session.chat(ITALY, SamplingParams(max_tokens=24)).text
        perplexity = session.perplexity(text)
    with Session(plain_model) as unquantized:
        perplexity_unquantized = unquantized.perplexity(text)
    assert "h2o" in water.lower(), water
    assert "rome" in italy.lower(), italy
    # Q3K in the first 8 layers moves a 135M model's probabilities: proof that
    # the topology was applied, not ignored (greedy answers may still agree).
    assert abs(perplexity - perplexity_unquantized) > 0.02 * perplexity_unquantized, (perplexity, perplexity_unquantized)


def test_plain_model_answers_with_isq(plain_model: Path) -> None:
    with Session(plain_model, isq="Q8_0") as session:
        assert session.info()["isq"] == "Q8_0"
        answer = session.chat(ITALY, SamplingParams(max_tokens=32)).text
    assert "rome" in answer.lower(), answer
