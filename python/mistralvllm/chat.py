"""A minimal streaming chat in the terminal (the full CLI builds on this)."""

from __future__ import annotations

import sys
from typing import TextIO

from .errors import MistralVllmError
from .session import Session

EXIT_COMMANDS = {"/exit", "/quit", "/bye"}


def chat_loop(session: Session, *, system: str | None = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Read a question per line, stream each answer, keep the conversation
    in memory; end on an empty input stream or /exit."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    interactive = stdin.isatty()
    while True:
        if interactive:
            stdout.write(">>> ")
            stdout.flush()
        line = stdin.readline()
        if not line or line.strip() in EXIT_COMMANDS:
            return
        question = line.strip()
        if not question:
            continue
        messages.append({"role": "user", "content": question})
        try:
            answer = []
            for chunk in session.stream(messages):
                stdout.write(chunk.text)
                stdout.flush()
                answer.append(chunk.text)
                if chunk.usage is not None:
                    usage = chunk.usage
                    stdout.write(f"\n[{usage.completion_tokens} tokens, {usage.decode_tok_per_s:.1f} tok/s]\n")
        except MistralVllmError as e:
            messages.pop()
            stdout.write(f"\nerror: {e}\n")
            continue
        messages.append({"role": "assistant", "content": "".join(answer)})
