"""DUMP payloads for RESTORE, in pure Python: a hash written whole in one command, instead of
Redis inserting its fields one by one (HSET into a listpack costs it ~0.8 µs a field).

The payload is what Redis 6.2's DUMP gives for a small hash: the RDB type byte (13, a hash
as a ziplist), the ziplist as an RDB string, the RDB version (9) and a CRC-64 (Jones) of all
that. Redis 6.2 and 7.x both load it (7.x converts the ziplist to a listpack, and either
makes a hash table of a hash past `hash-max-*-entries`). The ziplist is the one 6.2's HSET
builds from the same pairs in the same order, integer-looking strings stored as integers
(tests/integration/test_bucket_loader.py compares it with 6.2's own DUMP). This is the
reference the compiled builder (service/firstseen/bucket_core.h) is held equal to; it is
too slow for millions of fields."""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

RDB_TYPE_HASH_ZIPLIST = 13
RDB_VERSION = 9
_ZIPLIST_END = b"\xff"
_INTEGER = re.compile(rb"0|-?[1-9][0-9]*")
# zipTryEncoding's integer encodings, smallest first: (low, high, encoding byte, bytes)
_INTEGERS = [(-(2**7), 2**7 - 1, 0xFE, 1), (-(2**15), 2**15 - 1, 0xC0, 2),
             (-(2**23), 2**23 - 1, 0xF0, 3), (-(2**31), 2**31 - 1, 0xD0, 4),
             (-(2**63), 2**63 - 1, 0xE0, 8)]


def _crc64_table() -> list[int]:
    reflected = 0x95AC9329AC4BC9B5  # the Jones polynomial 0xad93d23594c935a9, bit-reversed
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (reflected if crc & 1 else 0)
        table.append(crc)
    return table


_CRC64 = _crc64_table()


def crc64(data: bytes, crc: int = 0) -> int:
    """Redis's crc64(): reflected, initial value 0, no final xor."""
    for byte in data:
        crc = _CRC64[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def hash_payload(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """DUMP payload of a hash of `pairs` (distinct fields), in this order."""
    ziplist = _ziplist([piece for pair in pairs for piece in pair])
    body = bytes([RDB_TYPE_HASH_ZIPLIST]) + _rdb_length(len(ziplist)) + ziplist
    body += struct.pack("<H", RDB_VERSION)
    return body + struct.pack("<Q", crc64(body))


def _ziplist(entries: list[bytes]) -> bytes:
    encoded, previous, tail, size = [], 0, 10, 10
    for entry in entries:
        tail = size
        piece = _prevlen(previous) + _entry(entry)
        encoded.append(piece)
        previous = len(piece)
        size += previous
    count = min(len(entries), 0xFFFF)  # 0xFFFF: Redis counts them itself
    return struct.pack("<IIH", size + 1, tail, count) + b"".join(encoded) + _ZIPLIST_END


def _prevlen(size: int) -> bytes:
    return bytes([size]) if size < 254 else b"\xfe" + struct.pack("<I", size)


def _entry(data: bytes) -> bytes:
    """zipTryEncoding: a canonical int64 in decimal is kept as an integer."""
    if len(data) < 21 and _INTEGER.fullmatch(data) and -(2**63) <= int(data) < 2**63:
        value = int(data)
        if 0 <= value <= 12:
            return bytes([0xF1 + value])
        for low, high, encoding, size in _INTEGERS:
            if low <= value <= high:
                return bytes([encoding]) + value.to_bytes(size, "little", signed=True)
    if len(data) <= 0x3F:
        return bytes([len(data)]) + data
    if len(data) <= 0x3FFF:
        return struct.pack(">H", 0x4000 | len(data)) + data
    return b"\x80" + struct.pack(">I", len(data)) + data


def _rdb_length(length: int) -> bytes:
    """rdbSaveLen."""
    if length < 64:
        return bytes([length])
    if length < 16384:
        return struct.pack(">H", 0x4000 | length)
    if length <= 0xFFFF_FFFF:
        return b"\x80" + struct.pack(">I", length)
    return b"\x81" + struct.pack(">Q", length)
