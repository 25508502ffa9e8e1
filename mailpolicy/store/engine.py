"""Engines: SQLite (WAL, busy_timeout, BEGIN IMMEDIATE for writes) or PostgreSQL; migrations."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")


DB_FILE_MODE = 0o600  # password hashes: the daemon's user only (Dovecot reads as that user)


def secure_db_files(db: Path) -> None:
    """Create the SQLite file 0600 whatever the umask (SQLite gives its `-wal` and `-shm` the
    mode of the main file), and make an existing file and its `-wal`/`-shm` 0600 too (older
    versions left them 0644). Dovecot's SQL passdb reads the file as its owner (the deployed
    `mail_uid`/auth worker user is mailpolicy's own user, see deploy/dovecot.py), and a WAL
    database cannot be read through group bits alone (readers write `-shm`)."""
    try:
        fd = os.open(db, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DB_FILE_MODE)
    except FileExistsError:
        pass
    else:
        try:
            os.fchmod(fd, DB_FILE_MODE)
        finally:
            os.close(fd)
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path, mode & ~0o077)


def make_engine(url: str, busy_timeout_ms: int = 5000) -> AsyncEngine:
    """Create the async engine; for SQLite set WAL and busy_timeout and take control of BEGIN
    so that write transactions start with BEGIN IMMEDIATE (no lock upgrade deadlocks)."""
    if url.startswith("sqlite"):
        db_path = sa.engine.make_url(url).database
        if db_path and db_path != ":memory:" and not db_path.startswith("file:"):
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            secure_db_files(Path(db_path))
        engine = create_async_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_conn: Any, _record: object) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            write = conn.get_execution_options().get("write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return create_async_engine(url, pool_pre_ping=True)


def _upgrade(connection: sa.Connection) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(write=True)
        await conn.run_sync(_upgrade)
        await conn.commit()
