"""The schema changes only through Alembic: the migrated database equals the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from cli.migrate import alembic_config
from migrations.metadata import include_name, target_metadata
from service.settings import Settings
from tests.harness import scratch_database

ROOT = Path(__file__).resolve().parents[2]


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": include_name}
    )
    return list(compare_metadata(context, target_metadata))


async def test_migrations_match_the_models(settings: Settings) -> None:
    engine = create_async_engine(settings.database_url)
    async with engine.connect() as connection:
        diff = await connection.run_sync(_diff)
    await engine.dispose()
    assert diff == []


def _alembic(settings: Settings, *args: str) -> str:
    """The standard Alembic CLI from the repository's root (alembic.ini), configured only by
    TRACEGATE_DATABASE_URL as the issue asks."""
    env = {**os.environ, "TRACEGATE_DATABASE_URL": settings.database_url}
    result = subprocess.run([str(Path(sys.executable).with_name("alembic")), *args], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


async def _tables(settings: Settings) -> set[str]:
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        rows = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row[0] for row in rows}


def _head() -> str:
    """The newest revision of migrations/versions (one head: the history never branches)."""
    head = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://unused")).get_current_head()
    assert head is not None
    return head


async def test_alembic_cli_upgrades_downgrades_and_upgrades_again(settings: Settings) -> None:
    async with scratch_database(settings) as own:
        _alembic(own, "upgrade", "head")
        migrated = await _tables(own)
        assert {"settlements", "code_events_y2025m01", "alembic_version"} <= migrated
        assert f"{_head()} (head)" in _alembic(own, "current")
        _alembic(own, "downgrade", "base")
        assert await _tables(own) == {"alembic_version"}
        _alembic(own, "upgrade", "head")
        assert await _tables(own) == migrated
