"""The scan-time check (POST /v1/codes/verify): what the first-seen set says of each code,
without changing anything or raising a flag."""

from __future__ import annotations

from typing import Any

from service.firstseen.store import FirstSeenStore, Seen
from service.tracecodes.schemas import InvalidTraceCode, ParsedTraceCode, TraceCodeFormat
from service.tracecodes.service import parse_trace_code


def code_status(seen: Seen | None) -> tuple[str, int | None]:
    state = seen.state if seen is not None else None
    if state is None:
        return "unpaid", None
    if state.is_split and state.pack_size is not None:
        return "split_open", state.pack_size - (state.units_used or 0)
    return "paid", None


async def verify(store: FirstSeenStore, texts: list[str]) -> list[dict[str, Any]]:
    parsed = [parse_trace_code(text) for text in texts]
    valid = [code.canonical for code in parsed if isinstance(code, ParsedTraceCode)]
    seen = await store.read(valid)
    return [_result(code, seen) for code in parsed]


def _result(code: ParsedTraceCode | InvalidTraceCode, seen: dict[str, Seen]) -> dict[str, Any]:
    if isinstance(code, InvalidTraceCode):
        return {"trace_code": code.text, "valid": False, "format": None, "canonical": None,
                "status": None, "reason": code.reason}
    status, units_left = code_status(seen.get(code.canonical))
    result: dict[str, Any] = {
        "trace_code": code.text, "valid": True, "format": code.format.value,
        "canonical": code.canonical, "status": status, "product_id": code.product_id,
    }
    if code.format is TraceCodeFormat.CN20:
        result["special_control"] = code.special_control
    if units_left is not None:
        result["units_left"] = units_left
    return result
