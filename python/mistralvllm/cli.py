"""The `mistralvllm` command: chat, config, history, models, info."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, get_args

import click
import platformdirs
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import __version__
from ._core import BUILD_FEATURES, MISTRALRS_VERSION, inspect_model
from .chat_ui import ChatApp, conversation_table, start_conversation, when
from .config import Config, ServedModelSection, config_schema, load_config
from .errors import MistralVllmError, ModelLoadError
from .history import ExportFormat, HistoryStore, open_history
from .models import default_model_path, served_model_name
from .planner import DTYPE_BYTES, ModelInventory, Quality, check_plan, parse_memory, plan_topology
from .session import Session
from .tools import load_python_tool

P = ParamSpec("P")
R = TypeVar("R")
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="Config file (JSON); see `mistralvllm config schema`."
)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into a one-line message and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except MistralVllmError as e:
            Console(stderr=True).print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mistralvllm")
def main() -> None:
    """Chat with local models on the mistral.rs engine."""


def chosen_model(config: Config, model: str | None, lora_dirs: tuple[str, ...]) -> ServedModelSection:
    """The model ``chat --model`` picks: a configured model's name or alias,
    else a model file or directory (with the first model's options); the
    config's first model without it. ``lora_dirs`` replace its adapters."""
    entry = config.served_models()[0]
    if model is not None:
        found = config.find_model(model)
        if found is None and not Path(model).expanduser().exists():
            names = ", ".join(name for each in config.served_models() for name in each.names)
            raise ModelLoadError(f"{model}: no such model file or directory, nor a configured model name (configured: {names})")
        entry = found or entry.model_copy(update={"path": str(Path(model).expanduser()), "name": served_model_name(model)})
    if lora_dirs:
        entry = entry.model_copy(update={"lora": [str(Path(d).expanduser().resolve()) for d in lora_dirs]})
    return entry


def load_session(model: ServedModelSection, console: Console, *, quiet: bool) -> Session:
    """Load ``model``, with a spinner and elapsed time unless ``quiet``."""
    if quiet:
        return Session(**model.session_options())
    name = model.path or str(default_model_path())
    with Progress(SpinnerColumn(), TextColumn("loading {task.description}"), TimeElapsedColumn(), console=console, transient=True) as progress:
        progress.add_task(Path(name).name, total=None)
        return Session(**model.session_options())


@main.command()
@config_option
@click.option("--model", help="A model the config names (models[].name or an alias), or a .gguf file or Hugging Face model directory.")
@click.option("--resume", "resume_id", help="Continue a stored conversation (id or id prefix).")
@click.option("--system", "system_prompt", help="System prompt for a new conversation.")
@click.option("--json", "as_json", is_flag=True, help="Pipe mode: print the answer as JSON.")
@click.option("--no-history", is_flag=True, help="Do not store this chat.")
@click.option("--regex", help="Constrain every answer to match this regular expression.")
@click.option(
    "--grammar", "grammar_file", type=click.Path(dir_okay=False, path_type=Path), help="Constrain every answer to this Lark grammar (a file)."
)
@click.option("--tool", "tool_specs", multiple=True, help="Offer a Python function as a tool: MODULE:FUNCTION or FILE.py:FUNCTION (repeatable).")
@click.option(
    "--tool-choice",
    type=click.Choice(["auto", "required"]),
    default="auto",
    show_default=True,
    help="required: every question gets a tool call first.",
)
@click.option(
    "--lora", "lora_dirs", multiple=True, help="A LoRA adapter directory to merge into the (plain) model (repeatable; overrides the config)."
)
@reports_errors
def chat(
    config_path: Path | None,
    model: str | None,
    resume_id: str | None,
    system_prompt: str | None,
    as_json: bool,
    no_history: bool,
    regex: str | None,
    grammar_file: Path | None,
    tool_specs: tuple[str, ...],
    tool_choice: str,
    lora_dirs: tuple[str, ...],
) -> None:
    """Chat in the terminal; with piped input, answer it and print only the answer."""
    tools = [load_python_tool(spec) for spec in tool_specs]
    if regex is not None and grammar_file is not None:
        raise click.UsageError("give --regex or --grammar, not both")
    constraint: dict[str, str] = {"regex": regex} if regex is not None else {}
    if grammar_file is not None:
        try:
            constraint["grammar"] = grammar_file.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise MistralVllmError(f"{grammar_file}: cannot read the grammar ({e})") from None
    overrides: dict[str, Any] = {}
    if system_prompt is not None:
        overrides["system_prompt"] = system_prompt
    if no_history:
        overrides["history"] = {"enabled": False}
    config = load_config(config_path, overrides=overrides)
    interactive = sys.stdin.isatty()
    console = Console(stderr=not interactive)
    history = open_history(config.history) if config.history.enabled else None
    session = load_session(chosen_model(config, model, lora_dirs), console, quiet=not interactive)
    with session:
        info = session.info()
        if resume_id is not None:
            if history is None:
                raise MistralVllmError("--resume needs the history (history.enabled is false or --no-history)")
            conversation = history.resume(resume_id)
        else:
            conversation = start_conversation(session, config, history, config.system_prompt)
        app = ChatApp(session, config, history, conversation, console, tools=tools, tool_choice=tool_choice)
        app.sampling.update(constraint)
        if not interactive:
            app.run_pipe(sys.stdin, sys.stdout, as_json=as_json)
            return
        console.print(
            f"[bold]{escape(Path(info['model']).name)}[/bold] ({info['architecture']}, {info['num_layers']} layers, {info['device']}) · "
            f"conversation {conversation.id} · /help for commands, Ctrl-D to leave",
            highlight=False,
        )
        app.run_interactive(Path(platformdirs.user_data_dir("mistralvllm")) / "prompt_history")


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="A plain (safetensors) model directory.")
@click.option("--memory", required=True, help="Memory budget for weights, KV cache and runtime, e.g. 2GiB or 800MB.")
@click.option("--quality", type=click.Choice(get_args(Quality)), default="balanced", show_default=True)
@click.option("--context", type=click.IntRange(min=1), help="Tokens of KV cache to plan for (default: the model's context window).")
@click.option(
    "--dtype",
    type=click.Choice(sorted(DTYPE_BYTES)),
    default="f32",
    show_default=True,
    help="Activation/KV dtype (f32 is the CPU default, bf16 on GPUs).",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the plan: .yml/.yaml as a topology file, .json as a config file's topology section.",
)
@click.option("--check", is_flag=True, help="Load the plan and report real memory and perplexity against the unquantized model.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (and check) as JSON.")
@reports_errors
def plan(model_dir: Path, memory: str, quality: Quality, context: int | None, dtype: str, out: Path | None, check: bool, as_json: bool) -> None:
    """Propose a per-layer ISQ topology that fits a memory budget."""
    budget = parse_memory(memory)
    inventory = ModelInventory.read(model_dir)
    context = context or inventory.max_context
    proposal = plan_topology(inventory, budget, quality=quality, dtype_bytes=DTYPE_BYTES[dtype], context=context)
    mib = 2**20
    report: dict[str, Any] = {
        "model": str(inventory.path),
        "budget_bytes": budget,
        "quality": quality,
        "context": context,
        "topology": proposal.config_section(),
        "estimate_bytes": {
            "weights": proposal.weight_bytes,
            "kv_cache": proposal.kv_bytes,
            "runtime": proposal.runtime_bytes,
            "total": proposal.total_bytes,
        },
    }
    if out is not None:
        if out.suffix in (".yml", ".yaml"):
            text = proposal.topology_yaml()
        elif out.suffix == ".json":
            text = json.dumps({"topology": proposal.config_section()}, indent=2) + "\n"
        else:
            raise MistralVllmError(f"--out {out}: expected a .yml/.yaml topology file or a .json config section")
        try:
            out.write_text(text)
        except OSError as e:
            raise MistralVllmError(f"--out {out}: cannot write ({e})") from None
    if check:
        result = check_plan(inventory, proposal)
        report["check"] = {"measured_bytes": result.measured_bytes, "perplexity": result.perplexity, "base_perplexity": result.base_perplexity}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = Console()
    console.print(f"{inventory.path.name}: {budget / mib:.0f} MiB budget, quality {quality}, {context} tokens of context", highlight=False)
    table = Table()
    for column in ("layers", "isq"):
        table.add_column(column)
    for entry in proposal.config_section():
        table.add_row(entry["layers"], entry.get("isq", f"none ({dtype})"))
    console.print(table)
    console.print(
        f"estimate: weights {proposal.weight_bytes / mib:.0f} MiB + KV cache {proposal.kv_bytes / mib:.0f} MiB "
        f"+ runtime {proposal.runtime_bytes / mib:.0f} MiB = {proposal.total_bytes / mib:.0f} MiB",
        highlight=False,
    )
    if check:
        measured = result.measured_bytes
        console.print(
            f"loaded: {'?' if measured is None else f'{measured / mib:.0f} MiB'} resident; perplexity {result.perplexity:.2f} "
            f"(unquantized {result.base_perplexity:.2f}, {100 * (result.perplexity / result.base_perplexity - 1):+.1f}%)",
            highlight=False,
        )
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="A plain (safetensors) model directory.")
@click.option("--isq", help="Quantize every layer to this type, e.g. Q4K.")
@click.option("--topology", "topology_file", type=click.Path(dir_okay=False, path_type=Path), help="A per-layer topology file (YAML).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory for the UQFF model.")
@reports_errors
def quantize(model_dir: Path, isq: str | None, topology_file: Path | None, out: Path) -> None:
    """Quantize a plain model once and save it as UQFF, to load later without quantizing."""
    import time

    from ._core import Topology

    if (isq is None) == (topology_file is None):
        raise click.UsageError("give --isq or --topology (one of them)")
    topology = Topology.from_file(topology_file) if topology_file is not None else None
    question = [{"role": "user", "content": "Name three colours."}]
    started = time.monotonic()
    with Session(model_dir, isq=isq, topology=topology, device="cpu", write_uqff=out / "model.uqff") as session:
        quantize_s = time.monotonic() - started
        before = session.chat(question, max_tokens=16).text
    started = time.monotonic()
    with Session(out, device="cpu") as session:
        load_s = time.monotonic() - started
        after = session.chat(question, max_tokens=16).text
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    click.echo(f"wrote {out} ({size / 2**20:.0f} MiB)")
    click.echo(f"quantize and write: {quantize_s:.1f} s; load from UQFF: {load_s:.1f} s")
    click.echo(f"same greedy answer after loading: {'yes' if before == after else 'no'}")


@main.command()
@config_option
@click.option("--host", help="Address to bind (default: the config's server.host, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: the config's server.port, 8000).")
@reports_errors
def serve(config_path: Path | None, host: str | None, port: int | None) -> None:
    """Serve the OpenAI-compatible API and the web chat page."""
    import logging

    import uvicorn

    from .server import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    server = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    config = load_config(config_path, overrides={"server": server} if server else None)
    # A missing or unreadable model is an error at start, not a service stuck at 503.
    for entry in config.served_models():
        inspect_model(entry.path or default_model_path())
    if config.server.host not in ("127.0.0.1", "localhost", "::1") and config.server.api_key is None:
        Console(stderr=True).print(
            f"WARNING: listening on {config.server.host} without an API key: anyone who can reach this port can use the model "
            "and read the chat history. Set server.api_key (or MISTRALVLLM_SERVER__API_KEY).",
            style="bold red",
            markup=False,
        )
    uvicorn.run(create_app(config), host=config.server.host, port=config.server.port, log_level="info")


@main.group("config")
def config_group() -> None:
    """Check a config file, or print its JSON schema."""


@config_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@reports_errors
def config_check(path: Path) -> None:
    """Validate PATH (with MISTRALVLLM_* variables applied) and summarize it."""
    config = load_config(path)
    topology = config.build_topology()
    click.echo(f"{path}: ok")
    for entry in config.served_models():
        click.echo(f"  model {entry.name}: {entry.path or 'bundled default (' + str(default_model_path().name) + ')'} on {entry.device}")
    if topology is not None:
        ranges = [f"{r.start}..{r.end} {r.isq or 'no isq'}" for r in topology.ranges]
        click.echo(f"  topology: {', '.join(ranges)}")
    click.echo(f"  paged attention: {config.paged_attention.mode}; history: {'on' if config.history.enabled else 'off'}")


@config_group.command("schema")
def config_schema_command() -> None:
    """Print the JSON schema of the config file."""
    click.echo(json.dumps(config_schema(), indent=2))


@main.group()
def history() -> None:
    """Stored conversations: list, show, export, search, rm."""


def _history_from(config_path: Path | None) -> HistoryStore:
    return open_history(load_config(config_path).history)


@history.command("list")
@config_option
@click.option("-n", "--limit", default=20, show_default=True)
@reports_errors
def history_list(config_path: Path | None, limit: int) -> None:
    """The most recent conversations."""
    Console().print(conversation_table(_history_from(config_path).list(limit=limit)))


@history.command("show")
@config_option
@click.argument("conversation_id")
@reports_errors
def history_show(config_path: Path | None, conversation_id: str) -> None:
    """A conversation's messages."""
    store = _history_from(config_path)
    summary = store.show(conversation_id)
    console = Console(highlight=False)
    console.print(f"{summary.title or summary.id}  {summary.id}  {when(summary.created)}", style="bold", markup=False)
    if summary.system_prompt:
        console.print(f"system: {summary.system_prompt}", style="dim", markup=False)
    for message in store.messages(summary.id):
        flag = " (interrupted)" if message.interrupted else ""
        console.print(f"{message.role}{flag}:", style="bold", markup=False)
        console.print(message.content, markup=False)


@history.command("export")
@config_option
@click.argument("conversation_id")
@click.option("--format", "export_format", type=click.Choice(get_args(ExportFormat)), default="markdown", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead of standard output.")
@reports_errors
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


@history.command("rm")
@config_option
@click.argument("conversation_id")
@reports_errors
def history_rm(config_path: Path | None, conversation_id: str) -> None:
    """Delete a conversation."""
    store = _history_from(config_path)
    summary = store.show(conversation_id)
    store.delete(summary.id)
    click.echo(f"deleted {summary.id}")


@main.command()
@config_option
@reports_errors
def models(config_path: Path | None) -> None:
    """The config's models (the first loads at start-up): name, aliases, path, format, architecture, layers, size."""
    config = load_config(config_path)
    table = Table("name", "aliases", "path", "format", "architecture", "layers", "size")
    for entry in config.served_models():
        path = entry.path or str(default_model_path())
        named = (entry.name, ", ".join(entry.aliases))
        try:
            found = inspect_model(path)
        except MistralVllmError as e:
            table.add_row(*map(Text, (*named, path, "-", str(e), "-", "-")))
            continue
        facts = (found["path"], found["format"], found["architecture"], str(found["num_layers"]), f"{found['size_bytes'] / 2**20:.0f} MiB")
        table.add_row(*map(Text, (*named, *facts)))
    Console().print(table)


@main.command()
def info() -> None:
    """Versions, build features and visible CUDA devices."""
    click.echo(f"mistralvllm {__version__}")
    click.echo(f"mistral.rs {MISTRALRS_VERSION}")
    click.echo(f"build features: {', '.join(['cpu', *BUILD_FEATURES])}")
    click.echo(f"python {platform.python_version()} on {platform.system()} {platform.machine()}")
    click.echo(f"CUDA devices: {cuda_devices()}")


def cuda_devices() -> str:
    """The GPUs the NVIDIA driver shows (``nvidia-smi``), or why there are none."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        return "none (no NVIDIA driver: nvidia-smi not found)"
    except subprocess.TimeoutExpired:
        return "unknown (nvidia-smi did not answer)"
    if result.returncode != 0:
        return f"none ({(result.stderr or result.stdout).strip() or 'nvidia-smi failed'})"
    devices = [f"cuda:{line.replace(', ', ' ', 1)}" for line in result.stdout.strip().splitlines()]
    note = "" if "cuda" in BUILD_FEATURES else " (this build is CPU-only)"
    return ("; ".join(devices) or "none") + note
