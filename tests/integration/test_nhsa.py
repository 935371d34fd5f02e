"""POST /v1/nhsa (CONTRACT §8) against the embedded stack: realistic vendor messages for every
infno, every refusal in words, replays, returns of part of a 3505A sale, split rows with and
without a catalogue entry, the sales query, and messages that cannot be taken."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import msgspec
import orjson
import pytest

from service.records.schemas import NamedRecordedLine, decode_lines
from service.settings import Settings
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
    assert len(reply["refmsg_time"]) == 17
    assert reply["inf_refmsgid"].startswith("TG")
    other = await f.register(api, admin_headers)
    again = await f.nhsa(api, admin_headers, f.nhsa_sale(other, f.nhsa_row([code])))
    result = again["output"]["result"]
    assert result["retRslt"] == "0"
    assert _reasons(again["output"]["decision"]) == [["DUPLICATE_PAYMENT"]]
    # which institution paid first (its name, as registered) and when, in local time
    assert "追溯码已结算（重复结算） [DUPLICATE_PAYMENT] " + code in result["msgRslt"]
    first = f"首次结算：{shop}（test {shop}） 于 2025-07-01 10:15:00（北京时间）"
    assert first in result["msgRslt"]
    assert decision["settlement_id"] in result["msgRslt"]


async def test_the_same_message_twice_is_a_replay_and_another_body_for_its_bchno_is_not_taken(
    api: httpx.AsyncClient, shop: str, pos: Headers
) -> None:
    row = f.nhsa_row([f.cn20()])
    first = await f.nhsa(api, pos, f.nhsa_sale(shop, row))
    again = await f.nhsa(api, pos, f.nhsa_sale(shop, row))  # a new msgid, the same sale
    assert again["output"]["decision"] == {**first["output"]["decision"], "replayed": True}
    assert again["output"]["result"]["msgRslt"] == "重复报文，返回首次结果：结算成功"
    assert again["inf_refmsgid"] != first["inf_refmsgid"]
    changed = await f.nhsa(api, pos, f.nhsa_sale(shop, {**row, "drugtracinfo": [
        {"drug_trac_codg": f.cn20()}]}))
    assert changed["infcode"] == -1
    assert changed["err_msg"].startswith("[SETTLEMENT_CONFLICT] settlement 3505:")
    assert changed["output"] == {}


async def test_a_3505a_batch_is_one_settlement_per_receipt_and_every_refusal_is_in_words(
    api: httpx.AsyncClient, shop: str, pos: Headers
) -> None:
    good, twice, short = f.cn20(), f.cn20(), f.cn20()
    receipt, other = f.batch_no(), f.batch_no()
    rows = [
        f.nhsa_row([good], docno=receipt),
        f.nhsa_row([], docno=receipt),  # 无码: no code at all
        f.nhsa_row(["81234567"], docno=receipt),  # not a trace code
        f.nhsa_row([short], count="2.0000", docno=receipt),  # two packs, one code
        f.nhsa_row([twice, twice], docno=receipt),  # the same pack scanned twice
        {**f.nhsa_row([], docno=other), "no_code_reason": "herbal_pieces"},  # 中药饮片
    ]
    reply = await f.nhsa(api, pos, f.nhsa_sales(shop, rows))
    first, second = reply["output"]["decisions"]
    assert first["settlement_id"] == f"3505A:{shop}:{receipt}"
    assert [line["line_no"] for line in first["lines"]] == [1, 2, 3, 4, 5]
    assert _reasons(first) == [[], ["MISSING_TRACE_CODE"], ["INVALID_TRACE_CODE"],
                               ["QUANTITY_MISMATCH"], ["DUPLICATE_IN_SETTLEMENT"]]
    assert first["decision"] == "partial"
    assert (second["decision"], _reasons(second)) == ("pay", [["EXEMPT"]])
    result = reply["output"]["result"]
    assert result["retRslt"] == "0"
    text = result["msgRslt"]
    assert text.startswith("拒付 4 行：")
    row = f"单据 {receipt} 第2行（XC09AAL012A001010100543）"
    assert f"{row}：缺少追溯码 [MISSING_TRACE_CODE]" in text
    assert "追溯码无效 [INVALID_TRACE_CODE] 81234567" in text
    assert "追溯码数量与销售数量不符 [QUANTITY_MISMATCH]（1 个追溯码，销售 2 盒）" in text
    assert f"同一单据内追溯码重复 [DUPLICATE_IN_SETTLEMENT] {twice}" in text
    assert "EXEMPT" not in text  # an accepted exemption is no refusal


async def test_before_go_live_findings_are_paid_with_a_notice(
    api: httpx.AsyncClient, admin_headers: Headers
) -> None:
    clinic = await f.register(api, admin_headers, "primary", "2026-01-01")
    reply = await f.nhsa(api, admin_headers, f.nhsa_sale(clinic, f.nhsa_row([])))
    decision = reply["output"]["decision"]
    assert (decision["decision"], decision["enforced"]) == ("pay", False)
    assert reply["output"]["result"]["retRslt"] == "1"
    assert reply["output"]["result"]["msgRslt"].startswith(
        "结算成功；已支付，提示：批次 ")
    assert "缺少追溯码 [MISSING_TRACE_CODE]" in reply["output"]["result"]["msgRslt"]


async def _catalogue(api: httpx.AsyncClient, admin: Headers, pack_size: int) -> str:
    drug = f"XN02BEA{f.batch_no()}"[:23]
    response = await api.put(f"/v1/drugs/{drug}", json={"name": "布洛芬缓释胶囊 0.3g*24粒",
                                                       "pack_size": pack_size}, headers=admin)
    assert response.status_code == 200, response.text
    return drug


async def test_split_rows_take_their_pack_size_from_the_catalogue(
    api: httpx.AsyncClient, admin_headers: Headers, shop: str, pos: Headers
) -> None:
    drug, pack = await _catalogue(api, admin_headers, 10), f.cn20()

    async def sell(units: str, institution: str = shop, headers: Headers = pos) -> Any:
        row = f.nhsa_row([pack], count=units, split=True, drug=drug)
        return (await f.nhsa(api, headers, f.nhsa_sale(institution, row)))["output"]

    assert (await sell("4.0000"))["decision"]["decision"] == "pay"
    assert (await sell("6"))["decision"]["decision"] == "pay"  # 10 of 10 units sold
    over = await sell("1.0000")
    assert _reasons(over["decision"]) == [["SPLIT_OVERUSE"]]
    assert "拆零销售超出包装剩余数量 [SPLIT_OVERUSE]" in over["result"]["msgRslt"]
    assert "该盒剩余 0 个单位" in over["result"]["msgRslt"]
    elsewhere = await f.register(api, admin_headers)
    cross = await sell("1.0000", elsewhere, admin_headers)
    assert _reasons(cross["decision"]) == [["SPLIT_CROSS_INSTITUTION"]]
    assert f"首次结算：{shop}（test {shop}）" in cross["result"]["msgRslt"]


async def test_a_split_row_without_a_catalogue_entry_is_a_quantity_mismatch_until_there_is_one(
    api: httpx.AsyncClient, admin_headers: Headers, shop: str, pos: Headers
) -> None:
    drug, pack = f"XZ{f.batch_no()}", f.cn20()
    row = f.nhsa_row([pack], count="3.0000", split=True, drug=drug)
    refused = (await f.nhsa(api, pos, f.nhsa_sale(shop, row)))["output"]
    assert _reasons(refused["decision"]) == [["QUANTITY_MISMATCH"]]
    assert f"药品目录中没有 {drug} 的拆零包装数量" in refused["result"]["msgRslt"]
    put = await api.put(f"/v1/drugs/{drug}", json={"name": "阿莫西林", "pack_size": 24},
                        headers=admin_headers)
    assert put.status_code == 200
    # the same bchno again would conflict (a new attempt needs a new id, §3); a new one pays
    retry = (await f.nhsa(api, pos, f.nhsa_sale(shop, {**row, "fixmedins_bchno": f.batch_no()})))
    assert retry["output"]["decision"]["decision"] == "pay"


async def test_vendor_spellings_are_taken_and_the_patient_is_only_a_keyed_hash(
    api: httpx.AsyncClient, shop: str, pos: Headers, settings: Any
) -> None:
    code = f.cn20()
    row = {**f.nhsa_row([], psn_no="  33010019800101001X "), "sel_retn_cnt": 1,
           "fixmedins_bchno": 20250701123456, "sel_retn_time": "2025-07-01T10:15:00.000",
           "drugtracinfo": [{"drug_trac_codg": f" {code}\t\r\n", "trac_type": "1"}, {}],
           "厂家": "某某制药有限公司"}
    reply = await f.nhsa(api, pos, f.nhsa_sale(shop, row))
    assert reply["infcode"] == 0, reply["err_msg"]
    decision = reply["output"]["decision"]
    assert (decision["settlement_id"], decision["decision"]) == (
        f"3505:{shop}:20250701123456", "pay")
    rows = await eventually(lambda: f.record_rows(
        settings.asyncpg_dsn, "SELECT patient_ref, settled_at FROM settlements "
        "WHERE settlement_id = $1", decision["settlement_id"]), bool)
    assert rows[0]["patient_ref"] not in (None, "33010019800101001X")
    assert len(rows[0]["patient_ref"]) == 32
    assert rows[0]["settled_at"].isoformat() == "2025-07-01T02:15:00+00:00"


async def _verify(api: httpx.AsyncClient, headers: Headers, shop: str, codes: list[str]) -> Any:
    body = {"institution_id": shop, "trace_codes": codes}
    response = await api.post("/v1/codes/verify", json=body, headers=headers)
    return [result["status"] for result in response.json()["results"]]


RETURNED_AT = "2025-08-05 09:00:00"  # after every sale of these tests


def _return(
    shop: str, codes: list[str], *, docno: str = "", bchno: str | None = None,
    at: str = RETURNED_AT,
) -> Any:
    row = f.nhsa_row(codes, docno=docno, bchno=bchno, sold_at=at)
    return f.nhsa_message("3506", shop, {"selinfo": row})


async def test_a_3506_returns_part_of_a_3505a_sale_line_by_line(
    api: httpx.AsyncClient, shop: str, pos: Headers
) -> None:
    a, b1, b2, c = f.cn20(), f.cn20(), f.cn20(), f.cn20()
    receipt = f.batch_no()
    rows = [f.nhsa_row([a], docno=receipt), f.nhsa_row([b1, b2], docno=receipt),
            f.nhsa_row([c], docno=receipt)]
    sold = await f.nhsa(api, pos, f.nhsa_sales(shop, rows))
    assert sold["output"]["decisions"][0]["decision"] == "pay"
    message = _return(shop, [b2, b1], docno=receipt)
    reply = await f.nhsa(api, pos, message)
    reversal = reply["output"]["reversal"]
    bchno = message["input"]["selinfo"]["fixmedins_bchno"]
    assert reversal == {"settlement_id": f"3505A:{shop}:{receipt}",
                        "reversal_id": f"3506:{shop}:{bchno}", "released": [b1, b2],
                        "replayed": False}
    assert reply["output"]["result"] == {"retRslt": "1", "msgRslt": "退货成功，释放 2 个追溯码"}
    assert await _verify(api, pos, shop, [a, b1, b2, c]) == ["paid", "unpaid", "unpaid", "paid"]
    again = await f.nhsa(api, pos, message)
    assert again["output"]["reversal"] == {**reversal, "replayed": True}
    rest = await f.nhsa(api, pos, _return(shop, [a, c], docno=receipt))
    assert rest["output"]["reversal"]["released"] == [a, c]
    assert await _verify(api, pos, shop, [a, c]) == ["unpaid", "unpaid"]


async def test_a_return_must_name_a_recorded_sale_and_whole_lines_of_it(
    api: httpx.AsyncClient, shop: str, pos: Headers
) -> None:
    b1, b2, stranger = f.cn20(), f.cn20(), f.cn20()
    receipt = f.batch_no()
    await f.nhsa(api, pos, f.nhsa_sales(shop, [f.nhsa_row([b1, b2], docno=receipt)]))
    partial = await f.nhsa(api, pos, _return(shop, [b1], docno=receipt))
    assert partial["output"]["reversal"] is None
    assert partial["output"]["result"]["retRslt"] == "0"
    assert f"[PARTIAL_LINE_RETURN] {b2}" in partial["output"]["result"]["msgRslt"]
    unknown = await f.nhsa(api, pos, _return(shop, [b1, b2, stranger], docno=receipt))
    assert f"追溯码不在原销售中 [CODE_NOT_IN_SALE] {stranger}" in unknown["output"]["result"][
        "msgRslt"]
    nothing = await f.nhsa(api, pos, _return(shop, [b1], docno=f.batch_no()))
    assert "[SETTLEMENT_NOT_FOUND]" in nothing["output"]["result"]["msgRslt"]
    assert await _verify(api, pos, shop, [b1, b2]) == ["paid", "paid"]


async def test_a_3506_with_the_bchno_of_a_3505_sale_reverses_it(
    api: httpx.AsyncClient, shop: str, pos: Headers
) -> None:
    code = f.cn20()
    row = f.nhsa_row([code])
    await f.nhsa(api, pos, f.nhsa_sale(shop, row))
    reply = await f.nhsa(api, pos, _return(shop, [code], bchno=row["fixmedins_bchno"]))
    assert reply["output"]["reversal"]["settlement_id"] == f"3505:{shop}:{row['fixmedins_bchno']}"
    assert reply["output"]["reversal"]["released"] == [code]


async def test_a_return_is_recorded_at_its_own_time_which_cannot_precede_its_sale(
    api: httpx.AsyncClient, settings: Settings, shop: str, pos: Headers
) -> None:
    code = f.cn20()
    row = f.nhsa_row([code], sold_at="2025-08-02 09:30:00")
    await f.nhsa(api, pos, f.nhsa_sale(shop, row))
    sid, bchno = f"3505:{shop}:{row['fixmedins_bchno']}", row["fixmedins_bchno"]
    await eventually(lambda: f.record_rows(
        settings.asyncpg_dsn, "SELECT 1 FROM settlements WHERE settlement_id = $1", sid), bool)
    early = await f.nhsa(api, pos, _return(shop, [code], bchno=bchno, at="2025-08-02 09:29:59"))
    assert early["output"] == {"reversal": None, "result": {"retRslt": "0", "msgRslt": (
        "退货未受理：退货时间 2025-08-02 09:29:59 早于原销售时间 2025-08-02 09:30:00（北京时间） "
        "[RETURN_BEFORE_SALE]")}}
    taken = await f.nhsa(api, pos, _return(shop, [code], bchno=bchno, at="2025-08-02 18:00:00"))
    assert taken["output"]["reversal"]["released"] == [code]
    rows = await eventually(lambda: f.record_rows(
        settings.asyncpg_dsn, "SELECT reversed_at FROM reversals WHERE settlement_id = $1", sid),
        bool)
    assert [r["reversed_at"].isoformat() for r in rows] == ["2025-08-02T10:00:00+00:00"]


async def test_a_return_dated_before_its_sale_is_refused_before_the_record_has_the_sale(
    api: httpx.AsyncClient, shop: str, pos: Headers
) -> None:
    """At once after the 3505: the gate's recent answer knows the sale's time too."""
    code = f.cn20()
    row = f.nhsa_row([code], sold_at="2025-08-02 09:30:00")
    await f.nhsa(api, pos, f.nhsa_sale(shop, row))
    early = await f.nhsa(api, pos, _return(shop, [code], bchno=row["fixmedins_bchno"],
                                          at="2025-08-02 09:29:59"))
    assert early["output"]["reversal"] is None
    assert early["output"]["result"]["msgRslt"].endswith("[RETURN_BEFORE_SALE]")


def _query(institution: str, **fields: Any) -> dict[str, Any]:
    return f.nhsa_message("3513", institution, {key: value for key, value in fields.items()})


async def test_3513_lists_recorded_sales_each_followed_by_its_returns(
    api: httpx.AsyncClient, admin_headers: Headers, shop: str, pos: Headers
) -> None:
    drug, a, b, pack = await _catalogue(api, admin_headers, 20), f.cn20(), f.cn20(), f.cn20()
    receipt = f.batch_no()
    rows = [f.nhsa_row([a], docno=receipt, sold_at="2025-08-02 09:30:00"),
            f.nhsa_row([pack], count="5.0000", split=True, drug=drug, docno=receipt,
                       sold_at="2025-08-02 09:30:00")]
    await f.nhsa(api, pos, f.nhsa_sales(shop, rows))
    await f.nhsa(api, pos, f.nhsa_sale(shop, f.nhsa_row([b], sold_at="2025-08-03 12:00:00")))
    await f.nhsa(api, pos, _return(shop, [a], docno=receipt))
    sid = f"3505A:{shop}:{receipt}"
    query = _query(shop, begndate="2025-08-01", enddate="2025-08-02")

    async def listed() -> Any:
        return (await f.nhsa(api, pos, query))["output"]["data"]

    data = await eventually(listed, lambda rows: len(rows) == 3)
    assert data == [
        {"drug_trac_codg": a, "fixmedins_code": shop, "settlement_id": sid, "type": "sale",
         "trdn_flag": "0", "sel_retn_cnt": 1, "sel_retn_time": "2025-08-02 09:30:00"},
        {"drug_trac_codg": a, "fixmedins_code": shop, "settlement_id": sid, "type": "return",
         "trdn_flag": "0", "sel_retn_cnt": 1, "sel_retn_time": RETURNED_AT},
        {"drug_trac_codg": pack, "fixmedins_code": shop, "settlement_id": sid, "type": "sale",
         "trdn_flag": "1", "sel_retn_cnt": 5, "sel_retn_time": "2025-08-02 09:30:00"},
    ]
    regulator = await f.key_for(api, admin_headers, "regulator")
    by_code = (await f.nhsa(api, regulator, _query("REGULATOR001", drug_trac_codg=f" {a}\r\n")))
    assert by_code["output"]["data"] == data[:2]  # the code's history, any institution
    paged = await f.nhsa(api, pos, _query(shop, begndate="2025-08-01 00:00:00",
                                          enddate="2025-08-03 23:59:59", page_num="2",
                                          page_size="2"))
    assert [row["drug_trac_codg"] for row in paged["output"]["data"]] == [pack, b]


async def test_sales_recorded_with_lines_in_the_object_form_are_listed_and_returned_alike(
    api: httpx.AsyncClient, admin_headers: Headers, shop: str, pos: Headers, settings: Settings
) -> None:
    """Settlements recorded before lines were kept as arrays hold them as objects
    (records.schemas.NamedRecordedLine): the sales query reads them alike, and a consumer
    recording a return of one reads its lines from the record."""
    drug, a, pack = await _catalogue(api, admin_headers, 20), f.cn20(), f.cn20()
    receipt = f.batch_no()
    rows = [f.nhsa_row([a], docno=receipt, sold_at="2025-08-02 09:30:00"),
            f.nhsa_row([pack], count="5.0000", split=True, drug=drug, docno=receipt,
                       sold_at="2025-08-02 09:30:00")]
    await f.nhsa(api, pos, f.nhsa_sales(shop, rows))
    sid, query = f"3505A:{shop}:{receipt}", _query(shop, begndate="2025-08-01",
                                                    enddate="2025-08-02")

    async def listed() -> Any:
        return (await f.nhsa(api, pos, query))["output"]["data"]

    as_arrays = await eventually(listed, lambda rows: len(rows) == 2)
    dsn = settings.asyncpg_dsn
    [[stored]] = await f.record_rows(dsn, "SELECT lines::text FROM settlements "
                                          "WHERE settlement_id = $1", sid)
    assert stored.startswith("[[")
    named = [NamedRecordedLine(*msgspec.structs.astuple(line))
             for line in decode_lines(stored.encode())]
    await f.record_rows(dsn, "UPDATE settlements SET lines = $1::json WHERE settlement_id = $2",
                        msgspec.json.encode(named).decode(), sid)
    assert await listed() == as_arrays
    returned = await f.nhsa(api, pos, _return(shop, [a], docno=receipt))
    assert returned["output"]["reversal"]["released"] == [a]
    data = await eventually(listed, lambda rows: len(rows) == 3)
    assert [(row["drug_trac_codg"], row["type"]) for row in data] == [
        (a, "sale"), (a, "return"), (pack, "sale")]


async def test_3513_is_held_to_the_pos_institution_and_bounded(
    api: httpx.AsyncClient, admin_headers: Headers, shop: str, pos: Headers
) -> None:
    other = await f.register(api, admin_headers)
    forbidden = await api.post("/v1/nhsa", headers=pos, json=_query(
        shop, fixmedins_code=other, begndate="2025-08-01", enddate="2025-08-02"))
    assert forbidden.status_code == 403
    unbounded = await f.nhsa(api, pos, _query(shop))
    assert unbounded["infcode"] == -1
    assert "begndate and input.enddate are required" in unbounded["err_msg"]
    regulator = await f.key_for(api, admin_headers, "regulator")
    nothing = await f.nhsa(api, regulator, _query("REGULATOR001", begndate="2025-08-01",
                                                  enddate="2025-08-02"))
    assert nothing["err_msg"] == "input needs drug_trac_codg or fixmedins_code"
    long = await f.nhsa(api, pos, _query(shop, begndate="2025-01-01", enddate="2025-03-01"))
    assert "at most 31 days" in long["err_msg"]


def _without(row: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != name}


CANNOT_BE_TAKEN = [
    ("unknown infno", lambda s: {**f.nhsa_sale(s, f.nhsa_row([f.cn20()])), "infno": "9999"},
     "infno '9999' is not one this service takes: 3505, 3505A, 3506, 3513"),
    ("missing field", lambda s: f.nhsa_sale(s, _without(f.nhsa_row([f.cn20()]),
                                                        "sel_retn_time")),
     "input.selinfo.sel_retn_time is required"),
    ("empty required field", lambda s: f.nhsa_sale(s, {**f.nhsa_row([]), "med_list_codg": " "}),
     "input.selinfo.med_list_codg is required"),
    ("codes not a list", lambda s: f.nhsa_sale(s, {**f.nhsa_row([]), "drugtracinfo": {
        "drug_trac_codg": f.cn20()}}), "input.selinfo.drugtracinfo must be a list"),
    ("code a number", lambda s: f.nhsa_sale(s, {**f.nhsa_row([]), "drugtracinfo": [
        {"drug_trac_codg": 81234560000000000011}]}),
     "input.selinfo.drugtracinfo[0].drug_trac_codg must be text (a trace code), not a number"),
    ("time not a time", lambda s: f.nhsa_sale(s, {**f.nhsa_row([]), "sel_retn_time": "昨天"}),
     "input.selinfo.sel_retn_time '昨天' is not a time"),
    ("impossible date", lambda s: f.nhsa_sale(s, {**f.nhsa_row([]),
                                                  "sel_retn_time": "2025-02-30 10:00:00"}),
     "input.selinfo.sel_retn_time '2025-02-30 10:00:00' is not a time"),
    ("envelope time", lambda s: {**f.nhsa_sale(s, f.nhsa_row([])), "inf_time": ""},
     "message.inf_time is required"),
    ("half a pack", lambda s: f.nhsa_sale(s, f.nhsa_row([f.cn20()], count="1.5000")),
     "input.selinfo.sel_retn_cnt 1.5000 must be a whole number of packs"),
    ("count not a number", lambda s: f.nhsa_sale(s, f.nhsa_row([f.cn20()], count="两盒")),
     "input.selinfo.sel_retn_cnt '两盒' is not a number"),
    ("split flag", lambda s: f.nhsa_sale(s, {**f.nhsa_row([]), "trdn_flag": "Y"}),
     "input.selinfo.trdn_flag must be one of 0, 1, not 'Y'"),
    ("no rows", lambda s: f.nhsa_sales(s, []), "input.selinfoDetail is required"),
    ("a row not an object", lambda s: f.nhsa_sales(s, ["row"]),
     "input.selinfoDetail[0] must be an object, not text"),
    ("two patients", lambda s: f.nhsa_sales(s, [f.nhsa_row([], docno="R1", psn_no="P1"),
                                                f.nhsa_row([], docno="R1", psn_no="P2")]),
     "the rows of rtal_docno R1 name 2 different psn_no"),
    ("bchno not ASCII", lambda s: f.nhsa_sale(s, f.nhsa_row([], bchno="批次一")),
     "input.selinfo.fixmedins_bchno makes the id '3505:"),
    ("no input", lambda s: _without(f.nhsa_sale(s, f.nhsa_row([])), "input"),
     "message.input is required"),
    ("a bad code to query", lambda s: _query(s, drug_trac_codg="12345678901234567890"),
     "input.drug_trac_codg '12345678901234567890' is not a trace code"),
]


@pytest.mark.parametrize(("label", "build", "says"), CANNOT_BE_TAKEN,
                         ids=[case[0] for case in CANNOT_BE_TAKEN])
async def test_a_message_that_cannot_be_taken_is_infcode_minus_one_in_words(
    api: httpx.AsyncClient, shop: str, pos: Headers, label: str, build: Any, says: str
) -> None:
    reply = await f.nhsa(api, pos, build(shop))
    assert (reply["infcode"], reply["output"]) == (-1, {}), reply
    assert says in reply["err_msg"], reply["err_msg"]


async def test_a_body_that_is_not_a_message_is_minus_one_too(
    api: httpx.AsyncClient, pos: Headers
) -> None:
    for body in (b"{not json", b"[1, 2]", "\u4e2d".encode("gbk")):
        response = await api.post("/v1/nhsa", content=body, headers=pos)
        assert response.status_code == 200
        assert response.json()["infcode"] == -1
        assert response.json()["err_msg"]


async def test_keys_are_checked_as_at_the_gate(
    api: httpx.AsyncClient, admin_headers: Headers, shop: str, pos: Headers
) -> None:
    sale = f.nhsa_sale(shop, f.nhsa_row([f.cn20()]))
    assert (await api.post("/v1/nhsa", json=sale)).status_code == 401
    other = await f.key_for(api, admin_headers, "pos", await f.register(api, admin_headers))
    regulator = await f.key_for(api, admin_headers, "regulator")
    ops = await f.key_for(api, admin_headers, "ops")
    for headers in (other, regulator, ops):
        response = await api.post("/v1/nhsa", json=sale, headers=headers)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "FORBIDDEN"
    unknown = await f.nhsa(api, admin_headers, f.nhsa_sale("P99999999999", f.nhsa_row([])))
    assert unknown["err_msg"] == "[UNKNOWN_INSTITUTION] institution P99999999999 is not registered"


async def test_the_examples_of_the_docs(
    api: httpx.AsyncClient, admin_headers: Headers, shop: str, pos: Headers
) -> None:
    """The exchanges docs/NHSA.md shows, as a vendor would send them. With
    TRACEGATE_NHSA_EXAMPLES=FILE they are also written there (JSON) to refresh the page."""
    exchanges: list[dict[str, Any]] = []

    async def send(title: str, headers: Headers, message: dict[str, Any]) -> Any:
        reply = await f.nhsa(api, headers, message)
        exchanges.append({"title": title, "request": message, "reply": reply})
        return reply

    drug, first, second, pack = await _catalogue(api, admin_headers, 24), f.cn20(), f.cn20(), \
        f.cn20()
    sale = f.nhsa_row([first, second], count="2.0000", sold_at="2025-08-02 09:30:00",
                      psn_no="11000019800101001X")
    assert (await send("3505", pos, f.nhsa_sale(shop, sale)))["output"]["result"][
        "retRslt"] == "1"
    other = await f.register(api, admin_headers)
    repeat = f.nhsa_row([first], sold_at="2025-08-02 15:00:00")
    refused = await send("3505 repeat", admin_headers, f.nhsa_sale(other, repeat))
    assert refused["output"]["result"]["retRslt"] == "0"
    receipt, third = f.batch_no(), f.cn20()
    rows = [f.nhsa_row([third], docno=receipt, sold_at="2025-08-02 10:00:00"),
            f.nhsa_row([pack], count="6.0000", split=True, drug=drug, docno=receipt,
                       sold_at="2025-08-02 10:00:00"),
            f.nhsa_row([], docno=receipt, sold_at="2025-08-02 10:00:00")]
    batch = await send("3505A", pos, f.nhsa_sales(shop, rows))
    assert batch["output"]["decisions"][0]["decision"] == "partial"
    returned = await send("3506", pos, _return(shop, [pack], docno=receipt))
    assert returned["output"]["reversal"]["released"] == [pack]
    query = _query(shop, begndate="2025-08-02", enddate="2025-08-02")
    await eventually(lambda: f.nhsa(api, pos, query),
                     lambda r: len(r["output"]["data"]) == 5)  # 2 + 2 sales, 1 return
    assert len((await send("3513", pos, query))["output"]["data"]) == 5
    bad = f.nhsa_sale(shop, {**f.nhsa_row([f.cn20()]), "sel_retn_time": "2025-08-02"})
    assert (await send("infcode -1", pos, bad))["infcode"] == -1
    _keep_examples(exchanges)


def _keep_examples(exchanges: list[dict[str, Any]]) -> None:
    target = os.environ.get("TRACEGATE_NHSA_EXAMPLES")
    if target:
        Path(target).write_bytes(orjson.dumps(exchanges, option=orjson.OPT_INDENT_2))


async def test_a_receipt_the_gate_will_not_take_is_listed_beside_the_decided_ones(
    api: httpx.AsyncClient, shop: str, pos: Headers
) -> None:
    taken, fresh = f.batch_no(), f.batch_no()
    await f.nhsa(api, pos, f.nhsa_sales(shop, [f.nhsa_row([f.cn20()], docno=taken)]))
    rows = [f.nhsa_row([f.cn20()], docno=taken), f.nhsa_row([f.cn20()], docno=fresh)]
    reply = await f.nhsa(api, pos, f.nhsa_sales(shop, rows))  # `taken` with another body
    assert reply["infcode"] == 0
    assert [d["settlement_id"] for d in reply["output"]["decisions"]] == [
        f"3505A:{shop}:{fresh}"]
    result = reply["output"]["result"]
    assert result["retRslt"] == "0"
    assert result["msgRslt"].startswith(f"未受理 1 张单据：3505A:{shop}:{taken}：settlement ")
    assert "[SETTLEMENT_CONFLICT]" in result["msgRslt"]
