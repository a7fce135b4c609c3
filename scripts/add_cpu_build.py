"""Put the x86-64-v3 build of ``_core`` into the default wheel.

    python3 scripts/add_cpu_build.py DEFAULT_WHEEL X86_64_V3_WHEEL

Both wheels come from `maturin build` of the same sources (the second with
``-C target-cpu=x86-64-v3``). The second's ``mistralvllm/_core*.so`` is
added to the first as ``mistralvllm/_x86_64_v3/_core*.so`` (see
python/mistralvllm/cpu_build.py), and the wheel's RECORD is rewritten.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

X86_64_V3_DIR = "mistralvllm/_x86_64_v3"


class WheelError(Exception):
    """The wheels are not a pair this script can join; the message says why."""


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def add_cpu_build(default_wheel: Path, v3_wheel: Path) -> str:
    """Add ``v3_wheel``'s extension to ``default_wheel`` in place; the name it got."""
    with zipfile.ZipFile(v3_wheel) as v3:
        extensions = [n for n in v3.namelist() if n.startswith("mistralvllm/_core") and n.endswith(".so")]
        if len(extensions) != 1:
            raise WheelError(f"{v3_wheel}: expected one mistralvllm/_core*.so, found {extensions}")
        extension = v3.read(extensions[0])
    added = f"{X86_64_V3_DIR}/{extensions[0].rsplit('/', 1)[1]}"
    with zipfile.ZipFile(default_wheel) as wheel:
        entries = [(info, wheel.read(info)) for info in wheel.infolist()]
    record = next((info.filename for info, _ in entries if info.filename.endswith(".dist-info/RECORD")), None)
    if record is None:
        raise WheelError(f"{default_wheel}: has no .dist-info/RECORD")
    kept = [(info, data) for info, data in entries if info.filename not in (record, added)]
    lines = [_record_line(info.filename, data) for info, data in kept] + [_record_line(added, extension), f"{record},,"]
    temporary = default_wheel.with_suffix(".tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in kept:
            out.writestr(info, data)
        extension_info = zipfile.ZipInfo(added, date_time=kept[0][0].date_time)
        extension_info.external_attr = 0o755 << 16
        out.writestr(extension_info, extension, zipfile.ZIP_DEFLATED)
        out.writestr(record, "\n".join(lines) + "\n")
    temporary.replace(default_wheel)
    return added


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        added = add_cpu_build(Path(argv[1]), Path(argv[2]))
    except (WheelError, OSError, zipfile.BadZipFile) as e:
        print(f"add_cpu_build: {e}", file=sys.stderr)
        return 1
    print(f"add_cpu_build: {argv[1]}: added {added}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
