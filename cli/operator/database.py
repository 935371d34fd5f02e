"""The operator commands that work on PostgreSQL directly: one transaction per command."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from cli.operator.environment import OperatorError
from service.kit.database import build_engine, build_sessionmaker
from service.kit.errors import AppError
from service.settings import Settings


@asynccontextmanager
async def unit_of_work(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits when the block ends and rolls back if it raises;
    a domain error or an unreachable server is said in words."""
    engine = build_engine(settings.database_url, pool_size=1)
    try:
        async with build_sessionmaker(engine)() as session, session.begin():
            yield session
    except AppError as exc:
        raise OperatorError(exc.message) from exc
    except OSError as exc:
        raise OperatorError(f"cannot reach PostgreSQL: {exc}") from exc
    finally:
        await engine.dispose()
