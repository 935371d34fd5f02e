"""Rows into PostgreSQL by COPY in its binary format, encoded in one pass by compiled code
(`_pg_copy.pyx`); this module's `encode_rows` is the pure-Python reference the tests hold it
equal to, byte for byte and error for error.

Why not asyncpg's `copy_records_to_table`: it encodes every value through its generic codec
machinery (a timestamptz is an `astimezone` and a timedelta), about 2 µs of client CPU a
ten-column row; the stream writes two or three rows a trace code. The kinds below cover the
record's columns; each refuses anything else (a TypeError, never a silent conversion).

Column kinds, one letter a column (None is NULL for every kind):
    t  text         a str (its UTF-8)
    z  timestamptz  an aware datetime (naive ones are refused: whose clock would they be?)
    i  int4         an int that fits 32 bits
    b  bool         True or False
    y  bytea        bytes
    j  json         bytes of JSON text (PostgreSQL checks it and keeps it as it came)
    J  jsonb        bytes of JSON text (sent with jsonb's version byte; PostgreSQL parses it)
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from service.kit._pg_copy import encode_rows as _compiled_encode_rows

KINDS = "tzibyjJ"
HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, no flags, no header extension
TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_BYTES_KINDS = {"y": "bytea", "j": "json", "J": "jsonb"}


@dataclass(frozen=True, slots=True)
class CopyTable:
    """A table's columns as COPY writes them, with their kinds."""

    name: str
    columns: tuple[str, ...]
    kinds: str

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.kinds):
            raise ValueError(f"{self.name}: {len(self.columns)} columns, {len(self.kinds)} kinds")
        check_kinds(self.kinds)


def check_kinds(kinds: str) -> None:
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown column kind(s) {', '.join(map(repr, unknown))}")


async def copy_rows(
    connection: asyncpg.Connection, table: CopyTable, rows: Sequence[Sequence[Any]]
) -> None:
    """COPY `rows` into `table` (nothing to do for none)."""
    if rows:
        payload = _compiled_encode_rows(rows, table.kinds)
        await connection.copy_to_table(table.name, source=_once(payload),
                                       columns=list(table.columns), format="binary")


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    # An async iterable, not a file: asyncpg reads files through a thread.
    yield payload


# --- the reference encoding ---------------------------------------------------------------


def encode_rows(rows: Iterable[Sequence[Any]], kinds: str) -> bytes:
    """The COPY ... (FORMAT binary) payload of `rows`, one kind letter a column."""
    check_kinds(kinds)
    width = struct.pack(">h", len(kinds))
    out = [HEADER]
    for row in rows:
        if len(row) != len(kinds):
            raise ValueError(f"a row of {len(row)} values for {len(kinds)} columns")
        out.append(width)
        out += [encode_field(kind, value) for kind, value in zip(kinds, row, strict=True)]
    out.append(TRAILER)
    return b"".join(out)


def encode_field(kind: str, value: Any) -> bytes:
    """One field: its length (-1 for NULL), then its bytes."""
    if value is None:
        return _NULL
    if kind == "t":
        return _sized(_expect(value, str, "text", "a str").encode())
    if kind == "z":
        return struct.pack(">iq", 8, _micros(value))
    if kind == "i":
        return struct.pack(">ii", 4, _int4(value))
    if kind == "b":
        return struct.pack(">i?", 1, _expect_exact(value, bool, "bool", "True or False"))
    data = _expect_exact(value, bytes, _BYTES_KINDS[kind], "bytes")
    return _sized(b"\x01" + data if kind == "J" else data)


def _sized(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def _micros(value: Any) -> int:
    """µs since PostgreSQL's epoch, 2000-01-01 UTC."""
    moment = _expect_exact(value, dt.datetime, "timestamptz", "a datetime")
    if moment.utcoffset() is None:
        raise ValueError("timestamptz wants an aware datetime, not a naive one")
    micros: int = (moment - _PG_EPOCH) // _MICROSECOND
    return micros


def _int4(value: Any) -> int:
    number: int = _expect_exact(value, int, "int4", "an int")
    if not -(2**31) <= number < 2**31:
        raise OverflowError(f"{number} does not fit int4")
    return number


def _expect(value: Any, kind: type, column: str, wanted: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{column} wants {wanted}, not {type(value).__name__}")
    return value


def _expect_exact(value: Any, kind: type, column: str, wanted: str) -> Any:
    # bool is an int and a datetime subclass could carry any clock: the type itself only.
    if type(value) is not kind:
        raise TypeError(f"{column} wants {wanted}, not {type(value).__name__}")
    return value
