"""Fixtures shared by the suite: the llmctl command as a user runs it, and a private copy of the quickstart."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_server import HubServer
from postgres_server import PostgresServer
from support import QUICKSTART, QUICKSTART_KEY, Run


@pytest.fixture
def llmctl() -> Run:
    """Run the installed `llmctl` in a subprocess (non-TTY, like CI); returns the completed process. The
    quickstart's gateway key is set, as the README has a user set it."""
    def run(*args: str, cwd: Path | None = None, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "llmctl", *args], cwd=cwd, input=input, text=True,
                              capture_output=True, timeout=timeout,
                              env={**os.environ, "QUICKSTART_API_KEY": QUICKSTART_KEY, **(env or {})})

    return run


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A copy of the quickstart config in its own directory (so state and logs are private to the test)."""
    target = tmp_path / "llmops.yaml"
    shutil.copy(QUICKSTART, target)
    return target


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server


@pytest.fixture
def hub_llmctl(llmctl: Run, hub: HubServer, tmp_path: Path) -> Run:
    """llmctl with the Hugging Face Hub replaced by the local test hub (pass HF_TOKEN in env= where needed)."""
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        # Generous hub timeouts: a loaded CI machine must not turn a slow local answer into a lock error.
        hub_env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_ETAG_TIMEOUT": "120",
                   "HF_HUB_DOWNLOAD_TIMEOUT": "120"}
        return llmctl(*args, env={**hub_env, **(env or {})})

    return run


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().init()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> PostgresServer:
    """A running PostgreSQL server with an empty `llmctl` database (its `dsn`); a test may stop and start it."""
    postgres_server.reset()
    return postgres_server
