"""engine.tensor_parallel: mistral.rs's nccl/ring backends checked against
the build and set in the engine's environment (mistralvllm.tensor_parallel).
This CPU build has neither feature, so the tests stop at that boundary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistralvllm import BUILD_FEATURES, ConfigError, Session
from mistralvllm.config import Config
from mistralvllm.tensor_parallel import apply_tensor_parallel, check_ring_config

RING = {"master_ip": "10.0.0.1", "master_port": 1234, "port": 12345, "right_port": 12346, "right_ip": "10.0.0.2", "rank": 0, "world_size": 2}


def test_off_and_auto_set_the_engines_environment() -> None:
    environ = {"MISTRALRS_NO_NCCL": "0"}
    apply_tensor_parallel("auto", None, environ)
    assert environ == {"MISTRALRS_NO_NCCL": "0"}
    apply_tensor_parallel("off", None, environ)
    assert environ == {"MISTRALRS_NO_NCCL": "1"}


@pytest.mark.parametrize("backend", ["nccl", "ring"])
def test_a_backend_the_build_lacks_is_refused_by_name(backend: str, tmp_path: Path) -> None:
    assert backend not in BUILD_FEATURES
    ring_file = tmp_path / "ring.json"
    ring_file.write_text(json.dumps(RING))
    with pytest.raises(ConfigError, match=rf"backend: '{backend}' needs a build with the {backend} feature .*this build has features: none"):
        apply_tensor_parallel(backend, ring_file if backend == "ring" else None, {})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"needs a build with the {backend} feature"):
        Session(tensor_parallel=backend, ring_config=ring_file if backend == "ring" else None)  # type: ignore[arg-type]


def test_the_ring_file_is_checked_naming_file_and_field(tmp_path: Path) -> None:
    good = tmp_path / "ring.json"
    good.write_text(json.dumps(RING))
    assert check_ring_config(good)["world_size"] == 2
    with pytest.raises(ConfigError, match=r"ring_config: .*missing\.json: cannot read"):
        check_ring_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{rank: 0")
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON"):
        check_ring_config(broken)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({k: v for k, v in RING.items() if k != "master_port"}))
    with pytest.raises(ConfigError, match=r"partial\.json: missing master_port"):
        check_ring_config(partial)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({**RING, "rank": 2}))
    with pytest.raises(ConfigError, match="rank 2 must be a whole number below world_size 2"):
        check_ring_config(outside)
    with pytest.raises(ConfigError, match="ring_config: only used with backend 'ring'"):
        apply_tensor_parallel("off", good, {})


def test_the_config_reaches_the_session_options() -> None:
    config = Config.model_validate({"engine": {"tensor_parallel": {"backend": "off"}}})
    assert config.session_options()["tensor_parallel"] == "off"
    assert Config().session_options()["tensor_parallel"] == "auto"
    with pytest.raises(ValueError, match="backend"):
        Config.model_validate({"engine": {"tensor_parallel": {"backend": "mpi"}}})
