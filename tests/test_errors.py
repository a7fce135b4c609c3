"""Bad input gets a clear error naming what was wrong, and nothing breaks."""

from __future__ import annotations

import ast
import shutil
import types
import typing
from pathlib import Path

import pytest

import mistralvllm
from mistralvllm import (
    ConfigError,
    ContextOverflowError,
    EngineStats,
    MistralVllmError,
    ModelInfo,
    ModelLoadError,
    RequestError,
    SamplingParams,
    SequenceCounts,
    Session,
    SessionInfo,
    _core,
)
from mistralvllm.cache_options import parse_kv_mem
from prompts import ITALY


def test_exception_hierarchy() -> None:
    for error in (ModelLoadError, ConfigError, RequestError, ContextOverflowError):
        assert issubclass(error, MistralVllmError)
    assert issubclass(ContextOverflowError, RequestError)
    assert mistralvllm.ConfigError is _core.ConfigError


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ModelLoadError, match="no such model file") as raised:
        Session(missing)
    assert str(missing) in str(raised.value)


def test_corrupt_gguf_names_the_path(tmp_path: Path, default_model: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(default_model.read_bytes()[:4096])
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a model at all" * 100)
    for path in (truncated, garbage):
        with pytest.raises(ModelLoadError) as raised:
            Session(path)
        assert str(path) in str(raised.value)


def test_directory_without_weights_is_rejected(tmp_path: Path, tiny_model: Path) -> None:
    shutil.copy(tiny_model / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors"):
        Session(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        Session(empty)


def test_paged_attention_on_cpu_build_raises(default_model: Path) -> None:
    with pytest.raises(ConfigError, match="paged_attention: 'on' needs a CUDA or Metal device"):
        Session(default_model, paged_attention="on", device="cpu")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"paged_attention": "maybe"}, "paged_attention"),
        ({"dtype": "f8"}, "dtype 'f8'"),
        ({"device": "tpu"}, "device"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"block_size": 12}, "block_size"),
        ({"prefix_cache": -1}, "prefix_cache"),
        ({"prefix_cache_mem": 0}, "prefix_cache_mem: 0 is out of range"),
        ({"prefix_cache_mem": "1TB"}, "prefix_cache_mem: '1TB' is not valid"),
        ({"isq": "Q5X"}, "'Q5X'"),
    ],
)
def test_bad_session_options_raise_config_error(default_model: Path, options: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Session(default_model, **options)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(4096, ("mb", 4096.0)), ("4GiB", ("mb", 4096.0)), (0.9, ("fraction", 0.9)), ("90%", ("fraction", 0.9)), ("8192 tokens", ("context", 8192.0))],
)
def test_kv_mem_forms(value, expected) -> None:
    assert parse_kv_mem(value) == expected


def test_bad_kv_mem_is_rejected() -> None:
    with pytest.raises(ConfigError, match="kv_mem"):
        parse_kv_mem("lots")


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "at least one message"),
        ([{"role": "robot", "content": "hi"}], "messages[0].role: 'robot' is not one of"),
        ([{"role": "user"}], "messages[0].content: missing"),
        ([{"role": "user", "content": 5}], "messages[0].content: expected a string"),
        (["hello"], "messages[0]: expected a dict"),
    ],
)
def test_bad_messages_raise_request_error(session: Session, messages, fragment: str) -> None:
    with pytest.raises(RequestError) as raised:
        session.chat(messages)
    assert fragment in str(raised.value)


@pytest.mark.parametrize(
    ("sampling", "fragment"),
    [({"temperature": -1.0}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"max_tokens": 0}, "max_tokens")],
)
def test_bad_sampling_raises_request_error(session: Session, sampling: dict, fragment: str) -> None:
    with pytest.raises(RequestError, match=fragment):
        session.chat(ITALY, SamplingParams(**sampling))


def test_context_overflow_reports_both_numbers(session: Session) -> None:
    context = session.context_length
    assert context is not None and context > 0
    huge = [{"role": "user", "content": "word " * (context + 100)}]
    with pytest.raises(ContextOverflowError) as raised:
        session.chat(huge, SamplingParams(max_tokens=8))
    error = raised.value
    assert error.context_length == context
    assert error.prompt_tokens > context
    assert str(context) in str(error) and str(error.prompt_tokens) in str(error)
    with pytest.raises(ContextOverflowError, match=r"the answer may take \d+ more \(max_tokens\)"):
        session.chat(ITALY, SamplingParams(max_tokens=context))
    assert "rome" in session.chat(ITALY, SamplingParams(max_tokens=32)).text.lower()


def test_the_engine_refusing_a_prompt_reports_both_numbers(session: Session) -> None:
    """The engine's own refusal (a caller of the extension that skipped our
    check) is a ContextOverflowError with the same two numbers."""
    context = session.context_length
    assert context is not None
    huge = [{"role": "user", "content": "word " * (context + 100)}]
    with pytest.raises(ContextOverflowError) as raised:
        list(session._engine.stream(huge, sampling=SamplingParams(max_tokens=8)))
    assert raised.value.context_length == context
    assert raised.value.prompt_tokens == session.count_tokens(huge) > context


def test_closed_session_refuses_requests(default_model: Path) -> None:
    session = Session(default_model)
    session.close()
    assert session.closed
    with pytest.raises(RequestError, match="closed"):
        session.chat(ITALY)
    assert set(session.info()) == ModelInfo.__required_keys__


def test_stub_names_match_the_extension() -> None:
    stub = ast.parse((Path(mistralvllm.__file__).parent / "_core.pyi").read_text())
    stub_names: set[str] = set()
    for node in stub.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            stub_names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stub_names.add(node.target.id)
    core_names = {name for name in dir(_core) if not name.startswith("_")}
    assert stub_names == core_names
    for node in stub.body:
        if isinstance(node, ast.ClassDef) and not issubclass(getattr(_core, node.name), BaseException):
            stub_members = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} - {"__init__"}
            real_members = {m for m in vars(getattr(_core, node.name)) if not m.startswith("_") or m in stub_members}
            assert stub_members == real_members, node.name


def _has_type(value: object, hint: typing.Any) -> bool:
    """Whether ``value`` is of the annotation ``hint``: a class, a union, a
    ``Literal``, ``list[X]`` or ``tuple[X, ...]``."""
    arms = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in arms
    if origin in (types.UnionType, typing.Union):
        return any(_has_type(value, arm) for arm in arms)
    if origin is list:
        return isinstance(value, list) and all(_has_type(item, arms[0]) for item in value)
    if origin is tuple:
        return isinstance(value, tuple) and len(value) == len(arms) and all(map(_has_type, value, arms))
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def test_stub_dicts_match_the_extension(session: Session) -> None:
    """The TypedDicts that `_core.pyi` returns name every key the extension's
    dicts have, each with the type of its value."""
    engine = session._engine
    for typed, real in ((ModelInfo, engine.info()), (EngineStats, engine.engine_stats()), (SequenceCounts, session.sequence_counts())):
        assert typed.__required_keys__ == set(real), typed.__name__
        for key, hint in typing.get_type_hints(typed).items():
            assert _has_type(real[key], hint), (typed.__name__, key, real[key])
    assert set(engine.sequence_counts()) == {"running"}
    assert set(session.info()) == SessionInfo.__required_keys__ == ModelInfo.__required_keys__ | EngineStats.__required_keys__
