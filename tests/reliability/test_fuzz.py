"""Bounded fuzzing in `make test` (longer runs: `make fuzz`): the config and
topology parsers with atheris, the HTTP API with schemathesis against the
service's own OpenAPI schema."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from service import API_KEY, REPO, start_server

HERE = Path(__file__).parent
SEED_TOPOLOGY = b"0-8:\n  isq: Q3K\n8-16:\n  isq: Q4K\n16-24:\n  isq: Q6K\n24-30:\n  isq: Q8_0\n  device: cpu\n"
FUZZ_RUNS = os.environ.get("FUZZ_CONFIG_RUNS", "4000")
API_EXAMPLES = os.environ.get("FUZZ_API_EXAMPLES", "25")
# Ollama's embedding routes answer 501 by design (no embeddings from a chat model).
SCHEMATHESIS_CONFIG = """\
[[operations]]
include-path-regex = "^/api/embed"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "501"]
"""


def test_config_and_topology_parsers_under_atheris(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for config in (REPO / "config").glob("*.json"):
        (corpus / config.name).write_bytes(b"\0" + config.read_bytes())
    (corpus / "topology.yml").write_bytes(b"\1" + SEED_TOPOLOGY)
    result = subprocess.run(
        [sys.executable, str(HERE / "fuzz_config.py"), str(corpus), f"-runs={FUZZ_RUNS}", "-max_len=4096"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    tail = result.stderr[-3000:]
    assert result.returncode == 0, tail
    done = re.search(r"Done \d+ runs in \d+ second\(s\)", tail)
    assert done, tail  # libFuzzer's summary: the whole budget ran
    print(f"atheris: {done[0]}")


def test_http_api_under_schemathesis(tmp_path: Path) -> None:
    # Short answers keep the run bounded: max_tokens above 8 is refused (400).
    server = start_server(tmp_path, extra_env={"MISTRALVLLM_SERVER__MAX_TOKENS_LIMIT": "8"})
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(config),
                "run",
                server.url + "/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                API_EXAMPLES,
                "--header",
                f"Authorization: Bearer {API_KEY}",
                "--seed",
                "1",
                "--request-timeout",
                "120",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=tmp_path,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        counts = re.search(r"(\d+) generated, (\d+) passed", output)
        assert counts and counts[1] == counts[2] and int(counts[1]) >= 100, output[-3000:]
        print(f"schemathesis: {counts[0]}, 0 server errors")
        assert server.process.poll() is None  # still running
    finally:
        server.stop()
