"""Run a command and write its peak RSS in KiB (ru_maxrss of wait4) to a file.

    python benches/peak_rss.py OUT_FILE COMMAND [ARG ...]

Why a launcher: Linux keeps the largest RSS a process had before exec in
its ru_maxrss, and a child started with fork, vfork or posix_spawn runs
in its parent's memory until it execs. A bench driver that holds a few
hundred MiB would lend every command it measures that peak. This small
process forks the command from its own few MiB instead. Exits with the
command's status.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out, command = Path(sys.argv[1]), sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    out.write_text(f"{usage.ru_maxrss}\n")
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
