"""`tracegate code show CODE`: one code's history (GET /v1/codes/{code}), in Asia/Shanghai."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from cli.operator import environment, parsing, render
from cli.operator.api import ApiClient


def show(args: argparse.Namespace) -> int:
    with ApiClient(environment.api_access(args)) as api:
        found = api.call("GET", f"/v1/codes/{quote(args.code, safe='')}")
    if args.json:
        render.json_document(found)
        return 0
    render.out(f"{found['trace_code']}  format {found['format']}  status {found['status']}")
    render.out("")
    render.table((_event_row(event) for event in found["events"]),
                 ["at (Asia/Shanghai)", "event", "settlement", "line", "institution", "units",
                  "patient_ref", "note"])
    if found["flags"]:
        render.out("")
        render.table((_flag_row(flag) for flag in found["flags"]),
                     ["detected (Asia/Shanghai)", "flag", "kind", "severity", "institution",
                      "settlement", "line", "status"])
    return 0


def _event_row(event: dict[str, Any]) -> list[Any]:
    note = (f"reversal {event['reversal_id']}" if event.get("reversal_id")
            else "paid duplicate" if event.get("duplicate") else "")
    return [render.local_time(event["at"]), event["type"], event["settlement_id"],
            event["line_no"], event["institution_id"], event.get("units", ""),
            event.get("patient_ref") or "", note]


def _flag_row(flag: dict[str, Any]) -> list[Any]:
    return [render.local_time(flag["detected_at"]), flag["flag_id"], flag["kind"],
            flag["severity"], flag["institution_id"], flag["settlement_id"], flag["line_no"],
            flag.get("status", "")]


def register(sub: parsing.SubParsers) -> None:
    actions = parsing.group(sub, "code", "trace codes (regulator, ops or admin key)")
    one = parsing.command(actions, "show", "a code's payments, reversals and flags, oldest "
                          "first, times in Asia/Shanghai", environment.API_VARIABLES, show)
    one.add_argument("code", metavar="CODE", help="the trace code, in any accepted spelling")
    one.add_argument("--json", action="store_true", help="print the API's answer as JSON")
