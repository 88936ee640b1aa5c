"""A throw-away PostgreSQL cluster the tests start, restart and stop themselves.

Infrastructure-fault tests must restart the server under a running pipeline; doing that to the
shared server on 5432 would break every other test using it. So this builds a private cluster
with ``initdb`` on a spare port, listening on 127.0.0.1 with trust authentication.

PostgreSQL refuses to run as root, so as root the binaries run as the ``postgres`` user
(``runuser -u postgres --``) in a directory that user owns. That directory is made with
``tempfile.mkdtemp`` rather than under pytest's ``tmp_path``, whose parents are private to root
(mode 0700) and so unreadable by ``postgres``. Tests using :func:`require_cluster_binaries` are
skipped, with the reason, where the binaries or the ``postgres`` user are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _missing_reason() -> str | None:
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        return "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
        if not shutil.which("runuser"):
            return "running as root and runuser is missing"
    return None


def require_cluster_binaries() -> None:
    reason = _missing_reason()
    if reason:
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """``initdb`` + ``pg_ctl`` on a spare port; :meth:`restart` and :meth:`stop` for fault tests."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        assert self.bin is not None
        self.root = Path(tempfile.mkdtemp(prefix="mp-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, cwd=self.root)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (dropping every connection), stay down ``down_s`` seconds, start again."""
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url_for(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
