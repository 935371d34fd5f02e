"""`tracegate flags tail|set`: the flag feed and case triage (CONTRACT §7), through the API.

`tail` lists the flags detected since `--since` (default the last 24 hours) that match the
filters and prints the last `--lines`, then with `--follow` each new one as the stream
(GET /v1/flags/stream) delivers it. `--status` goes to the API as its `status` filter and is
applied here too, so it works against an API without triage, whose flags carry no status
(each is then a `new` case, as every flag starts)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import orjson

from cli.operator import environment, parsing, render
from cli.operator.api import ApiClient, ApiError
from cli.operator.environment import OperatorError
from service.flags.schemas import FlagKind
from service.kit.clock import utcnow

STATUSES = ("new", "investigating", "escalated", "closed")
RESOLUTIONS = ("confirmed_fraud", "legitimate", "data_error")
_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def tail(args: argparse.Namespace) -> int:
    params = _filters(args)
    with ApiClient(environment.api_access(args)) as api:
        listed = list(api.pages("/v1/flags", {**params, "since": args.since, "limit": 1000}))
        found = [flag for flag in listed if _status_matches(flag, args.status)]
        for flag in found[-args.lines:] if args.lines else []:
            _print(flag, args.json)
        if args.follow:
            # From the last flag listed: none detected between the listing and the stream is
            # missed (the stream's own start is "now").
            after = listed[-1]["flag_id"] if listed else None
            stream = {k: v for k, v in params.items() if k != "status"}
            with contextlib.suppress(KeyboardInterrupt):
                for flag in _followed(api, stream, after):
                    if _status_matches(flag, args.status):
                        _print(flag, args.json)
    return 0


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    given = {"kind": args.kind, "institution_id": args.institution, "status": args.status}
    return {name: value for name, value in given.items() if value}


def _status_matches(flag: dict[str, Any], statuses: list[str] | None) -> bool:
    return not statuses or flag.get("status", "new") in statuses


def _followed(
    api: ApiClient, params: dict[str, Any], after: str | None
) -> Iterator[dict[str, Any]]:
    """The `data:` of each `flag` event of the stream, resuming after the flag `after`."""
    headers = {"Last-Event-ID": after} if after else {}
    for line in api.stream_lines("/v1/flags/stream", params, headers):
        if line.startswith("data:"):
            yield orjson.loads(line.removeprefix("data:").strip())


def _print(flag: dict[str, Any], as_json: bool) -> None:
    if as_json:
        render.json_lines([flag])
        return
    first = flag.get("first_payment") or {}
    paid = (f"  first paid {first['settlement_id']} at {first['institution_id']} "
            f"{render.local_time(first['paid_at'])}" if first else "")
    render.out(
        f"{render.local_time(flag['detected_at'])}  {flag['kind']:<23} {flag['severity']:<6} "
        f"{flag.get('status', 'new'):<13} {flag['flag_id']}  {flag['trace_code'] or '-'}  "
        f"{flag['institution_id']} {flag['settlement_id']}#{flag['line_no']}{paid}")


def since(text: str) -> str:
    """`--since`: an RFC 3339 instant, or a span back from now (`30m`, `24h`, `7d`)."""
    matched = _DURATION.match(text)
    if matched:
        span = dt.timedelta(**{_UNITS[matched.group(2)]: int(matched.group(1))})
        return (utcnow() - span).isoformat()
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an RFC 3339 instant nor a span like 24h") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs an offset, e.g. +08:00")
    return moment.isoformat()


def set_status(args: argparse.Namespace) -> int:
    body = {"status": args.status, "resolution": args.resolution, "note": args.note}
    body = {name: value for name, value in body.items() if value is not None}
    with ApiClient(environment.api_access(args)) as api:
        answer = _patch(api, args.flag_id, body)
    if args.json:
        render.json_document(answer)
        return 0
    _print(answer, as_json=False)
    render.table(([entry.get("status"), entry.get("resolution") or "", entry.get("note") or "",
                   _who(entry.get("by")), render.local_time(entry.get("at")) if entry.get("at")
                   else ""] for entry in answer.get("history", [])),
                 ["status", "resolution", "note", "by", "at (Asia/Shanghai)"])
    return 0


def _patch(api: ApiClient, flag_id: str, body: dict[str, Any]) -> Any:
    try:
        return api.call("PATCH", f"/v1/flags/{flag_id}", json=body)
    except ApiError as exc:
        # No such route (404 NOT_FOUND, not a flag's own 404) or no PATCH on it (405).
        if exc.status == 405 or exc.code == "NOT_FOUND":
            raise OperatorError(
                f"this API has no flag triage (PATCH /v1/flags/{{flag_id}} answered "
                f"{exc.status}): it needs a tracegate with CONTRACT §7") from exc
        raise


def _who(by: Any) -> str:
    if isinstance(by, dict):
        return f"key {by.get('key_id')} ({by.get('role')})"
    return "" if by is None else str(by)


def register(sub: parsing.SubParsers) -> None:
    actions = parsing.group(sub, "flags", "flags and their cases (ops, regulator or admin key)")
    feed = parsing.command(actions, "tail", "the latest flags, then (--follow) new ones live",
                           environment.API_VARIABLES, tail)
    feed.add_argument("--kind", choices=[kind.value for kind in FlagKind], default=None)
    feed.add_argument("--status", choices=STATUSES, action="append", default=None,
                      help="only cases in this status (repeat for several)")
    feed.add_argument("--institution", default=None, metavar="INSTITUTION_ID")
    feed.add_argument("--since", type=since, default="24h",
                      help="from this RFC 3339 instant or span back (30m, 24h, 7d; default 24h)")
    feed.add_argument("-n", "--lines", type=int, default=20,
                      help="how many of the latest to print (default 20; 0: none)")
    feed.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new flags as they are detected (Ctrl-C stops)")
    feed.add_argument("--json", action="store_true", help="one JSON object a line")
    case = parsing.command(actions, "set", "move a case on: new, investigating, escalated, "
                           "closed (closing needs --resolution)", environment.API_VARIABLES,
                           set_status)
    case.add_argument("flag_id", metavar="FLAG_ID")
    case.add_argument("status", metavar="STATUS", choices=STATUSES)
    case.add_argument("--resolution", choices=RESOLUTIONS, default=None)
    case.add_argument("--note", default=None, help="why, for the case's history")
    case.add_argument("--json", action="store_true", help="print the API's answer as JSON")

