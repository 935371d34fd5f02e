"""Reading fields as POS and HIS vendors really send them: numbers as strings ("2.0000"), empty
strings for absent optional fields, padding around values, times in the platform's and in a few
neighbouring spellings. Every refusal names the field where it stands in the message."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from service.kit.clock import SHANGHAI
from service.nhsa.schemas import MessageRefused

# The platform's own spelling first; the others are what exports and other systems write.
_LOCAL = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d{1,9})?$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$")
_WITH_OFFSET = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[ Tt](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def text(fields: Mapping[str, Any], name: str, where: str) -> str | None:
    """A text field: trimmed; absent, null and "" are all absent. Whole numbers are read as
    their digits (an id sent as a JSON number)."""
    value = fields.get(name)
    if value.__class__ is str:  # nearly always: the quick way first (a bulk upload's rows)
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageRefused(f"{where}.{name} must be text, not {_kind(value)}")
    return str(value)


def required_text(fields: Mapping[str, Any], name: str, where: str) -> str:
    value = text(fields, name, where)
    if value is None:
        raise MessageRefused(f"{where}.{name} is required")
    return value


def number(fields: Mapping[str, Any], name: str, where: str) -> Decimal:
    """A required number, as a JSON number or as text ("2.0000")."""
    value = fields.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    reading = text({name: value}, name, where)
    if reading is None:
        raise MessageRefused(f"{where}.{name} is required")
    parsed = _decimal(reading)
    if parsed is None:
        raise MessageRefused(f"{where}.{name} {reading!r} is not a number")
    return parsed


@lru_cache(maxsize=1 << 12)  # a file's counts are a few dozen strings ("1.0000", "2.0000")
def _decimal(reading: str) -> Decimal | None:
    try:
        parsed = Decimal(reading)
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


def flag(fields: Mapping[str, Any], name: str, where: str, allowed: tuple[str, ...]) -> str:
    value = fields.get(name)
    if value in allowed:
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    reading = required_text({name: value}, name, where)
    if reading not in allowed:
        raise MessageRefused(f"{where}.{name} must be one of {', '.join(allowed)}, "
                             f"not {reading!r}")
    return reading


def moment(fields: Mapping[str, Any], name: str, where: str) -> dt.datetime:
    """A required time: 'YYYY-MM-DD HH:MM:SS' in Asia/Shanghai (the platform's), also with a
    'T', fractional seconds or the compact 'YYYYMMDDHHMMSS', or RFC 3339 with an offset."""
    reading = required_text(fields, name, where)
    return read_moment(reading, f"{where}.{name}")


def read_moment(reading: str, where: str) -> dt.datetime:
    parsed = _parse_moment(reading)
    if parsed is None:
        raise MessageRefused(f"{where} {reading!r} is not a time: write 'YYYY-MM-DD HH:MM:SS' "
                             "(Asia/Shanghai)")
    if not _EARLIEST <= parsed < _LATEST:
        raise MessageRefused(f"{where} {reading!r} is outside 2000-2099")
    return parsed


@lru_cache(maxsize=1 << 14)  # the rows of a receipt, and busy seconds, share their time
def _parse_moment(reading: str) -> dt.datetime | None:
    try:
        return _spelled(reading)
    except ValueError:  # the shape of a time, but no such day or hour
        return None


def _spelled(reading: str) -> dt.datetime | None:
    if match := _LOCAL.match(reading):
        day, time, _ = match.groups()  # fractions of a second are dropped (seconds suffice)
        return dt.datetime.fromisoformat(f"{day} {time}").replace(tzinfo=SHANGHAI)
    if match := _COMPACT.match(reading):
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=SHANGHAI)
    if match := _WITH_OFFSET.match(reading):
        day, time, _, offset = match.groups()
        return dt.datetime.fromisoformat(f"{day}T{time}{offset.upper().replace('Z', '+00:00')}")
    return None


def day_or_moment(fields: Mapping[str, Any], name: str, where: str) -> tuple[dt.datetime, bool]:
    """An optional bound of a query: a date 'YYYY-MM-DD' (a whole local day: True) or a time.
    Raises MessageRefused; the caller checks presence first."""
    reading = required_text(fields, name, where)
    if _DATE.match(reading):
        try:
            day = dt.date.fromisoformat(reading)
        except ValueError:
            raise MessageRefused(f"{where}.{name} {reading!r} is not a date") from None
        return read_moment(f"{day} 00:00:00", f"{where}.{name}"), True
    return read_moment(reading, f"{where}.{name}"), False


def local_text(moment_: dt.datetime) -> str:
    """A time as the platform writes it: 'YYYY-MM-DD HH:MM:SS', Asia/Shanghai."""
    return moment_.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def code_list(fields: Mapping[str, Any], where: str) -> list[str]:
    """drugtracinfo: a list of {"drug_trac_codg"} (bare strings are taken too). Absent, null or
    "" is no code; an element whose code is empty is no code either. Codes keep their
    padding: the trace-code parser strips what scanners add, and the record keeps what was
    sent."""
    value = fields.get("drugtracinfo")
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        raise MessageRefused(f"{where}.drugtracinfo must be a list of "
                             f"{{\"drug_trac_codg\": ...}}, not {_kind(value)}")
    codes = [_code(item, f"{where}.drugtracinfo[{n}]") for n, item in enumerate(value)]
    return [code for code in codes if code.strip()]


def _code(item: Any, where: str) -> str:
    if isinstance(item, dict):
        item = item.get("drug_trac_codg")
        where = f"{where}.drug_trac_codg"
    if item is None:
        return ""
    if not isinstance(item, str):
        raise MessageRefused(f"{where} must be text (a trace code), not {_kind(item)}")
    return item


def section(fields: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = fields.get(name)
    if not isinstance(value, dict):
        state = "is required" if value is None else f"must be an object, not {_kind(value)}"
        raise MessageRefused(f"{where}.{name} {state}")
    return value


def rows(fields: Mapping[str, Any], name: str, where: str) -> list[dict[str, Any]]:
    value = fields.get(name)
    if not isinstance(value, list) or not value:
        state = "is required" if value in (None, []) else f"must be a list, not {_kind(value)}"
        raise MessageRefused(f"{where}.{name} {state} (a list of selinfo rows)")
    for n, row in enumerate(value):
        if not isinstance(row, dict):
            raise MessageRefused(f"{where}.{name}[{n}] must be an object, not {_kind(row)}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", bool: "true/false", float: "a number",
             int: "a number", str: "text"}
    return names.get(type(value), type(value).__name__)
