"""The terminal chat: streamed answers, slash commands, history, Ctrl-C handling."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._core import ToolCall, Usage
from .collect import StreamedAnswer
from .config import Config
from .errors import MistralVllmError, RequestError
from .history import Conversation, ConversationSummary, HistoryStore
from .images import read_image
from .sampling import SamplingParams
from .session import Session
from .tools import PythonTool, ToolOptions, tool_call_body

# Tokens kept free for the answer when no max_tokens is set.
DEFAULT_ANSWER_RESERVE = 256
MULTILINE_FENCE = '"""'
HELP = """\
/help               this list
/new                start a new conversation
/history            recent conversations
/resume ID          continue a stored conversation (an id prefix is enough)
/system TEXT        set the system prompt (empty: none)
/image FILE         attach an image to your next message (a vision model reads it)
/thinking           the last answer's reasoning, unfolded (a thinking model's)
/set KEY VALUE      sampling option: max_tokens, temperature, top_p, top_k, min_p, seed, stop, ... (/set alone shows them)
/stats              speed of the last answer, tokens in context, KV cache
/export [FILE]      the conversation as Markdown (to FILE or the screen)
/clear              clear the screen
/quit               leave (Ctrl-D works too)
Start and end a message with \"\"\" to write several lines. Ctrl-C stops an answer."""


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str | None
    usage: Usage | None
    interrupted: bool
    dropped_turns: int
    reasoning: str = ""


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def conversation_table(conversations: list[ConversationSummary]) -> Table:
    """Stored conversations, one row each, ids in full (they are what /resume takes)."""
    table = Table()
    for name in ("id", "updated", "messages", "model"):
        table.add_column(name, no_wrap=True)
    table.add_column("title", no_wrap=True, overflow="ellipsis")
    for c in conversations:
        model = Path(c.model).name if c.model else "-"
        table.add_row(*map(Text, (c.id, when(c.updated), str(c.message_count), model, c.title)))
    return table


def start_conversation(session: Session, config: Config, history: HistoryStore | None, system_prompt: str | None) -> Conversation:
    """A new conversation, stored when there is a history, in memory otherwise."""
    if history is None:
        return Conversation(None, "unsaved", system_prompt)
    return history.new(model=session.info()["model"], config_digest=config.digest(), system_prompt=system_prompt)


class FoldedThinking:
    """A thinking model's reasoning on the screen: its last lines, dimmed,
    while it streams (a transient rich Live), then folded into one line once
    the answer starts (``/thinking`` unfolds it)."""

    SHOWN_LINES = 4

    def __init__(self, console: Console) -> None:
        self.console = console
        self.parts: list[str] = []
        self.live: Live | None = None
        self.started = 0.0

    def add(self, part: str) -> None:
        if not part:
            return
        if self.live is None and not self.parts:
            self.started = time.monotonic()
            self.live = Live(console=self.console, transient=True, auto_refresh=False)
            self.live.start()
        self.parts.append(part)
        if self.live is not None:
            tail = "\n".join("".join(self.parts).splitlines()[-self.SHOWN_LINES :])
            self.live.update(Text(tail, style="dim italic"), refresh=True)

    def fold(self) -> None:
        """End the live view; the reasoning, if any, becomes one line."""
        if self.live is None:
            return
        self.live.stop()
        self.live = None
        words = len("".join(self.parts).split())
        self.console.print(f"(thought for {time.monotonic() - self.started:.1f} s, {words} words; /thinking shows it)", style="dim", highlight=False)


class ChatApp:
    """One chat: a session, the conversation being continued, and sampling options."""

    def __init__(
        self,
        session: Session,
        config: Config,
        history: HistoryStore | None,
        conversation: Conversation,
        console: Console,
        *,
        tools: list[PythonTool] | None = None,
        tool_choice: str = "auto",
    ) -> None:
        self.session = session
        self.tools = {tool.name: tool for tool in tools or []}
        self.tool_choice = tool_choice
        self.config = config
        self.history = history
        self.conversation = conversation
        self.console = console
        self.sampling = SamplingParams().over(config.sampling)
        self.last_usage: Usage | None = None
        self.last_prompt_tokens: int | None = None
        # Images attached (/image, --image) to the next message, encoded.
        self.pending_images: list[bytes] = []
        self.last_reasoning = ""

    @property
    def budget(self) -> int:
        return self.config.history.context_budget or self.session.context_length or 2048

    def _reserve(self) -> int:
        return self.sampling.max_tokens or DEFAULT_ANSWER_RESERVE

    def ask(
        self,
        text: str,
        *,
        on_text: Callable[[str], None],
        on_tool: Callable[[str], None] = lambda _: None,
        on_thinking: Callable[[str], None] = lambda _: None,
    ) -> Answer:
        """Send ``text`` with the conversation so far; stream the answer into
        ``on_text`` (a thinking model's reasoning into ``on_thinking``, kept
        out of the conversation); record the turn (partial and flagged if interrupted).

        With tools, calls the model makes are run (each reported to
        ``on_tool``) and their results sent back for the answer. The images
        attached (`attach_image`) go with ``text``, and are stored with it."""
        images, self.pending_images = self.pending_images, []
        fitted = self.conversation.fit(text, images=images, count_tokens=self.session.count_tokens, budget=self.budget, reserve=self._reserve())
        messages: list[Mapping[str, Any]] = list(fitted.messages)
        rounds: list[StreamedAnswer] = []
        interrupted = False
        tool_choice = self.tool_choice
        turn = self.conversation.begin_turn(text, images=images, dropped_turns=fitted.dropped_turns)
        try:
            while True:
                tools: ToolOptions = {"tools": [t.definition() for t in self.tools.values()], "tool_choice": tool_choice} if self.tools else {}
                answer = StreamedAnswer()
                rounds.append(answer)
                stream = self.session.start(messages, self.sampling, **tools)
                try:
                    for chunk in stream:
                        if answer.add(chunk).reasoning:
                            on_thinking(chunk.reasoning)
                        on_text(chunk.text)
                finally:
                    stream.close()
                if not answer.tool_calls:
                    break
                # One round of calls, then the answer from their results.
                messages += self._call_tools(answer.tool_calls, on_tool)
                tool_choice = "none"
        except KeyboardInterrupt:
            interrupted = True
        # Usage and finish reason of the last round that finished.
        finished = next((r for r in reversed(rounds) if r.finished), StreamedAnswer())
        reasoning = "".join(r.reasoning for r in rounds)
        reply = Answer("".join(r.text for r in rounds), finished.finish_reason, finished.usage, interrupted, fitted.dropped_turns, reasoning)
        turn.finish(reply.text, reasoning=reasoning, usage=reply.usage, finish_reason=reply.finish_reason, interrupted=interrupted)
        self.last_reasoning = reasoning
        self.last_usage = reply.usage or self.last_usage
        self.last_prompt_tokens = fitted.prompt_tokens
        return reply

    def attach_image(self, path: str | Path) -> int:
        """Read the image at ``path`` for the next message; its size in bytes.
        A `RequestError` if the model reads text only or the file is no image."""
        if not self.session.info()["vision"]:
            raise RequestError(f"{self.session.info()['model']}: this model reads text only; images cannot be given to it")
        image = read_image(path)
        self.pending_images.append(image)
        return len(image)

    def _call_tools(self, calls: list[ToolCall], on_tool: Callable[[str], None]) -> list[dict[str, Any]]:
        """Run the calls the model made; the messages that carry the calls and their results."""
        messages: list[dict[str, Any]] = [{"role": "assistant", "content": "", "tool_calls": [tool_call_body(call) for call in calls]}]
        for call in calls:
            result = self.tools[call.name].call(call.arguments) if call.name in self.tools else f"error: no tool {call.name}"
            on_tool(f"{call.name}({call.arguments}) -> {result}")
            messages.append({"role": "tool", "content": result})
        return messages

    def new_conversation(self) -> None:
        self.conversation = start_conversation(self.session, self.config, self.history, self.conversation.system_prompt)

    # ---- the interactive terminal -------------------------------------------------

    def note(self, text: str, style: str | None = None) -> None:
        """Print text as it is (brackets in answers or errors are not markup)."""
        self.console.print(text, style=style, markup=False, highlight=False)

    def say_answer(self, text: str) -> None:
        thinking = FoldedThinking(self.console)

        def show_text(part: str) -> None:
            if part:
                thinking.fold()
            self.console.print(part, end="", markup=False, highlight=False, soft_wrap=True)

        try:
            answer = self.ask(text, on_text=show_text, on_tool=lambda line: self.note(f"[tool] {line}", "dim"), on_thinking=thinking.add)
        finally:
            thinking.fold()
        self.console.print()
        if answer.dropped_turns:
            self.note(f"({answer.dropped_turns} oldest turn(s) left out to fit the context window)", "yellow")
        if answer.interrupted:
            self.note("[interrupted]", "yellow")
        elif answer.usage is not None:
            u = answer.usage
            self.note(f"{u.completion_tokens} tokens · {u.decode_tok_per_s:.1f} tok/s · first token {u.time_to_first_token_s:.2f} s", "dim")

    def run_command(self, line: str) -> bool:
        """Handle a slash command; False means quit."""
        name, _, argument = line.strip().partition(" ")
        argument = argument.strip()
        handlers: dict[str, Callable[[str], None]] = {
            "/help": lambda _: self.note(HELP),
            "/new": lambda _: self._command_new(),
            "/history": lambda _: self._command_history(),
            "/resume": self._command_resume,
            "/system": self._command_system,
            "/image": self._command_image,
            "/set": self._command_set,
            "/stats": lambda _: self._command_stats(),
            "/thinking": lambda _: self.note(self.last_reasoning or "(the last answer had no reasoning)", "dim italic"),
            "/export": self._command_export,
            "/clear": lambda _: self.console.clear(),
        }
        if name in ("/quit", "/exit", "/bye"):
            return False
        handler = handlers.get(name)
        if handler is None:
            self.note(f"unknown command {name}; /help lists them", "red")
        else:
            try:
                handler(argument)
            except MistralVllmError as e:
                self.note(str(e), "red")
        return True

    def _command_new(self) -> None:
        self.new_conversation()
        self.note(f"new conversation {self.conversation.id}")

    def _require_history(self) -> HistoryStore:
        if self.history is None:
            raise MistralVllmError("history is off (history.enabled is false or --no-history)")
        return self.history

    def _command_history(self) -> None:
        self.console.print(conversation_table(self._require_history().list(limit=15)))

    def _command_resume(self, conversation_id: str) -> None:
        if not conversation_id:
            raise MistralVllmError("/resume needs a conversation id (see /history)")
        self.conversation = self._require_history().resume(conversation_id)
        turns = sum(1 for m in self.conversation.messages if m.role == "user")
        self.note(f"resumed {self.conversation.id} ({turns} turns)")

    def _command_image(self, path: str) -> None:
        if not path:
            raise MistralVllmError("/image needs a file (PNG, JPEG, WebP, GIF, BMP or TIFF)")
        size = self.attach_image(path)
        self.note(f"{path} attached ({size // 1024} KiB); it goes with your next message", "dim")

    def _command_system(self, text: str) -> None:
        self.conversation.set_system_prompt(text or None)
        self.note("system prompt set" if text else "system prompt cleared")

    def _command_set(self, argument: str) -> None:
        if not argument:
            chosen = self.sampling.model_dump(exclude_defaults=True)
            self.note(json.dumps(chosen) if chosen else "no sampling options set (greedy)")
            return
        key, _, raw = argument.partition(" ")
        raw = raw.strip()
        try:
            value = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            value = shlex.split(raw) if key == "stop" else raw
        try:
            self.sampling = self.sampling.replace(**{key: value})
        except RequestError as e:
            raise MistralVllmError(f"/set {e}") from None
        self.note(f"{key} = {json.dumps(value)}")

    def _command_stats(self) -> None:
        info, stats = self.session.info(), self.session.engine_stats()
        in_context = self.conversation.fit("", count_tokens=self.session.count_tokens, budget=self.budget, reserve=0).prompt_tokens
        lines = [f"tokens in context: {in_context} of {self.budget}"]
        if self.last_usage is not None:
            u = self.last_usage
            lines += [
                f"last answer: {u.prompt_tokens} prompt tokens at {u.prompt_tok_per_s:.1f} tok/s, "
                f"{u.completion_tokens} generated at {u.decode_tok_per_s:.1f} tok/s, first token after {u.time_to_first_token_s:.2f} s",
            ]
        if info["paged_attention"]:
            lines.append(
                f"KV cache: paged attention on, block size {info['block_size'] or 32}, memory {info['kv_mem'] or 'default'}, "
                f"{stats['kv_cache_blocks_used']} of {stats['kv_cache_blocks']} blocks used"
            )
        else:
            lines.append(f"KV cache: paged attention off ({info['device']}), up to {info['max_running_sequences']} sequences at once")
        if info["prefix_cache_n"] and (limit := info["prefix_cache_bytes_limit"]):
            lines.append(
                f"prefix cache: {stats['prefix_cache_hits']} hits in {stats['sequences']} sequences; keeps "
                f"{stats['prefix_cache_sequences']} of {info['prefix_cache_n']} sequences, "
                f"{stats['prefix_cache_bytes'] / 2**20:.1f} of {limit / 2**20:.0f} MiB"
            )
        else:
            lines.append("prefix cache: off")
        self.note("\n".join(lines))

    def _command_export(self, target: str) -> None:
        text = self._require_history().export(self.conversation.id, "markdown")
        if target:
            Path(target).expanduser().write_text(text)
            self.note(f"written to {target}")
        else:
            self.note(text)

    def run_interactive(self, prompt_history: Path) -> None:
        """Read messages at a prompt until /quit or Ctrl-D."""
        prompt_history.parent.mkdir(parents=True, exist_ok=True)
        prompt: PromptSession[str] = PromptSession(history=FileHistory(str(prompt_history)))
        while True:
            try:
                line = prompt.prompt(">>> ")
                if line.strip().startswith(MULTILINE_FENCE):
                    line = self._read_multiline(prompt, line.strip()[len(MULTILINE_FENCE) :])
            except KeyboardInterrupt:
                continue
            except EOFError:
                return
            if not line.strip():
                continue
            if line.startswith("/"):
                if not self.run_command(line):
                    return
                continue
            try:
                self.say_answer(line)
            except KeyboardInterrupt:
                self.note("\n[interrupted]", "yellow")
            except MistralVllmError as e:
                self.note(f"\n{e}", "red")

    @staticmethod
    def _read_multiline(prompt: PromptSession[str], first: str) -> str:
        if first.rstrip().endswith(MULTILINE_FENCE):
            return first.rstrip()[: -len(MULTILINE_FENCE)]
        lines = [first] if first else []
        while True:
            line = prompt.prompt("... ")
            if line.rstrip().endswith(MULTILINE_FENCE):
                lines.append(line.rstrip()[: -len(MULTILINE_FENCE)])
                return "\n".join(lines).strip("\n")
            lines.append(line)

    def run_pipe(self, stdin: TextIO, stdout: TextIO, *, as_json: bool) -> None:
        """Answer all of ``stdin`` as one message; print only the answer (or JSON)."""
        question = stdin.read().strip()
        if not question:
            raise MistralVllmError("no question on standard input")
        tool_lines: list[str] = []

        def echo(text: str) -> None:
            stdout.write(text)
            stdout.flush()

        def report_tool(line: str) -> None:
            tool_lines.append(line)
            self.note(f"[tool] {line}", "dim")

        answer = self.ask(question, on_text=(lambda _: None) if as_json else echo, on_tool=report_tool)
        if as_json:
            usage = answer.usage
            stdout.write(
                json.dumps(
                    {
                        "conversation_id": self.conversation.id if self.history else None,
                        "text": answer.text,
                        "finish_reason": answer.finish_reason,
                        "tool_calls": tool_lines,
                        "usage": None
                        if usage is None
                        else {
                            name: getattr(usage, name)
                            for name in (
                                "prompt_tokens",
                                "completion_tokens",
                                "total_tokens",
                                "time_to_first_token_s",
                                "prompt_tok_per_s",
                                "decode_tok_per_s",
                                "total_time_s",
                            )
                        },
                    }
                )
            )
        stdout.write("\n")
