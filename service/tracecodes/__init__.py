"""Drug trace codes (药品追溯码, CONTRACT §1): pure parsing into format and canonical identity."""

from __future__ import annotations

from service.tracecodes.schemas import InvalidTraceCode, ParsedTraceCode, TraceCodeFormat
from service.tracecodes.service import gtin_check_digit, parse_trace_code

__all__ = [
    "InvalidTraceCode",
    "ParsedTraceCode",
    "TraceCodeFormat",
    "gtin_check_digit",
    "parse_trace_code",
]
