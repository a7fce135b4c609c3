"""A PostgreSQL server that the test suite starts itself, for the history's
PostgreSQL tests: Debian's `postgresql` package (`make postgres` installs
it), a temporary data directory, a free port on 127.0.0.1, password
authentication. PostgreSQL refuses to run as root: under root it runs as the
`postgres` system user that the package creates."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from service import free_port

USER = "postgres"
PASSWORD = "pw-that-must-not-leak"
_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
max_connections = 300
fsync = off
"""


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps them off PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path is None:
        raise RuntimeError("PostgreSQL is not installed (no initdb): `make postgres` installs Debian's postgresql package")
    return Path(on_path).parent


@dataclass
class PostgresServer:
    """A running server with one superuser (``USER``/``PASSWORD``)."""

    root: Path
    port: int
    bin_dir: Path
    _databases: itertools.count[int] = field(default_factory=itertools.count)

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"history_{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        _run_as_postgres([self.bin_dir / "pg_ctl", "-D", self.root / "data", "-m", "fast", "-w", "stop"], self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as_postgres(command: list[str | Path], cwd: Path) -> None:
    prefix = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []
    result = subprocess.run([*prefix, *map(str, command)], cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{result.stdout}{result.stderr}")


def start_postgres() -> PostgresServer:
    """initdb a temporary data directory and start a server on a free port."""
    bin_dir = postgres_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="mistralvllm-postgres-"))
    password_file = root / "password"
    password_file.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, USER, USER)
        shutil.chown(password_file, USER, USER)
    try:
        _run_as_postgres(
            [bin_dir / "initdb", "-D", root / "data", "-U", USER, "--pwfile", password_file, "--auth", "scram-sha-256", "-E", "UTF8", "--no-sync"],
            root,
        )
        port = free_port()
        with open(root / "data" / "postgresql.conf", "a") as conf:
            conf.write(_SETTINGS.format(port=port))
        _run_as_postgres([bin_dir / "pg_ctl", "-D", root / "data", "-l", root / "server.log", "-w", "-t", "60", "start"], root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return PostgresServer(root, port, bin_dir)
