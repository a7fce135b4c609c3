"""What a model's files say about it beyond what the engine reports: a GGUF's
key-values and quantization, and the number of parameters.

Only headers are read (a GGUF's key-values and tensor list, a safetensors
file's JSON header), never the weights.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

# llama.cpp's file types (GGUF ``general.file_type``), as llama.cpp and Ollama name them.
GGUF_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

# GGUF value types: struct format of the fixed-size ones; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

Scalar = int | float | bool | str


class ModelMetadataError(ValueError):
    """A model file whose header cannot be read."""


@dataclass(frozen=True)
class GgufMetadata:
    """A GGUF file's scalar key-values (arrays such as the tokenizer's vocabulary
    are left out) and the number of parameters in its tensors."""

    values: dict[str, Scalar] = field(default_factory=dict)
    parameter_count: int = 0

    @property
    def file_type(self) -> str | None:
        """The quantization the file was written with (``Q4_K_M``), if it says."""
        file_type = self.values.get("general.file_type")
        return GGUF_FILE_TYPES.get(file_type) if isinstance(file_type, int) else None


class _Reader:
    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file, self.size = file, size

    def unpack(self, fmt: str) -> Scalar:
        data = self.file.read(struct.calcsize(fmt))
        if len(data) < struct.calcsize(fmt):
            raise ModelMetadataError("the header ends early")
        value: Scalar = struct.unpack(fmt, data)[0]
        return value

    def count(self) -> int:
        value = int(self.unpack("<Q"))
        if value > self.size:
            raise ModelMetadataError(f"a count of {value} is larger than the file")
        return value

    def string(self) -> str:
        return self.file.read(self.count()).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Scalar | None:
        """A value of GGUF type ``kind``; arrays are skipped (``None``)."""
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ModelMetadataError(f"unknown value type {kind}")
        item, length = int(self.unpack("<I")), self.count()
        if item in _SCALARS:
            self.file.seek(length * struct.calcsize(_SCALARS[item]), 1)
        else:
            for _ in range(length):
                self.value(item)
        return None


def read_gguf(path: Path) -> GgufMetadata:
    """The key-values and parameter count of the GGUF file at ``path``."""
    with open(path, "rb") as file:
        reader = _Reader(file, path.stat().st_size)
        if file.read(4) != b"GGUF":
            raise ModelMetadataError(f"{path}: not a GGUF file")
        version = reader.unpack("<I")
        if version not in (2, 3):
            raise ModelMetadataError(f"{path}: GGUF version {version} is not read here (2 and 3 are)")
        tensors, pairs = reader.count(), reader.count()
        values: dict[str, Scalar] = {}
        for _ in range(pairs):
            key = reader.string()
            value = reader.value(int(reader.unpack("<I")))
            if value is not None:
                values[key] = value
        parameters = 0
        for _ in range(tensors):
            reader.string()
            dims = [int(reader.unpack("<Q")) for _ in range(int(reader.unpack("<I")))]
            reader.unpack("<I")  # the tensor's type
            reader.unpack("<Q")  # its offset
            parameters += math.prod(dims)
    return GgufMetadata(values, parameters)


def safetensors_parameter_count(directory: Path) -> int:
    """The number of parameters in the ``*.safetensors`` files of a model directory."""
    parameters = 0
    for path in sorted(directory.glob("*.safetensors")):
        with open(path, "rb") as file:
            try:
                (length,) = struct.unpack("<Q", file.read(8))
                if length > path.stat().st_size:
                    raise ModelMetadataError(f"{path}: the header is longer than the file")
                header = json.loads(file.read(length))
                parameters += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
            except (struct.error, ValueError, KeyError, TypeError, AttributeError) as e:
                raise ModelMetadataError(f"{path}: not a safetensors header ({e})") from None
    return parameters


def human_count(count: int) -> str:
    """A parameter count as Ollama writes it: ``134.52M``, ``8.0B``, ``7B``."""
    for unit, scale, decimals in (("B", 10**9, 1), ("M", 10**6, 2), ("K", 10**3, 0)):
        if count >= scale:
            number = count / scale
            return f"{number:.0f}{unit}" if number == int(number) else f"{number:.{decimals}f}{unit}"
    return str(count)
