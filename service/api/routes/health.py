from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from service.api.dependencies import ClientsDep
from service.api.responses import JSONResponse
from service.kit.kafka import kafka_reachable
from service.kit.metrics import CONTENT_TYPE
from service.kit.redis_client import redis_reachable

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(clients: ClientsDep) -> JSONResponse:
    """Ready only when Redis, PostgreSQL and Kafka all answer now (each checked live)."""
    checks = {
        "redis": await redis_reachable(clients.redis),
        "postgres": await _postgres_reachable(clients),
        "kafka": await kafka_reachable(clients.producer),
    }
    ready = all(checks.values())
    body = {"ready": ready, "checks": {k: "ok" if v else "unreachable" for k, v in checks.items()}}
    return JSONResponse(body, status_code=200 if ready else 503)


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
