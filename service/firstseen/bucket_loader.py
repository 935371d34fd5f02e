"""Files whole-pack claims under their buckets and writes each bucket whole: the pure-Python
reference of the compiled loader the rebuild uses (service/firstseen/_bucket_loader.pyx over
bucket_core.h). Both take the same input and give the same bytes; the tests hold them equal on
generated streams (tests/integration/test_bucket_loader.py).

Input: PostgreSQL's COPY (FORMAT binary) stream of every claim (code text, settlement_id
text, line_no int4, institution_id text, paid_at timestamptz, units_used int4 or NULL,
pack_size int4 or NULL), in chunks cut anywhere (service/records/claims_export.py), and the
institutions' numbers by id: the record's join, made here, where it costs PostgreSQL nothing
(a claim of an unknown institution is skipped and counted, as that inner join dropped it).
Each whole pack (units_used NULL) is addressed and encoded exactly as the gate and the
consumers do it (`Layout.locate`, `encode_state` with `owner_token`): the institution number's
low 32 bits, the day paid in UTC. Split packs are kept aside for the caller (`take_split`:
code, settlement_id, line_no, institution number, paid_at in epoch seconds, units_used,
pack_size), whose value needs the record's other lines.

Output, per slot group: one command per bucket, buckets in ascending order, fields in the
order the rows came (a field met twice keeps its first place and its last value, as HSET
does): `RESTORE key 0 <payload> REPLACE` with a DUMP payload of the whole bucket
(service/kit/redis_dump.py), or an HSET of its fields when the bucket may already hold some
(a set larger than what the rebuild buffers). `commands` drains the group it returns."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from service.claims.schemas import CodeState
from service.claims.service import owner_token
from service.firstseen.encoding import Layout, encode_state
from service.kit.redis_bulk import hset_arguments, hset_command, restore_command
from service.kit.redis_dump import hash_payload

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = struct.Struct(">11sII")  # signature, flags, header extension length
_COLUMNS = 7
_PG_EPOCH = 946_684_800  # PostgreSQL's timestamps count µs from 2000-01-01


SplitClaim = tuple[str, str, int, int, int, int, int | None]
Row = tuple[bytes, bytes, int, bytes, int, int | None, int | None]


class BucketLoader:
    def __init__(
        self, bucket_bits: int, slot_groups: int, institutions: Mapping[str, int]
    ) -> None:
        self._layout, self._numbers = Layout(bucket_bits, slot_groups), dict(institutions)
        self._split: list[SplitClaim] = []
        self.unknown_institutions = 0
        self.bucket_bits, self.slot_groups = bucket_bits, slot_groups
        self._groups: list[dict[int, dict[bytes, bytes]]] = [{} for _ in range(slot_groups)]
        self._rows_in = [0] * slot_groups
        self._rest, self._header_seen, self._ended = b"", False, False
        self.buffered = 0

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Parses and files every whole row of `data` (the rest waits for the next chunk);
        returns how many rows it filed."""
        chunk, rows, position = self._rest + bytes(data), 0, 0
        if not self._header_seen:
            header = self._header(chunk)
            if header is None:
                self._rest = chunk
                return 0
            position = header
        while position < len(chunk):
            if self._ended:
                raise ValueError("data after the end of the COPY stream")
            row = _row(chunk, position)
            if row is None:
                break
            position, columns = row
            if columns is None:
                self._ended = True
            else:
                rows += self._take(*columns)
        self._rest = chunk[position:]
        return rows

    def absorb(self, other: BucketLoader) -> None:
        """Takes over what `other` holds, behind this loader's own in each bucket (a field in
        both keeps `other`'s value); `other` stays open for more of its own stream. The
        rebuild reads the record over several connections, one loader each."""
        if (other.bucket_bits, other.slot_groups) != (self.bucket_bits, self.slot_groups):
            raise ValueError("loaders of two layouts cannot be merged")
        for group, buckets in enumerate(other._groups):
            for bucket, fields in buckets.items():
                self._groups[group].setdefault(bucket, {}).update(fields)
            self._rows_in[group] += other._rows_in[group]
        other._groups = [{} for _ in range(other.slot_groups)]
        other._rows_in = [0] * other.slot_groups
        self.buffered, other.buffered = self.buffered + other.buffered, 0
        self.unknown_institutions += other.unknown_institutions
        other.unknown_institutions = 0
        self._split += other.take_split()

    def take_split(self) -> list[SplitClaim]:
        split, self._split = self._split, []
        return split

    def finish(self) -> None:
        if not self._ended or self._rest:
            raise ValueError("the COPY stream of whole-pack claims ended early")

    def next_stream(self) -> None:
        """The stream ended (checked); the next feed begins another (its header first): one
        connection reads several partitions, one COPY each."""
        self.finish()
        self._header_seen = self._ended = False

    def commands(self, group: int, restore: bool) -> tuple[bytes, int]:
        """Every buffered bucket of `group` as one command each (RESP), and their count."""
        buckets, self._groups[group] = self._groups[group], {}
        self.buffered -= self._rows_in[group]
        self._rows_in[group] = 0
        out = []
        for bucket in sorted(buckets):
            key, pairs = self._layout.bucket_key(group, bucket), list(buckets[bucket].items())
            command = (restore_command(key, hash_payload(pairs)) if restore
                       else hset_command(key, [hset_arguments(*pair) for pair in pairs]))
            out.append(command.resp)
        return b"".join(out), len(out)

    def _header(self, chunk: bytes) -> int | None:
        """Where the rows begin, or None if the header has not all come yet."""
        if len(chunk) < _HEADER.size:
            return None
        signature, _, extension = _HEADER.unpack_from(chunk)
        start = _HEADER.size + int(extension)
        if signature != COPY_SIGNATURE:
            raise ValueError("not a COPY (FORMAT binary) stream: bad signature")
        if len(chunk) < start:
            return None
        self._header_seen = True
        return start

    def _take(self, code: bytes, sid: bytes, line_no: int, institution: bytes, paid_us: int,
              units_used: int | None, pack_size: int | None) -> int:
        """Files a whole pack (1) or keeps a split one aside (0)."""
        number = self._numbers.get(institution.decode())
        if number is None:
            self.unknown_institutions += 1
            return 0
        paid_at = paid_us // 1_000_000 + _PG_EPOCH
        if units_used is not None:
            self._split.append((code.decode(), sid.decode(), line_no, number, paid_at,
                                units_used, pack_size))
            return 0
        token = owner_token(sid.decode(), line_no)
        value = encode_state(CodeState(token, number & 0xFFFF_FFFF, paid_at))
        group, bucket, field = self._layout.locate(code.decode())
        self._groups[group].setdefault(bucket, {})[field] = value
        self._rows_in[group] += 1
        self.buffered += 1
        return 1


def _row(chunk: bytes, position: int) -> tuple[int, Row | None] | None:
    """(next position, the row's columns or None for the trailer), or None if incomplete."""
    if len(chunk) - position < 2:
        return None
    (count,) = struct.unpack_from(">h", chunk, position)
    if count == -1:
        return position + 2, None
    if count != _COLUMNS:
        raise ValueError("a claim row must have 7 columns (code, settlement id, line number, "
                         "institution, paid at, units used, pack size)")
    position += 2
    values: list[bytes | None] = []
    for column in range(_COLUMNS):
        if len(chunk) - position < 4:
            return None
        (size,) = struct.unpack_from(">i", chunk, position)
        position += 4
        if size < 0:
            if column < 5:
                raise ValueError("a claim row has a NULL column before units used")
            values.append(None)
            continue
        if len(chunk) - position < size:
            return None
        values.append(chunk[position : position + size])
        position += size
    code, sid, line_no, institution, paid_at = [v for v in values[:5] if v is not None]
    used, pack_size = values[5:]
    if len(line_no) != 4 or len(paid_at) != 8 or any(
            v is not None and len(v) != 4 for v in (used, pack_size)):
        raise ValueError("a claim row's line number, units used and pack size must be int4 "
                         "and its paid-at a timestamptz")
    return position, (code, sid, _int(line_no), institution, _int(paid_at),
                      None if used is None else _int(used),
                      None if pack_size is None else _int(pack_size))


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)
