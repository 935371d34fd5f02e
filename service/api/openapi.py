"""The OpenAPI document's words: for every operation a description, examples, and the error
responses it really gives (status, error codes, an example body each), instead of one generic
list on every route. Kept here, beside the routes rather than in them, so a route reads as
what it does; `install_openapi` merges it into FastAPI's generated document, and a test
checks that every operation is covered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

SID = "S-20250402-000123"
INSTITUTION = "P11010500001"
CODE = "81234570000000000035"
FLAG_ID = "fl_5d0f6b1f2c7e4a9b8c3d2e1f0a9b8c7d"

# Every error code an operation may answer, by status, with a sample message.
ERRORS: dict[str, tuple[int, str]] = {
    "UNAUTHENTICATED": (401, "missing 'Authorization: Bearer <api key>'"),
    "FORBIDDEN": (403, "role pos may not do this"),
    "SETTLEMENT_NOT_FOUND": (404, f"settlement {SID} is not recorded"),
    "CODE_NOT_SEEN": (404, f"trace code {CODE} has never been settled"),
    "FLAG_NOT_FOUND": (404, f"no recorded flag {FLAG_ID}"),
    "INSTITUTION_NOT_FOUND": (404, f"institution {INSTITUTION} is not registered"),
    "KEY_NOT_FOUND": (404, "no API key with id 42"),
    "DRUG_NOT_FOUND": (404, "drug XC09AAL012A001010100543 is not in the catalogue"),
    "SETTLEMENT_CONFLICT": (409, f"settlement {SID} was already decided with another body"),
    "REVERSAL_CONFLICT": (409, "reversal R-1 was used for another settlement or other lines"),
    "CONFLICT": (409, "trace codes are changing concurrently; retry"),
    "INVALID_TRANSITION": (409, "a case that is closed cannot become escalated; it may "
                                "become: investigating"),
    "KEY_IN_USE": (409, "this call is made with that key; revoke it with another admin key"),
    "BODY_TOO_LARGE": (413, "request body over 262144 bytes"),
    "VALIDATION_ERROR": (422, "lines[0].quantity: must be at least 1"),
    "MALFORMED_BODY": (422, "request body is not JSON: there was an error parsing the body"),
    "INVALID_VALUE": (422, "a text contains a character that cannot be stored (a NUL, or not "
                           "UTF-8)"),
    "UNKNOWN_INSTITUTION": (422, f"institution {INSTITUTION} is not registered"),
    "UNKNOWN_LINE": (422, f"settlement {SID} has no line [7]"),
    "INVALID_TRACE_CODE": (422, "GTIN check digit is 1, expected 2"),
    "INVALID_CURSOR": (422, "cursor is not one this API returned"),
    "INVALID_DRUG_CODE": (422, "med_list_codg '缬沙坦' must be 1-64 printable ASCII characters"),
    "INVALID_INSTITUTION_ID": (422, "institution_id 'p1' must be a 12-character "
                                    "fixmedins_code [0-9A-Z]"),
    "UNPROCESSABLE": (422, "since must be RFC 3339 with an offset"),
    "HOT_SET_REBUILDING": (503, "the first-seen set is being rebuilt"),
    "RECORD_UNAVAILABLE": (503, "the record cannot take settlements now (KafkaTimeoutError)"),
    "CLAIM_CONTENTION": (503, "trace codes are being claimed concurrently; retry"),
    "DEPENDENCY_UNAVAILABLE": (503, "a backing service is unavailable (ConnectionError); "
                                    "retry shortly"),
    "OVERLOADED": (503, "this process is at capacity; retry shortly"),
}

STATUS_WORDS = {401: "No key, or an unknown or revoked one.",
                403: "The key's role or institution may not do this.",
                404: "Not found.", 409: "Conflicts with what was done before.",
                413: "The body is larger than the service takes.",
                422: "The request is malformed or names something invalid; the message says "
                     "what, naming the field.",
                503: "A backing service is unavailable or busy; retry (see Retry-After)."}

AUTH = ("UNAUTHENTICATED", "FORBIDDEN", "DEPENDENCY_UNAVAILABLE", "OVERLOADED")
READ = (*AUTH, "VALIDATION_ERROR", "INVALID_VALUE")
WRITE = (*READ, "BODY_TOO_LARGE", "MALFORMED_BODY")


@dataclass(frozen=True)
class Doc:
    description: str
    errors: tuple[str, ...] = ()
    request: dict[str, Any] | None = None
    response: Any = None
    status: str = "200"
    extra: dict[str, Any] = field(default_factory=dict)
    media: str | None = None  # a success body FastAPI does not document (the SSE stream)


FLAG = {"flag_id": FLAG_ID, "kind": "duplicate_payment", "severity": "high",
        "trace_code": CODE, "institution_id": "P11010500002", "settlement_id": "S-20250403-9",
        "line_no": 1, "settled_at": "2025-04-03T09:00:00+08:00",
        "detected_at": "2025-04-03T09:00:00.412+08:00", "patient_ref": "3f2a9c0d1e4b5a6f",
        "first_payment": {"settlement_id": SID, "institution_id": INSTITUTION,
                          "paid_at": "2025-04-02T10:15:00+08:00"},
        "status": "new", "resolution": None, "updated_at": "2025-04-03T09:00:00.512+08:00"}
HISTORY = [{"status": "investigating", "note": "asked the pharmacy for the return slip",
            "by": {"key_id": 12, "role": "ops"}, "at": "2025-04-03T10:02:00+08:00"}]
PAYMENT = {"type": "payment", "settlement_id": SID, "line_no": 2, "institution_id": INSTITUTION,
           "at": "2025-04-02T10:15:00+08:00", "recorded_at": "2025-04-02T10:15:00.300+08:00",
           "patient_ref": "3f2a9c0d1e4b5a6f"}
SETTLEMENT = {"settlement_id": SID, "institution_id": INSTITUTION,
              "settled_at": "2025-04-02T10:15:00+08:00", "patient_id": "psn-0001",
              "lines": [{"line_no": 1, "drug_code": "XC09AAL012A001010100543", "quantity": 1,
                         "split": False, "trace_codes": ["81234560000000000011"]}]}
ANSWER = {"settlement_id": SID, "decision": "pay", "enforced": True, "replayed": False,
          "lines": [{"line_no": 1, "decision": "pay", "reasons": []}], "flags": []}
SUMMARY = {"open": 3, "open_by_status": {"new": 2, "investigating": 1, "escalated": 0},
           "open_by_age": {"under_1d": 2, "from_1d_to_7d": 1, "from_7d_to_30d": 0,
                           "over_30d": 0},
           "closed": 8, "closed_by_resolution": {"confirmed_fraud": 5, "legitimate": 2,
                                                 "data_error": 1},
           "false_alert_rate": 0.25}
INSTITUTION_IN = {"name": "北京某某大药房", "kind": "retail_pharmacy", "region": "110105",
                  "go_live_override": None}
INSTITUTION_OUT = {**INSTITUTION_IN, "institution_id": INSTITUTION,
                   "effective_go_live": "2025-04-01T00:00:00+08:00",
                   "counts": {"payments": 1520, "flags": {"duplicate_payment": 11}},
                   "cases": SUMMARY}

DRUG = "XC09AAL012A001010100543"
NHSA_SALE = {"infno": "3505", "msgid": "P1101050000120250402101500001",
             "fixmedins_code": INSTITUTION, "inf_time": "2025-04-02 10:15:01", "opter": "0001",
             "opter_name": "张三", "infver": "V1.0", "input": {"selinfo": {
                 "med_list_codg": DRUG, "fixmedins_hilist_id": "YP0001234",
                 "fixmedins_bchno": "B20250402000123", "rtal_docno": "R20250402000123",
                 "psn_no": "11000019800101001X", "rx_flag": "1", "trdn_flag": "0",
                 "sel_retn_cnt": "1.0000", "sel_retn_time": "2025-04-02 10:15:00",
                 "drugtracinfo": [{"drug_trac_codg": "81234560000000000011"}]}}}
NHSA_REPLY = {"infcode": 0, "inf_refmsgid": "TG2025040210150131204A1B2C3D",
              "refmsg_time": "20250402101501312", "respond_time": "20250402101501340",
              "err_msg": None, "output": {
                  "result": {"retRslt": "1", "msgRslt": "结算成功"},
                  "decision": {**ANSWER, "settlement_id": f"3505:{INSTITUTION}:B20250402000123"}}}
DRUG_IN = {"name": "缬沙坦胶囊 80mg*7粒", "pack_size": 7}

OPERATIONS: dict[str, Doc] = {
    "GET /healthz": Doc("Liveness: the process answers. No key needed.",
                        response={"status": "ok"}),
    "GET /readyz": Doc(
        "Readiness: Redis, PostgreSQL and Kafka each checked live now. 503 (with the same body) "
        "while any is unreachable. No key needed.",
        response={"ready": True, "checks": {"redis": "ok", "postgres": "ok", "kafka": "ok"}},
        extra={"503": {"description": "Not ready: a backing service is unreachable.",
                       "content": {"application/json": {"example": {
                           "ready": False, "checks": {"redis": "ok", "postgres": "unreachable",
                                                      "kafka": "ok"}}}}}}),
    "GET /metrics": Doc("Prometheus text format. No key needed.",
                        response="# TYPE tracegate_gate_seconds histogram\n..."),
    "POST /v1/settlements": Doc(
        "The gate (CONTRACT §3-§4): decides every line, claims the codes of paid lines, records "
        "the settlement (through Kafka) and returns the decision. The same settlement_id with "
        "the same body is a replay (`replayed: true`). pos keys act for their own institution.",
        ("SETTLEMENT_CONFLICT", "UNKNOWN_INSTITUTION", "HOT_SET_REBUILDING",
         "RECORD_UNAVAILABLE", "CLAIM_CONTENTION", *WRITE), SETTLEMENT, ANSWER),
    "POST /v1/settlements/{settlement_id}/reversal": Doc(
        "Reverses a settlement's paid lines (冲正): their codes become unpaid again; history "
        "keeps both events. No `line_nos` reverses every line. Idempotent on reversal_id.",
        ("SETTLEMENT_NOT_FOUND", "REVERSAL_CONFLICT", "CLAIM_CONTENTION", "UNKNOWN_LINE",
         "RECORD_UNAVAILABLE", "HOT_SET_REBUILDING", *WRITE),
        {"reversal_id": "R-20250402-000123", "line_nos": [1]},
        {"settlement_id": SID, "reversal_id": "R-20250402-000123",
         "released": ["81234560000000000011"], "replayed": False}),
    "GET /v1/settlements/{settlement_id}": Doc(
        "The recorded decision, with `reversals`: each reversal of it (reversal_id, line_nos "
        "as asked, null for every line; the codes it released; when). May trail the gate by "
        "up to a second.",
        ("SETTLEMENT_NOT_FOUND", *READ),
        response={**ANSWER, "reversals": [
            {"reversal_id": "R-20250402-000123", "line_nos": [1],
             "released": ["81234560000000000011"], "reversed_at": "2025-04-02T11:00:00+08:00"}]}),
    "POST /v1/codes/verify": Doc(
        "The scan-time check: each code's validity, format, canonical form and status "
        "(unpaid, paid, split_open with units_left), changing nothing and raising no flag.",
        ("BODY_TOO_LARGE", "MALFORMED_BODY", *READ),
        {"institution_id": INSTITUTION, "trace_codes": ["81234560000000000011"]},
        {"results": [{"trace_code": "81234560000000000011", "valid": True, "format": "cn20",
                      "canonical": "81234560000000000011", "status": "paid",
                      "product_id": "8123456", "special_control": False}]}),
    "GET /v1/codes/{trace_code}": Doc(
        "A code's whole history (percent-encode it): every payment and reversal in one order "
        "(event time, ties by record order), each with its recorded_at, and its flags.",
        ("CODE_NOT_SEEN", "INVALID_TRACE_CODE", *READ),
        response={"trace_code": CODE, "format": "cn20", "status": "paid",
                  "events": [PAYMENT], "flags": [FLAG]}),
    "GET /v1/flags": Doc(
        "Flags oldest first, filtered by kind, institution_id, status (repeatable), since "
        "(inclusive) and until (exclusive) on detected_at; cursor pagination.",
        ("INVALID_CURSOR", "UNPROCESSABLE", *READ),
        response={"items": [FLAG], "next_cursor": None}),
    "GET /v1/flags/stream": Doc(
        "Server-Sent Events: `event: flag`, `id:` the flag id, `data:` the flag JSON, each "
        "detection once; resumes after `Last-Event-ID`. Filters as the list's (status is the "
        "case's status when the flag is sent; triage changes are not events).",
        READ, response=f"event: flag\nid: {FLAG_ID}\ndata: {{...}}\n\n",
        media="text/event-stream"),
    "GET /v1/flags/summary": Doc(
        "How the cases stand, overall or for one institution: open cases by status and by age "
        "since detection, closed cases by resolution, and the false-alert rate (the share of "
        "closed cases resolved `legitimate`; null while none is closed).",
        READ, response=SUMMARY),
    "GET /v1/flags/{flag_id}": Doc(
        "One flag's case (CONTRACT §7): the flag, its triage history (`by` is the acting "
        "key's id and role, never the key) and every payment of its code.",
        ("FLAG_NOT_FOUND", *READ),
        response={**FLAG, "status": "investigating", "history": HISTORY,
                  "payments": [PAYMENT]}),
    "PATCH /v1/flags/{flag_id}": Doc(
        "A triage step: new → investigating → escalated → closed; any open status may close; "
        "closed may reopen to investigating. Closing needs a resolution (confirmed_fraud, "
        "legitimate, data_error); a resolution is given only when closing. Another step is "
        "409 INVALID_TRANSITION. Answers the flag with its history.",
        ("FLAG_NOT_FOUND", "INVALID_TRANSITION", *WRITE),
        {"status": "closed", "resolution": "legitimate",
         "note": "a return the pharmacy had not recorded yet"},
        {**FLAG, "status": "closed", "resolution": "legitimate", "history": [
            *HISTORY, {"status": "closed", "resolution": "legitimate",
                       "note": "a return the pharmacy had not recorded yet",
                       "by": {"key_id": 12, "role": "ops"},
                       "at": "2025-04-03T11:30:00+08:00"}]}),
    "PUT /v1/institutions/{institution_id}": Doc(
        "Registers or updates an institution (定点医药机构): its 12-character fixmedins_code, "
        "name, kind, region and an optional go-live date (local midnight).",
        ("INVALID_INSTITUTION_ID", *WRITE), INSTITUTION_IN, INSTITUTION_OUT),
    "GET /v1/institutions/{institution_id}": Doc(
        "An institution with its effective go-live, counts of payments and flags by kind, and "
        "`cases`: how its flags' cases stand (as GET /v1/flags/summary).",
        ("INSTITUTION_NOT_FOUND", *READ), response=INSTITUTION_OUT),
    "POST /v1/api-keys": Doc(
        "Mints an API key; the key is shown once (stored hashed). A pos key names its "
        "institution; no other role does.",
        ("UNKNOWN_INSTITUTION", "UNPROCESSABLE", *WRITE), {"role": "pos",
                                                           "institution_id": INSTITUTION},
        {"key": "tg_3q2-…", "key_id": 42, "role": "pos", "institution_id": INSTITUTION},
        status="201"),
    "DELETE /v1/api-keys/{key_id}": Doc(
        "Revokes a key (beyond the contract, which only mints them): refused at once by this "
        "process, by the others within their 10 s key cache. Idempotent; a key cannot revoke "
        "itself.",
        ("KEY_NOT_FOUND", "KEY_IN_USE", *READ),
        response={"key_id": 42, "revoked_at": "2025-04-03T12:00:00+08:00"}),
    "GET /v1/ops/series": Doc(
        "The console's charts over the last hour, column-wise: codes and flags (by kind) per "
        "second, gate latency p50/p99, consumer lag by partition, the DLQ total, sampled from "
        "every process's Prometheus metrics (the API's and TRACEGATE_METRICS_URLS).",
        AUTH,
        response={"interval_s": 5.0, "window_s": 3600.0, "t": [1743560100.0, 1743560105.0],
                  "codes_per_s": [None, 812.4], "flags_per_s": {"duplicate_payment": [None, 0.4]},
                  "gate_p50_ms": [None, 3.1], "gate_p99_ms": [None, 12.0],
                  "consumer_lag": {"0": [12.0, 3.0]}, "dlq_total": [0.0, 0.0],
                  "hot_set_codes": [8100000.0, 8100406.0],
                  "sources": [{"source": "api", "up": True, "error": None,
                               "scraped_at": 1743560105.0}]}),
    "GET /v1/institutions": Doc(
        "Registered institutions, a page at a time in institution_id order (`cursor` from "
        "`next_cursor`). Not in the contract: the operator CLI's `institutions list`.",
        READ, response={"items": [{**INSTITUTION_IN, "institution_id": INSTITUTION}],
                        "next_cursor": None}),
    "GET /v1/api-keys": Doc(
        "API keys, a page at a time: id, role, institution and when made or revoked, never "
        "the key. Not in the contract: the operator CLI's `keys list`.",
        READ, response={"items": [{"key_id": 12, "role": "pos", "institution_id": INSTITUTION,
                                   "created_at": "2025-03-20T09:00:00+08:00",
                                   "revoked_at": None}], "next_cursor": None}),
    "POST /v1/nhsa": Doc(
        "The gate in the national platform's envelope (CONTRACT §8, docs/NHSA.md): 3505 (a sale "
        "row), 3505A (rows in a batch, a settlement per rtal_docno), 3506 (a return: the "
        "reversal of the sale's lines carrying its codes), 3513 (recorded sales and returns). "
        "Decided by the gate's own settle and reverse. A message that cannot be taken is "
        "`infcode: -1` with `err_msg` in words, HTTP 200 as the platform does; `msgRslt` says "
        "why a row was refused and who paid a repeated code first. pos keys act for the "
        "envelope's fixmedins_code; a regulator key may send 3513 only.",
        ("BODY_TOO_LARGE", "HOT_SET_REBUILDING", "RECORD_UNAVAILABLE", "CLAIM_CONTENTION",
         *AUTH), NHSA_SALE, NHSA_REPLY),
    "PUT /v1/drugs/{med_list_codg}": Doc(
        "Adds or changes a drug catalogue entry (医保药品目录): its name and the units in one "
        "pack, which an NHSA split (拆零) row takes as its pack_size. API processes see the "
        "change within their 5 s cache. `tracegate catalogue import FILE.csv` loads a list.",
        ("INVALID_DRUG_CODE", *WRITE), DRUG_IN,
        {**DRUG_IN, "med_list_codg": DRUG, "updated_at": "2025-04-02T10:15:00+08:00"}),
    "GET /v1/drugs/{med_list_codg}": Doc(
        "A drug catalogue entry: name, pack size (units in one pack) and when it last changed.",
        ("DRUG_NOT_FOUND", *READ),
        response={**DRUG_IN, "med_list_codg": DRUG, "updated_at": "2025-04-02T10:15:00+08:00"}),
    "GET /v1/me": Doc(
        "Who the calling key is: its id, role and institution (never the key). The console's "
        "sign-in asks this.", ("UNAUTHENTICATED", "DEPENDENCY_UNAVAILABLE"),
        response={"key_id": 12, "role": "ops", "institution_id": None}),
}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                   description=app.description, routes=app.routes)
            annotate(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def annotate(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            doc = OPERATIONS.get(f"{method.upper()} {path}")
            if doc is not None:
                _annotate(operation, doc)


def _annotate(operation: dict[str, Any], doc: Doc) -> None:
    operation["description"] = doc.description
    if doc.request is not None:
        operation["requestBody"]["content"]["application/json"]["example"] = doc.request
    success = operation["responses"].get(doc.status, {})
    if doc.media is not None:
        success["content"] = {doc.media: {"schema": {"type": "string"}}}
    for media in success.get("content", {}).values():
        media["example"] = doc.response
    errors = {status: r for status, r in operation["responses"].items()
              if not status.startswith(("4", "5"))}
    errors.update(_error_responses(doc.errors))
    operation["responses"] = {**errors, **doc.extra}


def _error_responses(codes: tuple[str, ...]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ERRORS[code][0], []).append(code)
    return {str(status): _error_response(status, names)
            for status, names in sorted(by_status.items())}


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    examples = {code: {"value": {"error": {"code": code, "message": ERRORS[code][1]}}}
                for code in codes}
    return {"description": f"{STATUS_WORDS[status]} Codes: {', '.join(codes)}.",
            "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorBody"}, "examples": examples}}}
