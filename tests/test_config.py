"""The config file: broken files give messages that name file, field and expectation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mistralvllm import ConfigError, Topology
from mistralvllm.config import Config, config_schema, load_config

REPO = Path(__file__).resolve().parent.parent

BROKEN = [
    ({"modle": {}}, "modle: unknown key 'modle'; did you mean 'model'?"),
    ({"model": {"pth": "x.gguf"}}, "model.pth: unknown key 'pth'; did you mean 'path'?"),
    ({"sampling": {"tempurature": 0.5}}, "sampling.tempurature: unknown key 'tempurature'; did you mean 'temperature'?"),
    ({"sampling": {"temperature": "hot"}}, "sampling.temperature: input should be a valid number"),
    ({"sampling": {"temperature": -1}}, "sampling.temperature: input should be greater than or equal to 0"),
    ({"sampling": {"top_p": 1.5}}, "sampling.top_p: input should be less than or equal to 1"),
    ({"sampling": {"max_tokens": 0}}, "sampling.max_tokens: input should be greater than or equal to 1"),
    ({"sampling": {"stop": "END"}}, "sampling.stop: input should be a valid list"),
    ({"sampling": {"top_k": 2.5}}, "sampling.top_k: input should be a valid integer"),
    ({"model": {"dtype": "f8"}}, "model.dtype: 'f8': input should be 'auto', 'bf16', 'f16' or 'f32'"),
    ({"model": {"device": "gpu0"}}, "model.device: device 'gpu0' is not valid; expected 'cpu', 'cuda[N]' or 'metal[N]', or 'auto'"),
    ({"model": {"isq": "Q5X"}}, "model.isq: 'Q5X' is not one of Q4_0, Q4_1"),
    ({"model": "small"}, "model: input should be a valid dictionary"),
    ({"topology": {"0..8": "Q4K"}}, "topology: input should be a valid list"),
    ({"topology": [{"layers": "0-8", "isq": "Q5X"}]}, "topology[0].isq: 'Q5X' is not one of Q4_0"),
    (
        {"topology": [{"layers": "0-8", "isq": "Q4K"}, {"layers": "8-16", "isq": "Q4K"}, {"layers": "16-24", "isq": "Q5X"}]},
        "topology[2].isq: 'Q5X' is not one of",
    ),
    ({"topology": [{"layers": "8-4", "isq": "Q4K"}]}, "topology[0].layers: topology range 8-4: start must be below end"),
    ({"topology": [{"layers": "first", "isq": "Q4K"}]}, "topology[0].layers: topology key 'first' is not a layer range; expected 'START-END'"),
    ({"topology": [{"isq": "Q4K"}]}, "topology[0].layers: field required"),
    ({"topology": [{"layers": "0-8", "isq": "Q4K", "dev": "cpu"}]}, "topology[0].dev: unknown key 'dev'; did you mean 'device'?"),
    ({"topology": [{"layers": "0-8", "isq": "Q4K"}, {"layers": "4-12", "isq": "Q8_0"}]}, "topology[1]: topology range 4-12 overlaps range 0-8"),
    (
        {"topology": [{"layers": "0-8", "device": "tpu"}]},
        "topology[0].device: device 'tpu' is not valid; expected 'cpu', 'cuda[N]' or 'metal[N]', or 'auto'",
    ),
    ({"paged_attention": {"mode": "yes"}}, "paged_attention.mode: 'yes': input should be 'auto', 'on' or 'off'"),
    ({"paged_attention": {"block_size": 64}}, "paged_attention.block_size: 64: input should be 8, 16 or 32"),
    ({"paged_attention": {"gpu_mem": 4096, "gpu_mem_usage": 0.9}}, "set at most one of gpu_mem, gpu_mem_usage, context_len"),
    ({"paged_attention": {"gpu_mem_usage": 1.5}}, "paged_attention.gpu_mem_usage: input should be less than or equal to 1"),
    ({"engine": {"max_num_seqs": 0}}, "engine.max_num_seqs: input should be greater than or equal to 1"),
    ({"engine": {"prefix_cache": -2}}, "engine.prefix_cache: input should be greater than or equal to 0"),
    ({"engine": {"prefix_cache_mem": 0}}, "engine.prefix_cache_mem: 0 is out of range; expected more than 0 and less than this machine's memory"),
    ({"engine": {"prefix_cache_mem": "lots"}}, "engine.prefix_cache_mem: 'lots' is not valid; expected MiB as an int or '512MiB'/'1GiB'"),
    ({"engine": {"prefix_cache_mem": "100000GiB"}}, "engine.prefix_cache_mem: '100000GiB' is out of range"),
    ({"history": {"enabled": "maybe"}}, "history.enabled: input should be a valid boolean"),
    ({"history": {"context_budget": 0}}, "history.context_budget: input should be greater than or equal to 1"),
    ({"history": {"path": "h.sqlite3", "url": "postgresql://db/h"}}, "history: set either path (SQLite) or url (PostgreSQL), not both"),
    ({"history": {"url": "mysql://me:pw@db/h"}}, "history.url: 'mysql://me:***@db/h' is not a PostgreSQL URL; expected postgresql://"),
    ({"server": {"port": 70000}}, "server.port: input should be less than or equal to 65535"),
    ({"server": {"api_kee": "x"}}, "server.api_kee: unknown key 'api_kee'; did you mean 'api_key'?"),
    ({"system_prompt": 42}, "system_prompt: input should be a valid string"),
]


@pytest.mark.parametrize(("content", "message"), BROKEN, ids=[m.split(":")[0] for _, m in BROKEN])
def test_broken_config_names_file_field_and_expectation(tmp_path: Path, content: dict, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    text = str(raised.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"model": {"path": "a.gguf",}}', "line 1 column 29: invalid JSON"),
        ("[1, 2]", "expected a JSON object at the top level, got list"),
        ("", "line 1 column 1: invalid JSON"),
    ],
)
def test_unparsable_files_name_the_position(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.json: cannot read config file"):
        load_config(tmp_path / "absent.json", environ={})


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"sampling": {"temperature": -1, "top_p": 2}}))
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert len(str(raised.value).splitlines()) == 2


def test_repo_configs_are_valid() -> None:
    for path in sorted((REPO / "config").glob("*.json")):
        load_config(path, environ={})


def test_seed_topology_round_trips() -> None:
    config = load_config(REPO / "config" / "cuda-paged.json", environ={})
    topology = config.build_topology()
    expected = Topology().with_range(0, 8, isq="Q3K").with_range(8, 16, isq="Q4K").with_range(16, 24, isq="Q6K").with_range(24, 32, isq="Q8_0")
    assert topology == expected
    dumped = json.loads(config.model_dump_json())
    assert dumped["topology"][3] == {"layers": "24-32", "isq": "Q8_0", "device": None}
    assert Config.model_validate(dumped).build_topology() == expected


def test_precedence_defaults_file_environment_flags(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"sampling": {"temperature": 0.5, "top_p": 0.9}, "server": {"port": 9000}}))
    assert load_config(environ={}).sampling.temperature is None
    assert load_config(path, environ={}).sampling.temperature == 0.5
    environ = {"MISTRALVLLM_SAMPLING__TEMPERATURE": "0.7", "MISTRALVLLM_SERVER__API_KEY": "secret"}
    from_env = load_config(path, environ=environ)
    assert (from_env.sampling.temperature, from_env.sampling.top_p, from_env.server.api_key) == (0.7, 0.9, "secret")
    # Chooses the extension build at import (cpu_builds), not a config field.
    assert load_config(path, environ={**environ, "MISTRALVLLM_CPU_BUILD": "base"}) == from_env
    flagged = load_config(path, environ=environ, overrides={"sampling": {"temperature": 0.1}})
    assert flagged.sampling.temperature == 0.1
    assert flagged.server.port == 9000


def test_environment_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^MISTRALVLLM_SAMPLING__TOP_P: sampling\.top_p: input should be less than or equal to 1"):
        load_config(environ={"MISTRALVLLM_SAMPLING__TOP_P": "3"})


@pytest.mark.parametrize("url", ["mysql://me:s3cret@db/h", "postgresql://me:s3cret@db:port/h", "pg://db/h?x=1&password=s3cret"])
def test_a_bad_history_url_is_shown_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"MISTRALVLLM_HISTORY__URL": url})
    text = str(raised.value)
    assert text.startswith("MISTRALVLLM_HISTORY__URL: history.url: '") and "***" in text, text
    assert "s3cret" not in text, text


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["postgresql://", "mysql://", "", "x:/"]), st.text(min_size=8).filter(lambda p: "@" not in p), st.text(), st.text())
def test_no_history_url_error_shows_its_password(scheme: str, password: str, host: str, rest: str) -> None:
    password = "Ω" + password  # in no message of ours or urllib's
    url = f"{scheme}me:{password}@{host}{rest}"
    assume(password not in scheme + host + rest)
    try:
        load_config(environ={"MISTRALVLLM_HISTORY__URL": url})
    except ConfigError as e:
        assert password not in str(e)


def test_a_history_url_replaces_the_path_set_to_null(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"history": {"path": "h.sqlite3"}}))
    url = "postgresql://me:pw@db.example:5433/history"
    config = load_config(path, environ={"MISTRALVLLM_HISTORY__PATH": "null", "MISTRALVLLM_HISTORY__URL": url})
    assert (config.history.path, config.history.url) == (None, url)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "config.json"
    path.write_text(json.dumps({"model": {"path": "../models/m.gguf"}, "history": {"path": "h.sqlite3"}}))
    config = load_config(path, environ={})
    assert config.model.path == str(tmp_path / "conf" / ".." / "models" / "m.gguf")
    assert config.history.path == str(tmp_path / "conf" / "h.sqlite3")


def test_schema_describes_every_section() -> None:
    schema = config_schema()
    assert set(schema["properties"]) == {"model", "topology", "paged_attention", "engine", "models", "sampling", "system_prompt", "history", "server"}
    assert schema["additionalProperties"] is False
