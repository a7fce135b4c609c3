"""glibc's mmap threshold stays fixed once a Session is made (allocator.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Frees a 28 MiB block (as the engine frees its 28.7 MiB GGUF read buffer), or
# loads the default model, then takes 4 MiB (a KV-cache tensor's size) and
# prints whether that came from its own mmap.
PROBE = """
import ctypes, sys
from mistralvllm.allocator import keep_large_blocks_out_of_the_heap

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    assert keep_large_blocks_out_of_the_heap()
if sys.argv[1] == "session":
    from mistralvllm import Session
    engine = Session()  # loads the default GGUF, freeing its read buffer
else:
    libc.free(libc.malloc(28 << 20))
mapped_before = libc.mallinfo2().hblks
block = libc.malloc(4 << 20)
print(libc.mallinfo2().hblks - mapped_before)
"""


def mapped_blocks_after_a_large_free(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(result.stdout)


ON_GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not ON_GLIBC, reason="glibc's mmap threshold: other C libraries have none to fix")
def test_a_freed_large_block_no_longer_pulls_later_ones_into_the_heap() -> None:
    # glibc's own behaviour, which the fix is for: the threshold rose to 28 MiB.
    assert mapped_blocks_after_a_large_free("default") == 0
    assert mapped_blocks_after_a_large_free("fixed") == 1


@pytest.mark.skipif(not ON_GLIBC, reason="glibc's mmap threshold: other C libraries have none to fix")
def test_after_a_model_load_kv_sized_blocks_are_still_mapped() -> None:
    assert mapped_blocks_after_a_large_free("session") == 1
