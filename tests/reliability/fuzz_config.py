"""atheris harness for the config and topology parsers: any bytes as a file
must load or raise ConfigError, never anything else.

    python tests/reliability/fuzz_config.py CORPUS_DIR -runs=N

CORPUS_DIR holds the seeds (test_fuzz.py writes the example configs there,
each behind its selector byte); libFuzzer adds what it finds to it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from mistralvllm import ConfigError, Topology
    from mistralvllm.config import load_config

WORK = Path(tempfile.mkdtemp(prefix="mistralvllm-fuzz-"))
CONFIG, TOPOLOGY = WORK / "config.json", WORK / "topology.yml"


def test_one_input(data: bytes) -> None:
    # The first byte picks the parser, the rest is the file.
    if not data:
        return
    path, parse = (TOPOLOGY, Topology.from_file) if data[0] & 1 else (CONFIG, load_config)
    path.write_bytes(data[1:])
    try:
        parse(path)
    except ConfigError as e:
        if str(path) not in str(e) and "topology" not in str(e).lower():
            raise AssertionError(f"the error does not name the file: {e}") from None


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
