"""What a regulator reads back (issue 17, item 8): a recorded settlement shows its reversals;
a code's history is in one order (event time, ties by record order) with each event's
`recorded_at`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.settings import DuplicatePolicy, Settings
from service.settlements import stream
from service.settlements.stream import StreamPorts
from tests import factories as f
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")

Headers = dict[str, str]


async def _recorded(api: httpx.AsyncClient, headers: Headers, sid: str, reversals: int) -> Any:
    async def read() -> Any:
        response = await api.get(f"/v1/settlements/{sid}", headers=headers)
        return response.json() if response.status_code == 200 else None

    return await eventually(read, lambda s: s is not None and len(s["reversals"]) >= reversals)


async def test_a_recorded_settlement_shows_its_reversals(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    pharmacy = await f.register(api, admin_headers)
    regulator = await f.key_for(api, admin_headers, "regulator")
    one, two, three = f.cn20(), f.cn20(), f.cn20()
    body = f.settlement(pharmacy, [f.line(1, [one]), f.line(2, [two, three])])
    await f.settle(api, admin_headers, body)
    sid = body["settlement_id"]
    assert (await _recorded(api, regulator, sid, 0))["reversals"] == []
    for reversal_id, line_nos in ((f"R1-{sid}", [2]), (f"R2-{sid}", None)):
        answer = await api.post(f"/v1/settlements/{sid}/reversal", headers=admin_headers,
                                json={"reversal_id": reversal_id, "line_nos": line_nos})
        assert answer.status_code == 200, answer.text
    recorded = await _recorded(api, regulator, sid, 2)
    assert recorded["decision"] == "pay"
    assert recorded["replayed"] is False
    shown = [(r["reversal_id"], r["line_nos"], sorted(r["released"]))
             for r in recorded["reversals"]]
    # The second reversal (every line) released only what was still paid: line 1.
    assert shown == [(f"R1-{sid}", [2], sorted([two, three])), (f"R2-{sid}", None, [one])]
    first, second = (r["reversed_at"] for r in recorded["reversals"])
    assert first <= second


async def test_history_ties_in_event_time_follow_the_record_and_show_recorded_at(
    api: httpx.AsyncClient, admin_headers: Headers, settings: Settings
) -> None:
    """Two payments of one code at the same settled_at, recorded in one transaction (one
    batch) under duplicate_policy=flag: the one holding the claim is first, whatever the
    settlement ids' order; a later reversal of the first comes after both."""
    institution, code = await f.register(api, admin_headers), f.cn20()
    first = f.settlement(institution, [f.line(1, [code])], sid=f"S-z-{f.settlement_id()}")
    repeat = f.settlement(institution, [f.line(1, [code])], sid=f"S-0-{f.settlement_id()}")
    topic = settings.topic_settlements
    flagging = settings.model_copy(update={"duplicate_policy": DuplicatePolicy.FLAG})
    async with StreamPorts.open(flagging) as ports:
        await stream.process([f.stream_record(topic, first), f.stream_record(topic, repeat)], ports)
        await stream.process([f.stream_record(topic, f.stream_reversal(first))], ports)
    history = await f.history(api, admin_headers, code)
    assert history is not None
    events = [(e["type"], e["settlement_id"], e.get("duplicate", False))
              for e in history["events"]]
    assert events == [("payment", first["settlement_id"], False),
                      ("payment", repeat["settlement_id"], True),
                      ("reversal", first["settlement_id"], False)]
    assert all(e["recorded_at"] for e in history["events"])
    assert history["events"][0]["recorded_at"] == history["events"][1]["recorded_at"]
    assert [e["at"] for e in history["events"]] == sorted(e["at"] for e in history["events"])
