"""Trace-code values (CONTRACT §1): the three formats and the outcome of parsing one code."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

import msgspec


class TraceCodeFormat(StrEnum):
    CN20 = "cn20"  # 码上放心 national drug trace code
    GS1 = "gs1"  # GS1 DataMatrix element string
    MFR = "mfr"  # a manufacturer's own scheme


class ParsedTraceCode(msgspec.Struct, frozen=True, gc=False):
    """A valid trace code. `canonical` is the pack's identity: equal for every spelling of it."""

    text: str  # as sent, before whitespace was stripped
    format: TraceCodeFormat
    canonical: str
    product_id: str | None  # cn20 digits 1-7 (药品标识码), the GS1 GTIN-14, None for mfr
    special_control: bool  # cn20 starting "89" (特药); False for every other code
    # Attributes of a GS1 pack, deliberately outside its identity; None for the other formats.
    expiry: dt.date | None = None
    batch: str | None = None


class InvalidTraceCode(msgspec.Struct, frozen=True, gc=False):
    """A code no format accepts; `reason` is one English sentence an operator can act on."""

    text: str  # as sent
    reason: str
