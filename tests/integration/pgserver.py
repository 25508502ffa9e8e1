"""A private PostgreSQL on loopback for the cluster tests (no tests here): started by the test,
trust authentication for the user `mp`, one fresh database per `createdb()`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """initdb + postgres -F on 127.0.0.1:port, as the postgres user when we are root."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
            pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
        self.base = Path(tempfile.mkdtemp(prefix="mp-pg-"))
        os.chmod(self.base, 0o777)  # readable by the postgres user
        self.data = self.base / "data"
        self.port = free_port()
        self.user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run([*self.user, str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                        "-U", "mp"], check=True, capture_output=True, timeout=120)

    def start(self) -> PgServer:
        self.proc = subprocess.Popen(
            [*self.user, str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.base), "-h", "127.0.0.1", "-F"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p",
                              str(self.port)], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended (a smart one would wait for them)."""
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run([*self.user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m",
                            "fast", "-w", "stop"], capture_output=True, timeout=60)
            self.proc.wait(timeout=60)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def createdb(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        db = f"t{uuid.uuid4().hex[:12]}"
        subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "mp", db], check=True, timeout=60)
        return f"postgresql+asyncpg://mp@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="module", name="pg")
def pg_module() -> Iterator[PgServer]:
    """`pg`: a private PostgreSQL for the tests of one module (import `pg_module` into it)."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.close()
