"""Builders for test data. Every id and code is fresh, so tests share the servers without
seeing each other's records."""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import orjson
from aiokafka.structs import ConsumerRecord

_counter = itertools.count(1)


def cn20() -> str:
    """A fresh national trace code: 8 + 19 digits."""
    return "8" + str(secrets.randbelow(10**19)).zfill(19)


def gs1_serial() -> str:
    """A fresh AI 21 serial for GTIN 06901234567892 (10 characters of the GS1 set)."""
    return settlement_id()[-10:].replace("-", "A").upper()


def institution_id(prefix: str = "T") -> str:
    return (prefix + secrets.token_hex(6).upper())[:12]


def settlement_id() -> str:
    return f"S-{secrets.token_hex(6)}-{next(_counter)}"


def line(
    line_no: int, codes: list[str], *, quantity: int | None = None, split: bool = False,
    pack_size: int | None = None, no_code_reason: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "line_no": line_no, "drug_code": "XC09AAL012A001010100543",
        "quantity": quantity if quantity is not None else max(len(codes), 1), "split": split,
        "trace_codes": codes,
    }
    if pack_size is not None:
        body["pack_size"] = pack_size
    if no_code_reason is not None:
        body["no_code_reason"] = no_code_reason
    return body


def settlement(
    institution: str, lines: list[dict[str, Any]], *, settled_at: str = "2025-07-01 10:00:00",
    patient_id: str | None = "psn-0001", sid: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "settlement_id": sid or settlement_id(), "institution_id": institution,
        "settled_at": settled_at, "lines": lines,
    }
    if patient_id is not None:
        body["patient_id"] = patient_id
    return body


async def record_rows(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows straight from the record (PostgreSQL), past every cache the API reads through."""
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def stream_record(
    topic: str, body: dict[str, Any], partition: int = 0
) -> ConsumerRecord[bytes, bytes]:
    """`body` as the insurer's platform streams it (a settlement unless it names its type), as
    a consumer receives it from `topic` (for tests that hand batches to a BatchProcessor
    themselves)."""
    sid = body["settlement_id"]
    value = orjson.dumps({"type": "settlement", "source": "stream", **body})
    return ConsumerRecord(topic, partition, 0, int(time.time() * 1000), 0, sid.encode(), value,
                          None, len(sid), len(value), [])


def stream_reversal(settlement: dict[str, Any]) -> dict[str, Any]:
    """A streamed reversal of every line of `settlement`."""
    sid = settlement["settlement_id"]
    return {"type": "reversal", "source": "stream", "settlement_id": sid,
            "reversal_id": f"R-{sid}"}


async def register(
    api: httpx.AsyncClient, admin: dict[str, str], kind: str = "retail_pharmacy",
    go_live_override: str | None = None, *, institution: str | None = None,
) -> str:
    iid = institution or institution_id()
    body = {"name": f"test {iid}", "kind": kind, "region": "110105",
            "go_live_override": go_live_override}
    response = await api.put(f"/v1/institutions/{iid}", json=body, headers=admin)
    assert response.status_code == 200, response.text
    return iid


async def key_for(
    api: httpx.AsyncClient, admin: dict[str, str], role: str, institution: str | None = None
) -> dict[str, str]:
    body: dict[str, Any] = {"role": role}
    if institution is not None:
        body["institution_id"] = institution
    response = await api.post("/v1/api-keys", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


async def replay_and_change(
    api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> tuple[httpx.Response, httpx.Response]:
    """`body` posted again as it is, then with another line: a replay, then a conflict."""
    again = await api.post("/v1/settlements", json=body, headers=headers)
    changed = {**body, "lines": [line(1, [cn20()])]}
    return again, await api.post("/v1/settlements", json=changed, headers=headers)


async def settle(api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    """The gate's answer to `body`, which must be 200."""
    response = await api.post("/v1/settlements", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def history(api: httpx.AsyncClient, headers: dict[str, str], code: str) -> Any:
    """A code's history, or None while the record has not seen it."""
    response = await api.get(f"/v1/codes/{quote(code, safe='')}", headers=headers)
    return response.json() if response.status_code == 200 else None
