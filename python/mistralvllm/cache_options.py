"""The KV-cache options a `Session` loads with: the paged-attention KV
memory (`parse_kv_mem`) and the prefix cache's size (`prefix_cache_count`,
`prefix_cache_bytes`), checked and turned into what the engine takes."""

from __future__ import annotations

import os
import re

from .errors import ConfigError

KvMem = int | float | str

_KV_MEM_PATTERN = re.compile(r"^\s*(?P<value>\d+(\.\d+)?)\s*(?P<unit>mb|mib|gb|gib|%|tokens?|ctx)\s*$", re.IGNORECASE)


def parse_kv_mem(kv_mem: KvMem) -> tuple[str, float]:
    """PagedAttention KV-cache memory, in one of seed 003's three forms:
    an amount (``4096`` or ``"4096MB"``/``"4GiB"``), a fraction of device
    memory (``0.9`` or ``"90%"``), or a context size (``"8192 tokens"``)."""
    if isinstance(kv_mem, bool):
        raise ConfigError(f"kv_mem: {kv_mem!r} is not a memory amount, fraction or context size")
    if isinstance(kv_mem, int):
        return ("mb", float(kv_mem))
    if isinstance(kv_mem, float):
        return ("fraction", kv_mem)
    match = _KV_MEM_PATTERN.match(kv_mem) if isinstance(kv_mem, str) else None
    if match is None:
        raise ConfigError(
            f"kv_mem: {kv_mem!r} is not valid; expected MB as an int or '4096MB'/'4GiB', "
            "a fraction as a float or '90%', or a context size as '8192 tokens'"
        )
    value, unit = float(match["value"]), match["unit"].lower()
    if unit in ("gb", "gib"):
        return ("mb", value * 1024)
    if unit in ("mb", "mib"):
        return ("mb", value)
    if unit == "%":
        return ("fraction", value / 100)
    return ("context", value)


# The prefix cache's limits when the config leaves them unset: finished
# sequences kept, and the MiB of KV data they may hold.
DEFAULT_PREFIX_CACHE = 16
DEFAULT_PREFIX_CACHE_MEM = 256

_MEMORY_PATTERN = re.compile(r"^\s*(?P<value>\d+(\.\d+)?)\s*(?P<unit>mb|mib|gb|gib)\s*$", re.IGNORECASE)


def prefix_cache_count(prefix_cache: int | None) -> int:
    """The number of finished sequences whose KV caches are kept for reuse
    (oldest evicted first): ``None`` means 16, 0 turns the cache off."""
    if prefix_cache is None:
        return DEFAULT_PREFIX_CACHE
    if prefix_cache < 0:
        raise ConfigError(f"prefix_cache: {prefix_cache} is negative; expected a number of sequences (0 turns it off)")
    return prefix_cache


def prefix_cache_bytes(prefix_cache_mem: int | str | None) -> int:
    """Bytes of KV data the prefix cache may hold: MiB as an int, or
    ``"512MiB"``/``"1GiB"``; ``None`` means 256 MiB. Each kept sequence holds
    its own tokens only (patches/mistralrs-core-0.8.1/0002-prefix-cache-eviction-memory-identical-prompts):
    22.5 KiB per token with the default model (its KV cache is f16 on the
    CPU, 0012-kv-cache-memory-on-cpu), so 256 MiB keeps ~11,600 tokens."""
    if prefix_cache_mem is None:
        prefix_cache_mem = DEFAULT_PREFIX_CACHE_MEM
    if isinstance(prefix_cache_mem, bool):
        mib = None
    elif isinstance(prefix_cache_mem, int):
        mib = float(prefix_cache_mem)
    else:
        match = _MEMORY_PATTERN.match(prefix_cache_mem) if isinstance(prefix_cache_mem, str) else None
        mib = None if match is None else float(match["value"]) * (1024 if match["unit"].lower().startswith("g") else 1)
    if mib is None:
        raise ConfigError(f"prefix_cache_mem: {prefix_cache_mem!r} is not valid; expected MiB as an int or '512MiB'/'1GiB'")
    size = int(mib * 2**20)
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if not 0 < size < physical:
        raise ConfigError(
            f"prefix_cache_mem: {prefix_cache_mem!r} is out of range; expected more than 0 and less than this "
            f"machine's memory ({physical / 2**30:.1f} GiB); prefix_cache: 0 turns the cache off"
        )
    return size
