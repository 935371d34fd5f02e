from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from service.api.dependencies import ClientsDep
from service.api.responses import JSONResponse
from service.kit.kafka import kafka_reachable
from service.kit.metrics import CONTENT_TYPE
from service.kit.redis_client import redis_reachable
from service.settlements import presence

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(clients: ClientsDep) -> JSONResponse:
    """Ready only when Redis, PostgreSQL and Kafka all answer now (each checked live)."""
    checks = {
        "redis": "ok" if await redis_reachable(clients.redis) else "unreachable",
        "postgres": "ok" if await _postgres_reachable(clients) else "unreachable",
        "kafka": "ok" if await kafka_reachable(clients.producer) else "unreachable",
    }
    if clients.settings.ready_consumers:
        checks["consumers"] = await _consumers(clients)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def _consumers(clients: ClientsDep) -> str:
    """"ok" once the expected consumers hold partitions and every partition of the
    settlements topic has one, as they said in the last seconds (settlements/presence.py)."""
    try:
        assigned = await presence.assigned(clients.redis)
    except Exception:  # noqa: BLE001 - Redis away: reported by its own check
        return "unknown"
    partitions = clients.settings.settlements_partitions
    holding = sum(1 for held in assigned.values() if held)
    wanted = min(clients.settings.ready_consumers, partitions)
    covered = {p for held in assigned.values() for p in held} & set(range(partitions))
    missing = partitions - len(covered)
    if holding < wanted:
        return f"{holding} of {wanted} consumers hold partitions"
    return "ok" if not missing else f"{missing} of {partitions} partitions have no consumer"


async def _postgres_reachable(clients: ClientsDep) -> bool:
    try:
        async with clients.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
    return True


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(clients: ClientsDep) -> PlainTextResponse:
    """Prometheus text format; under `tracegate api`, the sum of every worker process."""
    return PlainTextResponse(clients.metrics.render(), media_type=CONTENT_TYPE)
