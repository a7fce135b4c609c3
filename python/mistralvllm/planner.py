"""`mistralvllm plan`: a per-layer ISQ topology that fits a memory budget.

The plan is read off the model's files without loading it: the parameter
count of every layer (from the safetensors headers), the KV cache for the
configured context (from config.json), and the bits per weight of each ISQ
type. It starts every layer at the quality level's best type and lowers one
layer one step at a time, middle layers first (the first and last layers
are the most sensitive to quantization), until the estimate fits. Plans
for all budgets lie on that one path, so a tighter budget never gives a
larger model.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError, ModelLoadError

Quality = Literal["high", "balanced", "small"]

# Bits per weight of each ISQ type as candle stores it (block scales included).
BITS_PER_WEIGHT = {"Q8_0": 8.5, "Q6K": 6.5625, "Q5K": 5.5, "Q4K": 4.5, "Q3K": 3.4375, "Q2K": 2.625}
# The types a quality level may use, best first; None keeps a layer unquantized.
LADDERS: dict[str, tuple[str | None, ...]] = {
    "high": (None, "Q8_0", "Q6K", "Q5K", "Q4K", "Q3K", "Q2K"),
    "balanced": ("Q8_0", "Q6K", "Q5K", "Q4K", "Q3K", "Q2K"),
    "small": ("Q4K", "Q3K", "Q2K"),
}
DTYPE_BYTES = {"f32": 4, "f16": 2, "bf16": 2}
# Memory the engine takes beyond weights and KV cache: tokenizer, buffers,
# the first request's activations, the lm_head it makes from tied embeddings.
# Measured on CPU with mistral.rs 0.8.1 and SmolLM2-135M (resident growth
# after load and one short chat, minus the weights): 154 MiB unquantized,
# 201 MiB all-Q2K; rounded up.
RUNTIME_BYTES = 224 * 2**20
_LAYER_TENSOR = re.compile(r"^model\.layers\.(\d+)\.")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "B": 1,
    "K": 1e3,
    "KB": 1e3,
    "KIB": 2**10,
    "M": 1e6,
    "MB": 1e6,
    "MIB": 2**20,
    "G": 1e9,
    "GB": 1e9,
    "GIB": 2**30,
    "T": 1e12,
    "TB": 1e12,
    "TIB": 2**40,
}


def parse_memory(text: str) -> int:
    """``"2GiB"``, ``"1.5GB"``, ``"800MiB"``, ``"500MB"`` → bytes."""
    match = _MEMORY.match(text)
    unit = match[2].upper() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(f"--memory {text!r}: expected an amount like 2GiB, 1.5GB, 800MiB or 500MB")
    return int(float(match[1]) * _UNITS[unit])


def _safetensors_shapes(path: Path) -> Iterator[tuple[str, list[int]]]:
    """Tensor names and shapes from a safetensors file's header (no weights read)."""
    try:
        with path.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(length))
    except (OSError, struct.error, ValueError) as e:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from None
    for name, entry in header.items():
        if name != "__metadata__":
            yield name, entry["shape"]


@dataclass(frozen=True)
class ModelInventory:
    """What the plan needs to know about a plain model."""

    path: Path
    layer_matrix_params: tuple[int, ...]  # per layer: weights ISQ quantizes (2-D)
    layer_other_params: tuple[int, ...]  # per layer: norms and biases, kept as they are
    other_params: int  # embeddings, final norm, untied lm_head
    kv_bytes_per_token: int  # at one byte per value: 2 (K and V) x layers x kv heads x head dim
    max_context: int

    @classmethod
    def read(cls, model_dir: str | Path) -> ModelInventory:
        path = Path(model_dir).expanduser()
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path}: plan needs a safetensors model directory with config.json ({e})") from None
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(f"{path}: no *.safetensors weights; plan works on plain (safetensors) models")
        try:
            layers = int(config["num_hidden_layers"])
            heads = int(config["num_attention_heads"])
            head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
            kv_heads = int(config.get("num_key_value_heads") or heads)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{path / 'config.json'}: {e} missing or not a number") from None
        matrix, other, rest = [0] * layers, [0] * layers, 0
        for file in files:
            for name, shape in _safetensors_shapes(file):
                count = 1
                for size in shape:
                    count *= size
                match = _LAYER_TENSOR.match(name)
                if match and int(match[1]) < layers:
                    (matrix if len(shape) == 2 else other)[int(match[1])] += count
                else:
                    rest += count
        return cls(path, tuple(matrix), tuple(other), rest, 2 * layers * kv_heads * head_dim, int(config.get("max_position_embeddings") or 2048))

    @property
    def num_layers(self) -> int:
        return len(self.layer_matrix_params)


@dataclass(frozen=True)
class Plan:
    """An ISQ type per layer (None: unquantized) and what it is estimated to
    take: weights, KV cache for the context, and the engine's runtime."""

    layers: tuple[str | None, ...]
    weight_bytes: int
    kv_bytes: int
    runtime_bytes: int = RUNTIME_BYTES

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.runtime_bytes

    def ranges(self) -> list[tuple[int, int, str | None]]:
        """Consecutive layers with the same type as (start, end exclusive, isq)."""
        ranges: list[tuple[int, int, str | None]] = []
        for index, isq in enumerate(self.layers):
            if ranges and ranges[-1][2] == isq:
                ranges[-1] = (ranges[-1][0], index + 1, isq)
            else:
                ranges.append((index, index + 1, isq))
        return ranges

    def config_section(self) -> list[dict[str, str]]:
        """The plan as the config file's ``topology`` list."""
        return [{"layers": f"{start}-{end}", **({"isq": isq} if isq else {})} for start, end, isq in self.ranges()]

    def topology_yaml(self) -> str:
        """The plan as a mistral.rs topology file (``START-END: {isq: ...}``)."""
        lines = []
        for start, end, isq in self.ranges():
            lines.append(f"{start}-{end}:")
            lines.append(f"  isq: {isq}" if isq else "  {}")
        return "\n".join(lines) + "\n"


def _estimate(inventory: ModelInventory, layers: Sequence[str | None], dtype_bytes: int, context: int) -> Plan:
    weights = inventory.other_params * dtype_bytes
    for isq, matrix, other in zip(layers, inventory.layer_matrix_params, inventory.layer_other_params, strict=True):
        bits = dtype_bytes * 8 if isq is None else BITS_PER_WEIGHT[isq]
        weights += int(matrix * bits / 8) + other * dtype_bytes
    return Plan(tuple(layers), weights, inventory.kv_bytes_per_token * dtype_bytes * context)


def degrade_order(num_layers: int) -> list[int]:
    """Layers in the order they are lowered: middle first, the edges last."""
    middle = (num_layers - 1) / 2
    return sorted(range(num_layers), key=lambda i: (abs(i - middle), i))


def plan_path(inventory: ModelInventory, quality: Quality, dtype_bytes: int, context: int) -> Iterator[Plan]:
    """Every plan from best to smallest, one layer one step lower each time."""
    ladder = LADDERS[quality]
    steps = [0] * inventory.num_layers
    yield _estimate(inventory, [ladder[0]] * inventory.num_layers, dtype_bytes, context)
    order = degrade_order(inventory.num_layers)
    for _ in range(len(ladder) - 1):
        for layer in order:
            steps[layer] += 1
            yield _estimate(inventory, [ladder[s] for s in steps], dtype_bytes, context)


def plan_topology(
    inventory: ModelInventory, budget_bytes: int, *, quality: Quality = "balanced", dtype_bytes: int = 4, context: int | None = None
) -> Plan:
    """The best plan on the path whose estimate fits ``budget_bytes``."""
    if quality not in LADDERS:
        raise ConfigError(f"--quality {quality!r}: expected one of {', '.join(LADDERS)}")
    context = context or inventory.max_context
    smallest = None
    for plan in plan_path(inventory, quality, dtype_bytes, context):
        if plan.total_bytes <= budget_bytes:
            return plan
        smallest = plan
    assert smallest is not None
    raise ConfigError(
        f"--memory {budget_bytes / 2**20:.0f} MiB: too small for {inventory.path.name} at quality '{quality}'; "
        f"the smallest plan (all {LADDERS[quality][-1]}, {context} tokens of KV cache) needs {smallest.total_bytes / 2**20:.0f} MiB "
        "(lower --context, or raise --memory)"
    )


# A fixed text for the quality check: plain English prose of ~120 tokens.
CHECK_TEXT = (
    "The lighthouse stood at the end of a narrow spit of rock, and for forty years the same family had kept its lamp burning. "
    "Every evening the keeper climbed the spiral stairs, trimmed the wick, polished the great lens and wound the clockwork "
    "that turned it. Ships passing in the night saw the beam sweep across the water once every ten seconds, and they knew "
    "where the reef lay. In winter the storms threw spray over the gallery, and the keeper wrote in the log how the wind "
    "had shifted, how many vessels had passed, and whether the supply boat had come."
)


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), or None where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class PlanCheck:
    """A plan loaded for real: the memory it took and its perplexity beside the unquantized model's."""

    measured_bytes: int | None
    perplexity: float
    base_perplexity: float


def check_plan(inventory: ModelInventory, plan: Plan, *, device: str = "cpu", text: str = CHECK_TEXT) -> PlanCheck:
    """Load the plan (memory measured as resident growth over the load and a
    short chat), then the unquantized model, and score ``text`` with both."""
    from ._core import Topology
    from .sampling import SamplingParams
    from .session import Session

    topology = Topology()
    for start, end, isq in plan.ranges():
        topology = topology.with_range(start, end, isq=isq)
    before = resident_bytes()
    with Session(inventory.path, topology=topology, device=device) as session:
        session.chat([{"role": "user", "content": "Hello"}], SamplingParams(max_tokens=8))
        after = resident_bytes()
        perplexity = session.perplexity(text)
    with Session(inventory.path, device=device) as session:
        base = session.perplexity(text)
    measured = None if before is None or after is None else after - before
    return PlanCheck(measured, perplexity, base)
