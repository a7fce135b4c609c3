"""The `mistralvllm` command: chat, embed, serve, config, history, models, info."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import platformdirs
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import CPU_BUILD, __version__
from ._core import BUILD_FEATURES, MISTRALRS_VERSION, inspect_model
from .chat_ui import ChatApp, start_conversation
from .command_options import config_option, reports_errors
from .config import Config, ServedModelSection, config_schema, load_config
from .errors import MistralVllmError, ModelLoadError
from .history import open_history
from .history_commands import history
from .model_commands import models, plan, quantize
from .models import default_model_path, resolve_model
from .session import Session
from .tools import load_python_tool


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mistralvllm")
def main() -> None:
    """Chat with local models on the mistral.rs engine."""


def located_model(config: Config, model: str | None) -> ServedModelSection:
    """The model ``model`` names (`Config.model_entry`; the config's first
    without it), its name resolved to the file it names (downloaded first
    where it must be)."""
    entry = config.served_models()[0] if model is None else config.model_entry(model)
    try:
        path = resolve_model(entry.path)
    except ModelLoadError as e:
        if model is None or config.find_model(model) is not None:
            raise
        names = ", ".join(name for each in config.served_models() for name in each.names)
        raise ModelLoadError(f"{e}, nor a configured model name (configured: {names})") from None
    return entry if entry.path in (None, str(path)) else entry.model_copy(update={"path": str(path)})


def chosen_model(config: Config, model: str | None, lora_dirs: tuple[str, ...]) -> ServedModelSection:
    """The model ``chat --model`` picks (`located_model`). ``lora_dirs`` replace its adapters."""
    entry = located_model(config, model)
    if lora_dirs:
        entry = entry.model_copy(update={"lora": [str(Path(d).expanduser().resolve()) for d in lora_dirs]})
    return entry


def served_config(config: Config, models: tuple[str, ...]) -> Config:
    """``config`` serving ``models`` (its own where none are given), each
    located (`located_model`) and checked, so that a missing model is an
    error at start, not a service stuck at 503."""
    entries = [located_model(config, model) for model in models] if models else [located_model(config, e.name) for e in config.served_models()]
    for entry in entries:
        inspect_model(entry.path or default_model_path())
    return config if entries == config.served_models() else config.with_models(entries)


def load_session(model: ServedModelSection, console: Console, *, quiet: bool) -> Session:
    """Load ``model``, with a spinner and elapsed time unless ``quiet``."""
    if quiet:
        return Session(**model.session_options())
    name = model.path or str(default_model_path())
    with Progress(SpinnerColumn(), TextColumn("loading {task.description}"), TimeElapsedColumn(), console=console, transient=True) as progress:
        progress.add_task(Path(name).name, total=None)
        return Session(**model.session_options())


def answer_constraint(regex: str | None, grammar_file: Path | None) -> dict[str, str]:
    """The ``regex`` or the grammar read from ``grammar_file`` that every answer of ``chat`` keeps to."""
    if regex is not None and grammar_file is not None:
        raise click.UsageError("give --regex or --grammar, not both")
    if regex is not None:
        return {"regex": regex}
    if grammar_file is None:
        return {}
    try:
        return {"grammar": grammar_file.read_text()}
    except (OSError, UnicodeDecodeError) as e:
        raise MistralVllmError(f"{grammar_file}: cannot read the grammar ({e})") from None


@main.command()
@config_option
@click.option(
    "--model",
    help="A model the config names (models[].name or an alias), a .gguf file or model directory, "
    "an Ollama name (qwen2.5:0.5b) or a Hugging Face repo id (org/name, org/name:Q4_K_M).",
)
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
@click.option(
    "--image",
    "image_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="An image for the first message, read by a vision model (repeatable; /image FILE attaches one later).",
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
    image_files: tuple[Path, ...],
) -> None:
    """Chat in the terminal; with piped input, answer it and print only the answer."""
    tools = [load_python_tool(spec) for spec in tool_specs]
    constraint = answer_constraint(regex, grammar_file)
    overrides: dict[str, Any] = {}
    if system_prompt is not None:
        overrides["system_prompt"] = system_prompt
    if no_history:
        overrides["history"] = {"enabled": False}
    config = load_config(config_path, overrides=overrides)
    interactive = sys.stdin.isatty()
    console = Console(stderr=not interactive)
    entry = chosen_model(config, model, lora_dirs)
    if inspect_model(entry.path or default_model_path())["task"] == "embedding":
        raise MistralVllmError(f"{entry.path}: an embedding model does not chat; use `mistralvllm embed --model {entry.path}`")
    history = open_history(config.history) if config.history.enabled else None
    session = load_session(entry, console, quiet=not interactive)
    with session:
        info = session.info()
        if resume_id is not None:
            if history is None:
                raise MistralVllmError("--resume needs the history (history.enabled is false or --no-history)")
            conversation = history.resume(resume_id)
        else:
            conversation = start_conversation(session, config, history, config.system_prompt)
        app = ChatApp(session, config, history, conversation, console, tools=tools, tool_choice=tool_choice)
        app.sampling = app.sampling.replace(**constraint)
        for image_file in image_files:
            app.attach_image(image_file)
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
@config_option
@click.option("--model", help="An embedding model: a model the config names, or a sentence-transformers model directory.")
@click.option("--dimensions", type=click.IntRange(min=1), help="Keep this many leading components, at unit length.")
@click.option("--truncate", is_flag=True, help="Cut an input longer than the context window to its start instead of failing.")
@click.argument("texts", nargs=-1)
@reports_errors
def embed(config_path: Path | None, model: str | None, dimensions: int | None, truncate: bool, texts: tuple[str, ...]) -> None:
    """Print the embeddings of TEXTS (else of each line of standard input) as
    JSON lines: index, prompt_tokens, embedding."""
    inputs = list(texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not inputs:
        raise click.UsageError("give texts to embed, as arguments or lines on standard input")
    config = load_config(config_path)
    with load_session(located_model(config, model), Console(stderr=True), quiet=not sys.stderr.isatty()) as session:
        for index, embedding in enumerate(session.embed(inputs, dimensions=dimensions, truncate=truncate)):
            print(json.dumps({"index": index, "prompt_tokens": embedding.prompt_tokens, "embedding": list(embedding.vector)}))


@main.command()
@config_option
@click.argument("model_args", metavar="[MODEL]...", nargs=-1)
@click.option(
    "--model",
    "model_options",
    multiple=True,
    help="A model to serve (repeatable), as chat's --model takes it; with the config's options. Default: the config's models.",
)
@click.option("--host", help="Address to bind (default: the config's server.host, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: the config's server.port, 8000).")
@reports_errors
def serve(config_path: Path | None, model_args: tuple[str, ...], model_options: tuple[str, ...], host: str | None, port: int | None) -> None:
    """Serve the OpenAI-compatible API and the web chat page, for each MODEL:
    a configured model's name, a .gguf file or model directory, an Ollama
    name (qwen2.5:0.5b) or a Hugging Face repo id (org/name, org/name:Q4_K_M)."""
    import logging

    import uvicorn

    from .server import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    server = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    config = served_config(load_config(config_path, overrides={"server": server} if server else None), (*model_args, *model_options))
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


for command in (plan, quantize, models, history):
    main.add_command(command)


@main.command()
def info() -> None:
    """Versions, build features and visible CUDA devices."""
    click.echo(f"mistralvllm {__version__}")
    click.echo(f"mistral.rs {MISTRALRS_VERSION}")
    click.echo(f"build features: {', '.join(['cpu', *BUILD_FEATURES])}")
    click.echo(f"CPU build: {CPU_BUILD}")
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
