"""The C allocator's settings for a process that serves models.

glibc serves a large allocation with its own ``mmap`` and gives it back to the
system when it is freed, but it raises that size threshold (from 128 KiB up to
32 MiB) every time such a block is freed. The engine frees its 28.7 MiB GGUF
read buffer while loading, so afterwards every KV-cache tensor (a few MiB)
came from the heap arenas, where freed memory stays with the process: 16
chats at once peaked ~200 MiB higher, and the memory of finished chats never
went back. Fixing the threshold keeps those tensors out of the heap.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameter number for the mmap threshold (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
# glibc's own starting value, kept from rising.
MMAP_THRESHOLD_BYTES = 128 * 1024


def keep_large_blocks_out_of_the_heap() -> bool:
    """Fix glibc's mmap threshold at 128 KiB; False where there is no glibc.

    Calling it again does nothing more. Other C libraries (musl, macOS) do
    not raise a threshold this way and are left alone.
    """
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
