"""glibc's mmap threshold and arenas stay fixed once a Session is made (allocator.py)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# In a process of its own: the settings (mode "fixed"), a loaded default model
# (mode "session") or neither ("default"); then whether an activation-sized
# block (4 MiB) and one over the threshold (40 MiB) get their own mmap, and
# whether a small block (64 KiB, under any threshold) taken by a new thread
# comes from the main arena.
PROBE = """
import ctypes, json, sys, threading
from mistralvllm.allocator import share_one_heap_across_threads

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_ssize_t]
if sys.argv[1] == "fixed":
    assert share_one_heap_across_threads()
if sys.argv[1] == "session":
    from mistralvllm import Session
    engine = Session()

def mapped(size):
    before = libc.mallinfo2().hblks
    libc.malloc(size)
    return libc.mallinfo2().hblks - before

def from_main_arena_in_a_new_thread(size):
    found = []
    def take():
        # The main arena grows by sbrk, just below the program break; other
        # arenas are heaps of their own mmap, far from it.
        block = libc.malloc(size)
        found.append(0 < libc.sbrk(0) - block < 1 << 32)
    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return found[0]

print(json.dumps({"mapped_4m": mapped(4 << 20), "mapped_40m": mapped(40 << 20), "main_arena": from_main_arena_in_a_new_thread(64 << 10)}))
"""


def probe(mode: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


ON_GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not ON_GLIBC, reason="glibc's threshold and arenas: other C libraries have none to fix")
def test_activation_sized_blocks_come_from_one_shared_heap() -> None:
    # glibc's own behaviour, which the settings change: a fresh process maps a
    # 4 MiB block, and a new thread allocates from an arena of its own.
    assert probe("default") == {"mapped_4m": 1, "mapped_40m": 1, "main_arena": False}
    assert probe("fixed") == {"mapped_4m": 0, "mapped_40m": 1, "main_arena": True}


@pytest.mark.skipif(not ON_GLIBC, reason="glibc's threshold and arenas: other C libraries have none to fix")
def test_a_session_sets_them_before_its_threads_start() -> None:
    assert probe("session") == {"mapped_4m": 0, "mapped_40m": 1, "main_arena": True}
