"""The NHSA mapping without servers: vendor spellings, grouping, the settlement each message
becomes, returns onto lines, the query's bounds, answers in words, the bulk upload's events."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from service.kit.clock import SHANGHAI
from service.nhsa import mapping, vendor, wording
from service.nhsa.schemas import MessageRefused
from service.nhsa.service import code_sales
from service.nhsa.upload import encode_line
from service.records.schemas import RecordedLine
from tests import factories as f

SHOP = "P11010500001"
A, B, C = "81234560000000000011", "81234560000000000028", "81234560000000000035"


@pytest.mark.parametrize("spelling", [
    "2025-07-01 10:15:00", "2025-07-01T10:15:00", "2025-07-01 10:15:00.000",
    "20250701101500", "2025-07-01T02:15:00Z", "2025-07-01T10:15:00+08:00",
    " 2025-07-01 10:15:00\r\n",
])
def test_every_spelling_of_a_sale_time_is_the_same_instant(spelling: str) -> None:
    moment = vendor.moment({"t": spelling}, "t", "row")
    assert moment == dt.datetime(2025, 7, 1, 10, 15, tzinfo=SHANGHAI)
    assert vendor.local_text(moment) == "2025-07-01 10:15:00"


@pytest.mark.parametrize("bad", ["2025-07-01", "10:15:00", "2025-13-01 00:00:00",
                                 "1999-12-31 23:59:59", "2025-07-01 10:15", "明天"])
def test_what_is_not_a_time_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(MessageRefused, match=r"^row\.t "):
        vendor.moment({"t": bad}, "t", "row")


@pytest.mark.parametrize(("sent", "read"), [("2.0000", 2), (2, 2), (2.0, 2), (" 3 ", 3),
                                             ("1.5", Decimal("1.5"))])
def test_numbers_as_vendors_write_them(sent: Any, read: Decimal) -> None:
    assert vendor.number({"n": sent}, "n", "row") == read


@pytest.mark.parametrize("bad", ["", None, "abc", "NaN", "Infinity", True, [1]])
def test_what_is_not_a_number_is_refused(bad: Any) -> None:
    with pytest.raises(MessageRefused, match=r"^row\.n "):
        vendor.number({"n": bad}, "n", "row")


def test_code_lists_absent_empty_or_with_empty_codes_carry_no_code() -> None:
    empty: tuple[Any, ...] = (None, "", [], [{}], [{"drug_trac_codg": ""}],
                              [{"drug_trac_codg": "  \r\n"}])
    for value in empty:
        assert vendor.code_list({"drugtracinfo": value}, "row") == []
    sent = [{"drug_trac_codg": f"{A}\r\n"}, B, {"drug_trac_codg": None}]
    assert vendor.code_list({"drugtracinfo": sent}, "row") == [f"{A}\r\n", B]


def test_texts_trim_and_empty_is_absent_and_numbers_are_their_digits() -> None:
    assert vendor.text({"x": "  甲  "}, "x", "row") == "甲"
    assert vendor.text({"x": ""}, "x", "row") is None
    assert vendor.text({"x": 20250701}, "x", "row") == "20250701"
    with pytest.raises(MessageRefused, match="row.x must be text, not a number"):
        vendor.text({"x": 1.5}, "x", "row")


def _envelope(message: dict[str, Any]) -> Any:
    return mapping.read_envelope(orjson.loads(orjson.dumps(message)))


def test_a_3505a_is_one_settlement_per_receipt_in_the_order_sent() -> None:
    rows = [f.nhsa_row([A], docno="R1", sold_at="2025-07-01 10:00:00"),
            f.nhsa_row([B], docno="R2"),
            f.nhsa_row([C], docno="R1", sold_at="2025-07-01 10:02:00", psn_no="P1")]
    groups = mapping.sale_groups(_envelope(f.nhsa_sales(SHOP, rows)))
    assert [g.settlement_id for g in groups] == [f"3505A:{SHOP}:R1", f"3505A:{SHOP}:R2"]
    sale = mapping.to_sale(SHOP, groups[0], {})
    assert sale.body["settled_at"] == "2025-07-01 10:02:00"  # the receipt's last row
    assert sale.body["patient_id"] == "P1"
    assert [line["trace_codes"] for line in sale.body["lines"]] == [[f"{A}\r\n"], [f"{C}\r\n"]]
    assert sale.label(2) == "单据 R1 第2行（XC09AAL012A001010100543）"


def test_a_receipt_with_an_unreadable_row_is_refused_whole_and_the_others_stand() -> None:
    rows = [f.nhsa_row([A], docno="R1"), {**f.nhsa_row([B], docno="R1"), "trdn_flag": "2"},
            f.nhsa_row([C], docno="R2"), {**f.nhsa_row([C]), "rtal_docno": ""}]
    groups = mapping.sale_groups(_envelope(f.nhsa_sales(SHOP, rows)))
    refused = [(g.settlement_id, g.row_count, g.refusal) for g in groups if g.refusal]
    assert refused == [
        ("", 1, "input.selinfoDetail[3].rtal_docno is required"),
        (f"3505A:{SHOP}:R1", 2, "input.selinfoDetail[1].trdn_flag must be one of 0, 1, not '2'"),
    ]
    assert [g.settlement_id for g in groups if not g.refusal] == [f"3505A:{SHOP}:R2"]


def test_split_rows_take_the_catalogue_pack_size_and_whole_rows_none() -> None:
    rows = [f.nhsa_row([A], count="3.0000", split=True, drug="D1", docno="R"),
            f.nhsa_row([B], count="1", split=True, drug="D2", docno="R"),
            f.nhsa_row([C], drug="D1", docno="R")]
    [group] = mapping.sale_groups(_envelope(f.nhsa_sales(SHOP, rows)))
    assert mapping.split_drugs([group]) == {"D1", "D2"}
    lines = mapping.to_sale(SHOP, group, {"D1": 24}).body["lines"]
    assert [(line["split"], line["quantity"], line.get("pack_size")) for line in lines] == [
        (True, 3, 24), (True, 1, None), (False, 1, None)]


def test_the_gate_s_own_validation_speaks_of_the_message_s_rows() -> None:
    row = f.nhsa_row(["8" * 200])
    [group] = mapping.sale_groups(_envelope(f.nhsa_sale(SHOP, row)))
    sale = mapping.to_sale(SHOP, group, {})
    with pytest.raises(MessageRefused, match=r"^批次 .*（XC09AAL012A001010100543）: "
                                             r"drugtracinfo\[0\]: must be at most 128 "
                                             r"characters long$"):
        mapping.settlement(sale)


def test_the_gate_s_semantic_checks_and_a_nul_are_refused_in_the_message_s_words() -> None:
    [group] = mapping.sale_groups(_envelope(f.nhsa_sale(SHOP, f.nhsa_row([A]))))
    sale = mapping.to_sale(SHOP, group, {})
    sid = sale.settlement_id
    assert mapping.settlement(sale).lines[0].trace_codes == (f"{A}\r\n",)  # as scanned
    body = {**sale.body, "settled_at": "2025-13-01 10:00:00"}
    with pytest.raises(MessageRefused, match=rf"^{sid}: sel_retn_time: "):
        mapping.settlement(replace(sale, body=body))
    line = {**sale.body["lines"][0], "drug_code": "XC09\x00"}
    with pytest.raises(MessageRefused, match=rf"^{sid}: texts must not contain a NUL"):
        mapping.settlement(replace(sale, body={**sale.body, "lines": [line]}))


def _sale_lines(*lines: list[str]) -> list[RecordedLine]:
    return [RecordedLine(n, "XC09AAL012A001010100543", len(codes), False, None, tuple(codes),
                         None, "pay", [], []) for n, codes in enumerate(lines, start=1)]


def test_a_return_maps_its_codes_onto_whole_lines_of_the_sale() -> None:
    lines = _sale_lines([A], [B, f"{C}\r\n"])
    assert mapping.returned_lines(lines, [f" {C}", B]) == mapping.ReturnedLines([2], [])
    partial = mapping.returned_lines(lines, [B])
    assert partial.problems == [f"退货须退回整行：原销售第 2 行还有 1 个追溯码未退回 "
                                f"[PARTIAL_LINE_RETURN] {C}"]
    stranger = mapping.returned_lines(lines, [A, "81234560000000000042", "123"])
    assert [problem.split("[")[1].split("]")[0] for problem in stranger.problems] == [
        "CODE_NOT_IN_SALE", "INVALID_TRACE_CODE"]
    assert stranger.line_nos == [1]
    assert mapping.returned_lines(lines, []).problems == [
        "退货需提供退回药品的追溯码 [NO_CODES_RETURNED]"]


def _query(**fields: Any) -> Any:
    return mapping.sales_query(_envelope(f.nhsa_message("3513", SHOP, fields)), None)


def test_query_dates_are_whole_local_days_and_times_inclusive_seconds() -> None:
    days = _query(fixmedins_code=SHOP, begndate="2025-07-01", enddate="2025-07-31")
    assert (days.since, days.until) == (dt.datetime(2025, 7, 1, tzinfo=SHANGHAI),
                                        dt.datetime(2025, 8, 1, tzinfo=SHANGHAI))
    times = _query(drug_trac_codg=A, begndate="2025-07-01 08:00:00", enddate="2025-07-01 09:00:00")
    assert times.until == dt.datetime(2025, 7, 1, 9, 0, 1, tzinfo=SHANGHAI)
    assert (times.institution_id, times.code, times.page_num, times.page_size) == (None, A, 1, 100)
    with pytest.raises(MessageRefused, match="begndate is after"):
        _query(drug_trac_codg=A, begndate="2025-07-02", enddate="2025-07-01")
    with pytest.raises(MessageRefused, match="page_size 5000 must be a whole number 1-1000"):
        _query(drug_trac_codg=A, page_size="5000")


def test_a_repeat_says_who_paid_first_and_when_in_local_time() -> None:
    reason = {"code": "DUPLICATE_PAYMENT", "severity": "error", "trace_code": A,
              "first_payment": {"settlement_id": "S-1", "institution_id": "H00000000001",
                                "paid_at": "2025-07-01T02:15:00+00:00"}}
    text = wording.reason_text(reason, {"split": False}, {"H00000000001": "协和医院"})
    assert text == (f"追溯码已结算（重复结算） [DUPLICATE_PAYMENT] {A}，首次结算：H00000000001"
                    "（协和医院） 于 2025-07-01 10:15:00（北京时间）结算，结算号 S-1")
    split = {"split": True, "pack_size": None, "drug_code": "D9", "trace_codes": [A],
             "quantity": 3}
    mismatch = wording.reason_text({"code": "QUANTITY_MISMATCH", "severity": "error"}, split, {})
    assert "药品目录中没有 D9 的拆零包装数量" in mismatch


def test_the_bulk_event_is_the_contract_s_stream_settlement() -> None:
    row = f.nhsa_row([A], count="2.0000", bchno="B1", psn_no="P9")
    row["drugtracinfo"].append({"drug_trac_codg": B})
    encoded = encode_line(orjson.dumps(f.nhsa_sale(SHOP, row)), 7, {})
    [event] = encoded.events
    assert (event.line, event.key, event.codes, event.rows) == (7, f"3505:{SHOP}:B1".encode(), 2, 1)
    assert orjson.loads(event.value) == {
        "type": "settlement", "source": "stream", "settlement_id": f"3505:{SHOP}:B1",
        "institution_id": SHOP, "settled_at": "2025-07-01 10:15:00", "patient_id": "P9",
        "lines": [{"line_no": 1, "drug_code": "XC09AAL012A001010100543", "quantity": 2,
                   "split": False, "trace_codes": [f"{A}\r\n", B]}]}


def test_the_bulk_upload_refuses_returns_and_what_is_not_json_with_their_rows() -> None:
    returned = f.nhsa_message("3506", SHOP, {"selinfo": f.nhsa_row([A])})
    [refused] = encode_line(orjson.dumps(returned), 3, {}).refused
    assert (refused.line, refused.rows) == (3, 1)
    assert refused.reason.startswith("infno 3506 is not a sale")
    assert encode_line(b"{", 4, {}).refused[0].reason.startswith("not JSON")


def _event(kind: str, sid: str, at: str, line_no: int = 1, units: int | None = None) -> Any:
    return SimpleNamespace(code=A, institution_id=SHOP, settlement_id=sid, line_no=line_no,
                           type=kind, units=units, event_at=dt.datetime.fromisoformat(at))


def test_a_code_s_sales_are_each_followed_by_their_returns_and_bounded_by_sale_time() -> None:
    events = [_event("payment", "S2", "2025-07-03T10:00:00+08:00"),
              _event("reversal", "S1", "2025-07-02T10:00:00+08:00", units=-3),
              _event("payment", "S1", "2025-07-01T10:00:00+08:00", units=3),
              _event("reversal", "S9", "2025-07-02T11:00:00+08:00")]  # its sale is not listed
    found = code_sales(events, dt.datetime(2025, 7, 3, tzinfo=SHANGHAI))
    assert [(e.settlement_id, e.type, e.units) for e in found] == [
        ("S1", "sale", 3), ("S1", "return", 3)]
