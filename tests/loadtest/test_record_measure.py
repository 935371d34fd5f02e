"""The load test's measure of the record (loadtest/record.py): rows and bytes of plain and
partitioned tables alike, on the session's database after a settlement."""

from __future__ import annotations

from functools import partial

import httpx
import pytest

from loadtest.record import measure_record
from service.settings import Settings
from tests import factories as f
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")


async def test_plain_and_partitioned_tables_are_measured(
    api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Settings
) -> None:
    institution, code = await f.register(api, admin_headers), f.cn20()
    await f.settle(api, admin_headers, f.settlement(institution, [f.line(1, [code])]))
    assert await eventually(partial(f.history, api, admin_headers, code), bool)
    measured = await measure_record(settings.asyncpg_dsn, codes=1)
    tables = measured["tables"]
    assert tables["settlements"]["bytes"] > 0  # a plain table
    assert tables["code_events"]["bytes"] > 0  # partitioned by month
    assert tables["code_claims"]["bytes"] > 0  # partitioned by hash
    assert tables["settlements"]["rows"] >= 1
    assert measured["bytes_per_code"] == sum(t["bytes"] for t in tables.values())
