"""NHSA messages onto the contract's own requests (CONTRACT §8): a sale row is a settlement
line (§3), a return the reversal of the lines carrying its codes (§4), a query the record's
sales and returns. Pure: what the catalogue says is handed in."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from service.decisions.checks import InvalidSettlement, check_settlement
from service.decisions.schemas import Settlement
from service.kit.validation import describe
from service.nhsa import vendor
from service.nhsa.schemas import (
    Envelope,
    Infno,
    MessageRefused,
    ReturnRequest,
    Sale,
    SaleRow,
    SalesQuery,
)
from service.policy.schemas import NoCodeReason
from service.records.schemas import RecordedLine
from service.settlements.schemas import ReversalRequest
from service.tracecodes.schemas import InvalidTraceCode
from service.tracecodes.service import parse_trace_code

_FIXMEDINS_CODE = re.compile(r"^[0-9A-Z]{12}$")
_IDENTIFIER = re.compile(r"^[\x21-\x7e]{1,64}$")  # as settlement_id / reversal_id (§3, §4)
_MAX_QUANTITY = 1_000_000
_INFNOS = frozenset(Infno)
_NO_CODE_REASONS = frozenset(NoCodeReason)
QUERY_PAGE_SIZE = 100
QUERY_PAGE_SIZE_MAX = 1000
QUERY_SPAN_MAX = dt.timedelta(days=31)
# What the gate's validation names, as the message names it.
_FIELD_NAMES = {"trace_codes": "drugtracinfo", "quantity": "sel_retn_cnt",
                "drug_code": "med_list_codg", "patient_id": "psn_no",
                "settled_at": "sel_retn_time", "pack_size": "pack_size (drug catalogue)"}
# A complaint of the gate's validation: `lines[0].trace_codes[1]: must be ...`.
_COMPLAINT = re.compile(r"^(?:lines\[(?P<line>\d+)\]\.?)?(?P<path>[^:]*): (?P<what>.*)$", re.S)
_PATH_PART = re.compile(r"[A-Za-z_]+")


def read_envelope(body: Any) -> Envelope:
    if not isinstance(body, dict):
        raise MessageRefused("the message must be a JSON object (the platform's envelope)")
    infno = vendor.required_text(body, "infno", "message")
    if infno not in _INFNOS:
        raise MessageRefused(f"infno {infno!r} is not one this service takes: "
                             f"{', '.join(Infno)}")
    institution = vendor.required_text(body, "fixmedins_code", "message").upper()
    if infno != Infno.QUERY:
        check_institution(institution, "message.fixmedins_code")
    return Envelope(Infno(infno), vendor.required_text(body, "msgid", "message"), institution,
                    vendor.moment(body, "inf_time", "message"),
                    vendor.section(body, "input", "message"))


def check_institution(code: str, where: str) -> None:
    if not _FIXMEDINS_CODE.match(code):
        raise MessageRefused(f"{where} {code!r} must be a 12-character fixmedins_code "
                             "(digits and capital letters)")


def read_sale_row(raw: dict[str, Any], where: str) -> SaleRow:
    vendor.required_text(raw, "fixmedins_hilist_id", where)  # the platform's; not read here
    return SaleRow(
        where=where, med_list_codg=vendor.required_text(raw, "med_list_codg", where),
        fixmedins_bchno=vendor.required_text(raw, "fixmedins_bchno", where),
        rtal_docno=vendor.required_text(raw, "rtal_docno", where),
        psn_no=vendor.text(raw, "psn_no", where),
        split=vendor.flag(raw, "trdn_flag", where, ("0", "1")) == "1",
        count=vendor.number(raw, "sel_retn_cnt", where),
        sold_at=vendor.moment(raw, "sel_retn_time", where),
        codes=vendor.code_list(raw, where), no_code_reason=_no_code_reason(raw, where),
    )


def _no_code_reason(raw: dict[str, Any], where: str) -> str | None:
    """Not a platform field: tracegate's exemptions (§2), for rows such as 中药饮片 that carry
    no code. Empty is absent."""
    reason = vendor.text(raw, "no_code_reason", where)
    if reason is not None and reason not in _NO_CODE_REASONS:
        raise MessageRefused(f"{where}.no_code_reason {reason!r} must be one of "
                             f"{', '.join(NoCodeReason)}")
    return reason


# --- sales (3505, 3505A) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaleGroup:
    """The rows one settlement is made of, or why they cannot be (`refusal`)."""

    settlement_id: str
    rows: list[SaleRow] = field(default_factory=list)
    refusal: str | None = None
    row_count: int = 0


def sale_groups(envelope: Envelope) -> list[SaleGroup]:
    """3505: one settlement of one line, named by fixmedins_bchno. 3505A: one settlement per
    rtal_docno, its rows as lines 1..n in the order sent. A group with a row that cannot be
    read is refused whole (recording the rest would fix a settlement id to a partial body)."""
    institution = envelope.fixmedins_code
    if envelope.infno is Infno.SALE:
        row = vendor.section(envelope.input, "selinfo", "input")
        bchno = vendor.required_text(row, "fixmedins_bchno", "input.selinfo")
        sid = _identifier(f"3505:{institution}:{bchno}", "input.selinfo.fixmedins_bchno")
        return [_group(sid, [(row, "input.selinfo")])]
    raw_rows = vendor.rows(envelope.input, "selinfoDetail", "input")
    by_docno: dict[str, list[tuple[dict[str, Any], str]]] = {}
    refused: list[SaleGroup] = []
    for n, row in enumerate(raw_rows):
        where = f"input.selinfoDetail[{n}]"
        try:
            docno = vendor.required_text(row, "rtal_docno", where)
            sid = _identifier(f"3505A:{institution}:{docno}", f"{where}.rtal_docno")
        except MessageRefused as exc:
            refused.append(SaleGroup("", refusal=exc.message, row_count=1))
            continue
        by_docno.setdefault(sid, []).append((row, where))
    return refused + [_group(sid, rows) for sid, rows in by_docno.items()]


def _group(settlement_id: str, raw: list[tuple[dict[str, Any], str]]) -> SaleGroup:
    try:
        rows = [read_sale_row(row, where) for row, where in raw]
        _patient(rows)
    except MessageRefused as exc:
        return SaleGroup(settlement_id, refusal=exc.message, row_count=len(raw))
    return SaleGroup(settlement_id, rows, row_count=len(raw))


def _identifier(text: str, where: str) -> str:
    if not _IDENTIFIER.match(text):
        raise MessageRefused(f"{where} makes the id {text!r}: printable ASCII without spaces, "
                             "at most 64 characters in all")
    return text


def split_drugs(groups: list[SaleGroup]) -> set[str]:
    """The drugs whose pack size the catalogue must supply (split rows only)."""
    return {row.med_list_codg for group in groups for row in group.rows if row.split}


def to_sale(
    institution_id: str, group: SaleGroup, pack_sizes: Mapping[str, int]
) -> Sale:
    """The settlement of a readable group. The time is its latest row's (a receipt is settled
    when its last row is); a split row's pack size comes from the catalogue, and without one
    the gate decides the line as a split line without pack_size (QUANTITY_MISMATCH)."""
    rows = group.rows
    body: dict[str, Any] = {
        "settlement_id": group.settlement_id, "institution_id": institution_id,
        "settled_at": vendor.local_text(max(row.sold_at for row in rows)),
        "lines": [_line(n, row, pack_sizes) for n, row in enumerate(rows, start=1)],
    }
    patient = _patient(rows)
    if patient is not None:
        body["patient_id"] = patient  # the gate and the consumers keep only its keyed hash
    return Sale(group.settlement_id, body, rows)


def _line(line_no: int, row: SaleRow, pack_sizes: Mapping[str, int]) -> dict[str, Any]:
    line: dict[str, Any] = {"line_no": line_no, "drug_code": row.med_list_codg,
                            "quantity": _quantity(row), "split": row.split,
                            "trace_codes": row.codes}
    pack_size = pack_sizes.get(row.med_list_codg) if row.split else None
    if pack_size is not None:
        line["pack_size"] = pack_size
    if row.no_code_reason is not None:
        line["no_code_reason"] = row.no_code_reason
    return line


def _quantity(row: SaleRow) -> int:
    count: Decimal = row.count
    if count != count.to_integral_value() or not 1 <= count <= _MAX_QUANTITY:
        unit = "units (trdn_flag 1)" if row.split else "packs"
        raise MessageRefused(f"{row.where}.sel_retn_cnt {count} must be a whole number of "
                             f"{unit}, 1-{_MAX_QUANTITY}")
    return int(count)


def _patient(rows: list[SaleRow]) -> str | None:
    patients = {row.psn_no for row in rows if row.psn_no is not None}
    if len(patients) > 1:
        raise MessageRefused(f"the rows of rtal_docno {rows[0].rtal_docno} name "
                             f"{len(patients)} different psn_no; a receipt has one patient")
    return patients.pop() if patients else None


def settlement(sale: Sale) -> Settlement:
    """The gate's own settlement, checked as the gate checks one (types and bounds, then
    `check_settlement`), its complaints put in the message's words."""
    try:
        built = msgspec.convert(sale.body, Settlement)
        check_settlement(built)
    except msgspec.ValidationError as exc:
        raise MessageRefused(_complaint(sale, describe(exc))) from None
    except InvalidSettlement as exc:
        raise MessageRefused(_complaint(sale, exc.message)) from None
    if _has_nul(built):
        raise MessageRefused(f"{sale.settlement_id}: texts must not contain a NUL character")
    return built


def _has_nul(settlement: Settlement) -> bool:
    """PostgreSQL text cannot hold NUL (the gate refuses it in a request's bytes,
    `checks.check_raw`; a message's texts are checked here). One pass over them."""
    texts = [settlement.settled_at, settlement.patient_id or ""]
    for line in settlement.lines:
        texts.append(line.drug_code)
        texts += line.trace_codes
    return "\x00" in "".join(texts)


def _complaint(sale: Sale, complaint: str) -> str:
    """`lines[0].trace_codes[1]: must be ...` -> `批次 B1（drug）: drugtracinfo[1]: must be ...`"""
    found = _COMPLAINT.match(complaint)
    if found is None:
        return f"{sale.settlement_id}: {complaint}"
    path = _PATH_PART.sub(lambda part: _FIELD_NAMES.get(part[0], part[0]), found["path"])
    if found["line"] is not None:
        return f"{sale.label(int(found['line']) + 1)}: {path or 'line'}: {found['what']}"
    return f"{sale.settlement_id}: {path or 'settlement'}: {found['what']}"


# --- returns (3506) ------------------------------------------------------------------------


def return_request(envelope: Envelope) -> ReturnRequest:
    """The sale is the one recorded under the same fixmedins_bchno (a 3505) or rtal_docno (a
    3505A receipt); the reversal is named by the return's fixmedins_bchno."""
    row = read_sale_row(vendor.section(envelope.input, "selinfo", "input"), "input.selinfo")
    institution = envelope.fixmedins_code
    where = "input.selinfo.fixmedins_bchno"
    reversal_id = _identifier(f"3506:{institution}:{row.fixmedins_bchno}", where)
    sale_ids = (f"3505:{institution}:{row.fixmedins_bchno}",
                f"3505A:{institution}:{row.rtal_docno}")
    return ReturnRequest(reversal_id, sale_ids, row.codes, row.sold_at)


@dataclass(frozen=True, slots=True)
class ReturnedLines:
    line_nos: list[int]
    problems: list[str]  # in words; a return with any is refused whole


def returned_lines(lines: Sequence[RecordedLine], codes: list[str]) -> ReturnedLines:
    """Codes -> the recorded sale's lines carrying them. A reversal gives a whole line back
    (§4), so a return must bring every code of each line it names: a line of three packs
    returned with one code would otherwise free the two packs still with the patient."""
    problems: list[str] = []
    if not codes:
        problems.append("退货需提供退回药品的追溯码 [NO_CODES_RETURNED]")
    owners = {code: line.line_no for line in lines for code in _canonical(line.trace_codes)}
    returned: set[str] = set()
    for text in codes:
        parsed = parse_trace_code(text)
        if isinstance(parsed, InvalidTraceCode):
            problems.append(f"追溯码无效 [INVALID_TRACE_CODE] {text.strip()}（{parsed.reason}）")
        elif parsed.canonical not in owners:
            problems.append(f"追溯码不在原销售中 [CODE_NOT_IN_SALE] {parsed.canonical}")
        else:
            returned.add(parsed.canonical)
    line_nos = sorted({owners[code] for code in returned})
    for line in lines:
        missing = [c for c in _canonical(line.trace_codes) if c not in returned]
        if line.line_no in line_nos and missing:
            problems.append(f"退货须退回整行：原销售第 {line.line_no} 行还有 {len(missing)} 个"
                            f"追溯码未退回 [PARTIAL_LINE_RETURN] {', '.join(missing)}")
    return ReturnedLines(line_nos, problems)


def reversal(request: ReturnRequest, lines: ReturnedLines) -> ReversalRequest:
    """The gate's reversal of the lines a readable return names (`lines.problems` empty);
    the ids and line numbers are bounded where they are made, so no check is left here."""
    return ReversalRequest(request.reversal_id, lines.line_nos)


def _canonical(texts: Sequence[str]) -> list[str]:
    parsed = (parse_trace_code(text) for text in texts)
    return [code.canonical for code in parsed if not isinstance(code, InvalidTraceCode)]


# --- the sales query (3513) ----------------------------------------------------------------


def sales_query(envelope: Envelope, own_institution: str | None) -> SalesQuery:
    """`own_institution`: a pos key's, which the query is held to (the envelope's by default);
    None for keys that read everything, which may leave the institution out."""
    fields, where = envelope.input, "input"
    institution = vendor.text(fields, "fixmedins_code", where)
    if institution is not None:
        institution = institution.upper()
        check_institution(institution, f"{where}.fixmedins_code")
    code = _query_code(vendor.text(fields, "drug_trac_codg", where), where)
    since, until = _query_range(fields, where)
    query = SalesQuery(institution or own_institution, code, since, until,
                       _page(fields, "page_num", where, 1, 10**6),
                       _page(fields, "page_size", where, QUERY_PAGE_SIZE, QUERY_PAGE_SIZE_MAX))
    _check_bounded(query)
    return query


def _query_code(text: str | None, where: str) -> str | None:
    if text is None:
        return None
    parsed = parse_trace_code(text)
    if isinstance(parsed, InvalidTraceCode):
        raise MessageRefused(f"{where}.drug_trac_codg {text!r} is not a trace code: "
                             f"{parsed.reason}")
    return parsed.canonical


def _query_range(
    fields: dict[str, Any], where: str
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """begndate and enddate, both inclusive: a date is its whole local day, a time its second."""
    since = until = None
    if vendor.text(fields, "begndate", where) is not None:
        since, _ = vendor.day_or_moment(fields, "begndate", where)
    if vendor.text(fields, "enddate", where) is not None:
        end, whole_day = vendor.day_or_moment(fields, "enddate", where)
        until = end + (dt.timedelta(days=1) if whole_day else dt.timedelta(seconds=1))
    if since is not None and until is not None and since >= until:
        raise MessageRefused(f"{where}.begndate is after {where}.enddate")
    return since, until


def _page(
    fields: dict[str, Any], name: str, where: str, default: int, most: int
) -> int:
    raw = fields.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    value = vendor.number(fields, name, where)
    if value != value.to_integral_value() or not 1 <= value <= most:
        raise MessageRefused(f"{where}.{name} {value} must be a whole number 1-{most}")
    return int(value)


def _check_bounded(query: SalesQuery) -> None:
    """A code's history is an index probe per month; an institution's sales are read by time."""
    if query.code is None:
        query.institution_range(QUERY_SPAN_MAX)
