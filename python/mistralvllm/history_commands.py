"""`mistralvllm history`: list, show, export, search and delete stored conversations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import get_args

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .chat_ui import conversation_table, when
from .command_options import config_option, reports_errors
from .config import load_config
from .history import ConversationSummary, ExportFormat, HistoryStore, open_history
from .images import image_digest


@click.group()
def history() -> None:
    """Stored conversations: list, show, export, search, rm."""


def _history_from(config_path: Path | None) -> HistoryStore:
    return open_history(load_config(config_path).history)


def _stored_conversation(config_path: Path | None, conversation_id: str) -> tuple[HistoryStore, ConversationSummary]:
    """The history, and its conversation with this id (or id prefix)."""
    store = _history_from(config_path)
    return store, store.show(conversation_id)


def conversation_command(name: str) -> Callable[[Callable[..., None]], click.Command]:
    """A ``history NAME`` command about one stored conversation: it takes
    ``--config`` and CONVERSATION_ID, and reports our errors in one line."""

    def register(command: Callable[..., None]) -> click.Command:
        return history.command(name)(config_option(click.argument("conversation_id")(reports_errors(command))))

    return register


@history.command("list")
@config_option
@click.option("-n", "--limit", default=20, show_default=True)
@reports_errors
def history_list(config_path: Path | None, limit: int) -> None:
    """The most recent conversations."""
    Console().print(conversation_table(_history_from(config_path).list(limit=limit)))


@conversation_command("show")
def history_show(config_path: Path | None, conversation_id: str) -> None:
    """A conversation's messages."""
    store, summary = _stored_conversation(config_path, conversation_id)
    console = Console(highlight=False)
    console.print(f"{summary.title or summary.id}  {summary.id}  {when(summary.created)}", style="bold", markup=False)
    if summary.system_prompt:
        console.print(f"system: {summary.system_prompt}", style="dim", markup=False)
    for message in store.messages(summary.id):
        flag = " (interrupted)" if message.interrupted else ""
        console.print(f"{message.role}{flag}:", style="bold", markup=False)
        if message.reasoning:
            console.print(message.reasoning, style="dim italic", markup=False)
        for image in message.images:
            console.print(f"(image sha256:{image_digest(image)[:16]})", style="dim", markup=False)
        console.print(message.content, markup=False)


@conversation_command("export")
@click.option("--format", "export_format", type=click.Choice(get_args(ExportFormat)), default="markdown", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead of standard output.")
def history_export(config_path: Path | None, conversation_id: str, export_format: ExportFormat, output: Path | None) -> None:
    """A conversation as Markdown or JSON."""
    text = _history_from(config_path).export(conversation_id, export_format)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)


@history.command("search")
@config_option
@click.argument("text")
@reports_errors
def history_search(config_path: Path | None, text: str) -> None:
    """Messages containing all the words of TEXT."""
    table = Table()
    for name in ("conversation", "role", "when"):
        table.add_column(name, no_wrap=True)
    table.add_column("match")
    for hit in _history_from(config_path).search(text):
        table.add_row(*map(Text, (hit.conversation_id, hit.role, when(hit.created), hit.snippet)))
    Console().print(table)


@conversation_command("rm")
def history_rm(config_path: Path | None, conversation_id: str) -> None:
    """Delete a conversation."""
    store, summary = _stored_conversation(config_path, conversation_id)
    store.delete(summary.id)
    click.echo(f"deleted {summary.id}")
