"""The `mistralvllm` command, in a real terminal (pexpect) and in pipes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from mistralvllm.history import SQLiteHistory

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "config" / "config.json")
ITALY = "What is the capital of Italy? Answer in one word."


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """A private history database and data directory for the command."""
    return {
        **os.environ,
        "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "history.sqlite3"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "COLUMNS": "200",
    }


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mistralvllm", *args], input=stdin, capture_output=True, text=True, env=env, timeout=300)


def test_pipe_mode_prints_only_the_answer(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "chat", "--config", CONFIG, stdin=ITALY + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The capital of Italy is Rome.\n"


def test_pipe_mode_with_a_regex_or_a_grammar(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = run(cli_env, "chat", "--config", CONFIG, "--no-history", "--regex", r"\d{4}-\d{2}-\d{2}", stdin="When did the Berlin Wall fall?\n")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}\n", result.stdout), result.stdout
    grammar = tmp_path / "colours.lark"
    grammar.write_text('start: "red" | "green" | "blue"\n')
    result = run(cli_env, "chat", "--config", CONFIG, "--no-history", "--grammar", str(grammar), stdin="Name a colour.\n")
    assert result.returncode == 0 and result.stdout.strip() in {"red", "green", "blue"}, result.stdout + result.stderr
    result = run(cli_env, "chat", "--config", CONFIG, "--no-history", "--regex", "([", stdin="hi\n")
    assert result.returncode == 1 and "unclosed character class" in result.stderr


def test_pipe_mode_json_and_the_history_commands(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "chat", "--config", CONFIG, "--json", stdin="What is the chemical symbol for water?")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert "H2O" in answer["text"]
    assert answer["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["decode_tok_per_s"] > 0
    conversation_id = answer["conversation_id"]

    listed = run(cli_env, "history", "list")
    assert conversation_id in listed.stdout and "What is the chemical symbol" in listed.stdout
    found = run(cli_env, "history", "search", "H2O")
    assert conversation_id in found.stdout
    exported = json.loads(run(cli_env, "history", "export", conversation_id, "--format", "json").stdout)
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    shown = run(cli_env, "history", "show", conversation_id[:12])
    assert "H2O" in shown.stdout
    assert run(cli_env, "history", "rm", conversation_id).returncode == 0
    missing = run(cli_env, "history", "show", conversation_id)
    assert missing.returncode == 1 and "no conversation" in missing.stderr


def test_config_check_schema_models_info(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert "config.json: ok" in run(cli_env, "config", "check", CONFIG).stdout
    broken = tmp_path / "broken.json"
    broken.write_text('{"sampling": {"tempurature": 1}}')
    checked = run(cli_env, "config", "check", str(broken))
    assert checked.returncode == 1
    assert "sampling.tempurature: unknown key 'tempurature'; did you mean 'temperature'?" in checked.stderr
    from_variable = run(cli_env | {"MISTRALVLLM_CONFIG": str(broken)}, "chat", stdin=ITALY + "\n")
    assert from_variable.returncode == 1
    assert f"{broken}: sampling.tempurature: unknown key" in from_variable.stderr
    assert json.loads(run(cli_env, "config", "schema").stdout)["title"] == "Config"
    models = run(cli_env, "models").stdout
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in models and "llama" in models and "30" in models
    info = run(cli_env, "info").stdout
    assert "mistral.rs 0.8.1" in info and "build features: cpu" in info and "CPU build: base" in info and "CUDA devices: " in info


def test_interactive_chat_in_a_terminal(cli_env: dict[str, str]) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "mistralvllm", "chat", "--config", CONFIG],
        env=cli_env,
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 200),
        # A terminal's Ctrl-C, also when the suite runs as a background job
        # (which starts with SIGINT ignored, and Python then keeps it so).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        child.expect("conversation ([0-9a-f]{17})")
        first_id = child.match.group(1)
        child.expect(">>>")
        child.sendline(ITALY)
        child.expect("Rome")
        child.expect("tok/s")
        child.expect(">>>")

        child.sendline("/stats")
        child.expect("tokens in context: \\d+ of 8192")
        child.expect("generated at [0-9.]+ tok/s")
        child.expect("prefix cache: \\d+ hits in \\d+ sequences; keeps \\d+ of 16 sequences, [0-9.]+ of 256 MiB")
        child.expect(">>>")

        child.sendline("Write a long story about a dragon who learns to fly.")
        child.expect("learns to fly\\.")
        child.expect("upon a time")
        child.sendintr()
        child.expect("interrupted")
        child.expect(">>>")
        child.sendline("What is the chemical symbol for water?")
        child.expect("H2O")
        child.expect(">>>")

        child.sendline("/new")
        child.expect("new conversation")
        child.expect(">>>")
        child.sendline(f"/resume {first_id[:12]}")
        child.expect(f"resumed {first_id} \\(3 turns\\)")
        child.expect(">>>")
        child.sendline('"""')
        # A question the history before it does not sway (after three turns
        # about Rome, a dragon and water, "the opposite of hot" drew "The
        # chemical symbol for hot is H." once the engine's softmax changed by
        # an ulp): the answer shows that the model read both lines as one.
        child.sendline("What is the capital")
        child.sendline('of France?"""')
        child.expect("Paris")
        child.expect(">>>")
        child.sendintr()  # Ctrl-C at the prompt keeps the conversation
        child.expect(">>>")
        child.sendline("/export")
        child.expect("of France\\?")
        child.expect(">>>")
        child.sendeof()  # Ctrl-D leaves
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)

    messages = SQLiteHistory(cli_env["MISTRALVLLM_HISTORY__PATH"]).messages(first_id)
    assert [m.role for m in messages] == ["user", "assistant"] * 4
    assert [m.interrupted for m in messages if m.role == "assistant"] == [False, True, False, False]
    assert messages[6].content == "What is the capital\nof France?"
    assert "Rome" in messages[1].content and "H2O" in messages[5].content


def test_resumed_pipe_chats_drop_the_oldest_turns_to_fit(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "MISTRALVLLM_HISTORY__CONTEXT_BUDGET": "110", "MISTRALVLLM_SAMPLING__MAX_TOKENS": "40"}
    first = json.loads(run(env, "chat", "--config", CONFIG, "--json", stdin=ITALY).stdout)
    conversation_id = first["conversation_id"]
    for question in ("What is the chemical symbol for water?", "What is the opposite of hot?"):
        answer = run(env, "chat", "--config", CONFIG, "--resume", conversation_id, stdin=question)
        assert answer.returncode == 0, answer.stderr
    assert "cold" in answer.stdout.lower()
    messages = SQLiteHistory(env["MISTRALVLLM_HISTORY__PATH"]).messages(conversation_id)
    assert len(messages) == 6
    dropped = [m.dropped_turns for m in messages if m.role == "user"]
    assert dropped[0] == 0 and dropped[-1] >= 1, dropped
    assert all(m.prompt_tokens is None or m.prompt_tokens + 40 <= 110 for m in messages)


def test_missing_model_is_a_clear_error_for_chat_and_serve(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "gone.gguf")
    chat = run(cli_env, "chat", "--config", CONFIG, "--model", missing, stdin="hi")
    assert chat.returncode == 1 and f"error: {missing}: no such model file or directory" in chat.stderr
    serve = run({**cli_env, "MISTRALVLLM_MODEL__PATH": missing}, "serve", "--config", CONFIG, "--port", "1")
    assert serve.returncode == 1 and f"{missing}: no such model file or directory" in serve.stderr
