"""The commands about model files: `plan` a per-layer topology for a memory
budget, `quantize` a model to UQFF once, and list the `models` there are (the
config's, Ollama's and the Hugging Face cache's)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, get_args

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._core import Topology, inspect_model
from .command_options import config_option, reports_errors
from .config import ServedModelSection, load_config
from .errors import MistralVllmError
from .models import default_model_path, resolve_model
from .planner import DTYPE_BYTES, ModelInventory, Plan, PlanCheck, Quality, check_plan, parse_memory, plan_topology
from .sampling import SamplingParams
from .session import Session
from .stores import StoredModel, huggingface, ollama

MIB = 2**20


@click.command()
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
        _write_plan(proposal, out)
    result = check_plan(inventory, proposal) if check else None
    if result is not None:
        report["check"] = {"measured_bytes": result.measured_bytes, "perplexity": result.perplexity, "base_perplexity": result.base_perplexity}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = Console()
    console.print(f"{inventory.path.name}: {budget / MIB:.0f} MiB budget, quality {quality}, {context} tokens of context", highlight=False)
    _print_plan(console, proposal, dtype, result)
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


def _write_plan(proposal: Plan, out: Path) -> None:
    """Write ``proposal`` as a topology file (.yml/.yaml) or a config file's topology section (.json)."""
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


def _print_plan(console: Console, proposal: Plan, dtype: str, result: PlanCheck | None) -> None:
    """The plan's layers as a table, its memory estimate, and what loading it measured."""
    table = Table()
    for column in ("layers", "isq"):
        table.add_column(column)
    for entry in proposal.config_section():
        table.add_row(entry["layers"], entry.get("isq", f"none ({dtype})"))
    console.print(table)
    console.print(
        f"estimate: weights {proposal.weight_bytes / MIB:.0f} MiB + KV cache {proposal.kv_bytes / MIB:.0f} MiB "
        f"+ runtime {proposal.runtime_bytes / MIB:.0f} MiB = {proposal.total_bytes / MIB:.0f} MiB",
        highlight=False,
    )
    if result is not None:
        measured = result.measured_bytes
        console.print(
            f"loaded: {'?' if measured is None else f'{measured / MIB:.0f} MiB'} resident; perplexity {result.perplexity:.2f} "
            f"(unquantized {result.base_perplexity:.2f}, {100 * (result.perplexity / result.base_perplexity - 1):+.1f}%)",
            highlight=False,
        )


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="A plain (safetensors) model directory.")
@click.option("--isq", help="Quantize every layer to this type, e.g. Q4K.")
@click.option("--topology", "topology_file", type=click.Path(dir_okay=False, path_type=Path), help="A per-layer topology file (YAML).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory for the UQFF model.")
@reports_errors
def quantize(model_dir: Path, isq: str | None, topology_file: Path | None, out: Path) -> None:
    """Quantize a plain model once and save it as UQFF, to load later without quantizing."""
    if (isq is None) == (topology_file is None):
        raise click.UsageError("give --isq or --topology (one of them)")
    topology = Topology.from_file(topology_file) if topology_file is not None else None
    question = [{"role": "user", "content": "Name three colours."}]
    started = time.monotonic()
    with Session(model_dir, isq=isq, topology=topology, device="cpu", write_uqff=out / "model.uqff") as session:
        quantize_s = time.monotonic() - started
        before = session.chat(question, SamplingParams(max_tokens=16)).text
    started = time.monotonic()
    with Session(out, device="cpu") as session:
        load_s = time.monotonic() - started
        after = session.chat(question, SamplingParams(max_tokens=16)).text
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    click.echo(f"wrote {out} ({size / MIB:.0f} MiB)")
    click.echo(f"quantize and write: {quantize_s:.1f} s; load from UQFF: {load_s:.1f} s")
    click.echo(f"same greedy answer after loading: {'yes' if before == after else 'no'}")


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the lists as JSON.")
@reports_errors
def models(config_path: Path | None, as_json: bool) -> None:
    """The config's models (the first loads at start-up), then the models
    Ollama has pulled and those in the Hugging Face cache, by the names that
    `chat --model` and `serve` take. Nothing is downloaded."""
    config = load_config(config_path)
    configured = [_configured_model(entry) for entry in config.served_models()]
    stores = {
        f"pulled by Ollama ({ollama.searched()})": ollama.list_models(),
        f"Hugging Face cache ({huggingface.cache_dir()})": huggingface.list_models(),
    }
    if as_json:
        found = [[dataclasses.asdict(model) | {"path": str(model.path)} for model in listed] for listed in stores.values()]
        click.echo(json.dumps({"configured": configured, "ollama": found[0], "huggingface": found[1]}, indent=2))
        return
    console = Console()
    table = Table("name", "aliases", "path", "format", "architecture", "layers", "size", title="configured")
    for model in configured:
        size = "-" if model["size_bytes"] is None else f"{model['size_bytes'] / MIB:.0f} MiB"
        facts = (model["format"] or "-", model["architecture"] or model["error"], str(model["num_layers"] or "-"), size)
        table.add_row(*map(Text, (model["name"], ", ".join(model["aliases"]), model["path"], *facts)))
    console.print(table)
    for title, listed in stores.items():
        console.print(_stored_models(title, listed) if listed else Text(f"{title}: none"))


def _stored_models(title: str, listed: list[StoredModel]) -> Table:
    table = Table("name", "path", "size", title=title)
    for model in listed:
        table.add_row(Text(model.name), Text(str(model.path)), f"{model.size_bytes / MIB:.0f} MiB")
    return table


def _configured_model(entry: ServedModelSection) -> dict[str, Any]:
    """What the files of a configured model say, or why they could not be read."""
    listed: dict[str, Any] = {"name": entry.name, "aliases": entry.aliases, "path": entry.path or str(default_model_path())}
    listed.update({"format": None, "architecture": None, "num_layers": None, "size_bytes": None, "error": None})
    try:
        found = inspect_model(resolve_model(entry.path, download=False))
    except MistralVllmError as e:
        return {**listed, "error": str(e)}
    facts = {key: found[key] for key in ("format", "architecture", "num_layers", "size_bytes")}
    return {**listed, "path": found["path"], **facts}
