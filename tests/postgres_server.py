"""A real PostgreSQL server for the tests: initdb + pg_ctl in a temporary directory, on a free port, stopped after.

The binaries come from Debian's `postgresql` package (scripts/install-postgres puts them there). initdb refuses to
run as root, so as root the server runs as the `postgres` user the package creates. A machine without the server
fails the tests that need it with what to run, never skips them.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = "run scripts/install-postgres (Debian's postgresql package), or put initdb and pg_ctl on PATH"
START_TIMEOUT_S = 60


def binaries() -> Path:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's versioned directory (newest first)."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]),
                            reverse=True):
        if (Path(directory) / "initdb").exists():
            return Path(directory)
    pytest.fail(f"PostgreSQL's server is not installed: {INSTALL_HINT}", pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One server, its own cluster; `dsn` reaches the `llmctl` database over TCP as a password-less trusted user."""

    def __init__(self) -> None:
        self.bin = binaries()
        self.root = Path(tempfile.mkdtemp(prefix="llmctl-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.log = self.root / "server.log"
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(f"running as root, PostgreSQL needs its `postgres` user: {INSTALL_HINT}", pytrace=False)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self.dsn = f"postgresql://llmctl@127.0.0.1:{self.port}/llmctl"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True, text=True, cwd=self.root,
                              timeout=START_TIMEOUT_S, **self._user)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done

    def init(self) -> "PostgresServer":
        self._run("initdb", "-D", str(self.data), "-U", "llmctl", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        import psycopg

        with psycopg.connect(self.dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE llmctl")
        return self

    def start(self) -> None:
        # fsync off: the tests stop the server cleanly, and a test machine's disk is not what they measure.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t",
                  str(START_TIMEOUT_S), "start")

    def stop(self) -> None:
        """Stop it at once (connections are cut, as when a database is lost)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def reset(self) -> None:
        """Drop every table, so the next test starts from an empty database (a fresh cluster per test is slow)."""
        import psycopg

        if not self.running():  # a test that stopped it to see the store lost
            self.start()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")

    def close(self) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
