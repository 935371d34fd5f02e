"""POST /v1/nhsa (CONTRACT §8) against the embedded stack: realistic vendor messages for every
infno, every refusal in words, replays, returns of part of a 3505A sale, split rows with and
without a catalogue entry, the sales query, and messages that cannot be taken."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests import factories as f
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("consumer")

Headers = dict[str, str]


@pytest.fixture
async def shop(api: httpx.AsyncClient, admin_headers: Headers) -> str:
    return await f.register(api, admin_headers)


@pytest.fixture
async def pos(api: httpx.AsyncClient, admin_headers: Headers, shop: str) -> Headers:
    return await f.key_for(api, admin_headers, "pos", shop)


def _reasons(decision: dict[str, Any]) -> list[list[str]]:
    return [[reason["code"] for reason in line["reasons"]] for line in decision["lines"]]


async def test_a_3505_sale_is_paid_and_its_repeat_elsewhere_refused_in_words(
    api: httpx.AsyncClient, admin_headers: Headers, shop: str, pos: Headers
) -> None:
    code = f.cn20()
    row = f.nhsa_row([code], psn_no="33010019800101001X")
    reply = await f.nhsa(api, pos, f.nhsa_sale(shop, row))
    assert (reply["infcode"], reply["err_msg"]) == (0, None)
    decision = reply["output"]["decision"]
    assert decision["settlement_id"] == f"3505:{shop}:{row['fixmedins_bchno']}"
    assert (decision["decision"], decision["enforced"], decision["replayed"]) == (
        "pay", True, False)
    assert reply["output"]["result"] == {"retRslt": "1", "msgRslt": "结算成功"}
    assert len(reply["refmsg_time"]) == 17 and reply["inf_refmsgid"].startswith("TG")
    other = await f.register(api, admin_headers)
    again = await f.nhsa(api, admin_headers, f.nhsa_sale(other, f.nhsa_row([code])))
    result = again["output"]["result"]
    assert result["retRslt"] == "0"
    assert _reasons(again["output"]["decision"]) == [["DUPLICATE_PAYMENT"]]
    # which institution paid first (its name, as registered) and when, in local time
    assert "追溯码已结算（重复结算） [DUPLICATE_PAYMENT] " + code in result["msgRslt"]
    assert f"首次结算：{shop}（test {shop}） 于 2025-07-01 10:15:00（北京时间）" in result["msgRslt"]
    assert decision["settlement_id"] in result["msgRslt"]
