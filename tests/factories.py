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

from service.settlements.events import Incoming

_counter = itertools.count(1)
_offsets = itertools.count(1)


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


def stream_record(topic: str, body: dict[str, Any], partition: int = 0) -> Incoming:
    """`body` as the insurer's platform streams it (a settlement unless it names its type), as
    a consumer receives it from `topic` (for tests that hand batches to the stream path
    themselves: service.settlements.stream.process)."""
    sid = body["settlement_id"]
    value = orjson.dumps({"type": "settlement", "source": "stream", **body})
    return Incoming(topic, partition, next(_offsets), int(time.time() * 1000), sid.encode(),
                    value)


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


async def topic_records(settings: Any, topic: str, key: bytes) -> list[Incoming]:
    """The records of `topic` with `key`, read from the start to the topic's real end (on
    Tansu too: see tests/faults/stream.last_offsets)."""
    from tests.faults.stream import read_topic

    return [Incoming(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value or b"")
            for r in await read_topic(settings.kafka_bootstrap, topic) if r.key == key]


# --- NHSA messages (CONTRACT §8), as a vendor's POS or HIS sends them ----------------------


def nhsa_row(
    codes: list[str], *, count: str | None = None, split: bool = False,
    drug: str = "XC09AAL012A001010100543", bchno: str | None = None, docno: str = "",
    sold_at: str = "2025-07-01 10:15:00", psn_no: str = "",
) -> dict[str, Any]:
    """A `selinfo` row with what vendors really send: counts as text with four decimals,
    empty strings for what they lack, Chinese names, codes as scanned (CR/LF after them),
    and fields this service does not read."""
    return {
        "med_list_codg": drug, "fixmedins_hilist_id": "YP0001234",
        "fixmedins_hilist_name": "缬沙坦胶囊 80mg*7粒", "fixmedins_bchno": bchno or batch_no(),
        "prsc_dr_name": "王医生", "phar_name": "李药师", "phar_prac_cert_no": "",
        "setl_id": "", "mdtrt_sn": "", "psn_no": psn_no, "psn_name": "", "certno": "",
        "manu_lotnum": "L250101", "manu_date": "2025-01-01", "expy_end": "2027-01-01",
        "rx_flag": "1", "trdn_flag": "1" if split else "0", "rtal_docno": docno or batch_no(),
        "stoout_no": "", "sel_retn_cnt": count or f"{max(len(codes), 1)}.0000",
        "sel_retn_time": sold_at, "sel_retn_opter_name": "张三", "memo": "",
        "drugtracinfo": [{"drug_trac_codg": f"{code}\r\n"} for code in codes],
    }


def batch_no() -> str:
    return f"B{secrets.token_hex(6).upper()}{next(_counter)}"


def nhsa_message(infno: str, institution: str, input_: dict[str, Any]) -> dict[str, Any]:
    return {
        "infno": infno, "msgid": f"{institution}{time.strftime('%Y%m%d%H%M%S')}{batch_no()}",
        "mdtrtarea_admvs": "110105", "insuplc_admdvs": "", "recer_sys_code": "POS01",
        "dev_no": "", "dev_safe_info": "", "cainfo": "", "signtype": "", "infver": "V1.0",
        "opter_type": "1", "opter": "0001", "opter_name": "张三",
        "inf_time": "2025-07-01 10:15:01", "fixmedins_code": institution,
        "fixmedins_name": "北京测试大药房", "sign_no": "", "input": input_,
    }


def nhsa_sale(institution: str, row: dict[str, Any]) -> dict[str, Any]:
    return nhsa_message("3505", institution, {"selinfo": row})


def nhsa_sales(institution: str, rows: list[Any]) -> dict[str, Any]:
    """`rows` as sent: `selinfo` rows, or (to test refusals) anything else."""
    return nhsa_message("3505A", institution, {"selinfoDetail": rows})


async def nhsa(api: httpx.AsyncClient, headers: dict[str, str], message: dict[str, Any]) -> Any:
    """The reply envelope to `message`, which must be HTTP 200 (both infcodes are)."""
    response = await api.post("/v1/nhsa", json=message, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()
