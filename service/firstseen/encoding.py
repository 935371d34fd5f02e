"""Compact layout of the first-seen set (pure, no I/O).

A code lives as one field of one Redis hash, never as a key of its own (a key costs ~105 B):
  key   tg:fs{G}:B   G = slot group (a Redis Cluster hash tag), B = bucket within the group
  field 6 bytes of SHA-256(canonical code), beyond the bits already spent on G and B
  value 10 bytes for a whole pack: owner token and institution number (u32), the day paid
        (u16, days since 2020-01-01); split packs add units_used and pack_size (u16) and the
        token of every line that sold units from the pack.
Sized so a bucket holds ~64 fields (buckets x 64 = expected codes), Redis keeps each hash as
a listpack (ziplist in 6.2; up to 512 fields, so a set may outgrow its sizing 8x): measured
~21.5 B per code. Redis finds a field by scanning the listpack, so fuller buckets cost CPU on
every read and claim (see settings.py). Identity is 48 field bits plus the group and bucket
bits (65 with the default layout); a collision would show as a duplicate whose first payment the
record does not know, and PostgreSQL stays the arbiter of first payments. The rebuild does the
same arithmetic in compiled code (service/firstseen/bucket_core.h; its reference,
bucket_loader.py, is built on this module, and tests/integration/test_rebuild_encoding.py
holds the record's stream through it equal to this).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import lru_cache

from service.claims.schemas import CodeState

_WHOLE = struct.Struct(">IIH")
_SPLIT_HEAD = struct.Struct(">IIHHH")
_TOKEN = struct.Struct(">I")
_EPOCH = 1_577_836_800  # 2020-01-01T00:00:00Z
_DAY = 86_400
FIELD_BYTES = 6
CODES_PER_BUCKET = 64
# 2: owner tokens are CRC-32 (were BLAKE2b-32), so the rebuild can compute them in SQL.
# 3: addresses come from SHA-256 (were BLAKE2b), for the same reason.
ENCODING_VERSION = 3
_ADDRESS = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class CodeAddress:
    group: int
    bucket_key: str
    field: bytes


@dataclass(frozen=True, slots=True)
class Layout:
    bucket_bits: int
    slot_groups: int

    def address(self, canonical: str) -> CodeAddress:
        """A code's key and field, spelled out (tests and tools; the hot path uses `place`)."""
        group, bucket, field = self.place(canonical)
        return CodeAddress(group, _bucket_key(group, bucket), field)

    def locate(self, canonical: str) -> tuple[int, int, bytes]:
        """(group, bucket, field) without the memo or the key text: for bulk loads, which
        meet each code once and write a bucket's fields together."""
        return _locate(self.bucket_bits, self.slot_groups, canonical)

    def place(self, canonical: str) -> tuple[int, int, bytes]:
        """(group, bucket, field), memoised: a consumer batch meets each code two or three
        times (read, effects, forgetting its pending detail)."""
        return _place(self.bucket_bits, self.slot_groups, canonical)

    def bucket_key(self, group: int, bucket: int) -> str:
        return _bucket_key(group, bucket)

    @property
    def tag(self) -> str:
        """The layout and the encoding version, as generation markers carry them (the
        scripts build a marker's name from it: tg:gen{G}:<tag>)."""
        return f"v{ENCODING_VERSION}:{self.slot_groups}x{self.bucket_bits}"

    def generation_key(self, group: int) -> str:
        """Set once the group is complete; Redis losing its data loses this marker too. The
        name carries the layout and the encoding version, so a changed layout or encoding
        finds no marker and is rebuilt."""
        return f"tg:gen{{{group}}}:{self.tag}"

    def generation_keys(self) -> list[str]:
        return [self.generation_key(group) for group in range(self.slot_groups)]

    def pending_key(self, group: int) -> str:
        """Details of claims not yet durable in PostgreSQL, in the same slot as the group."""
        return f"tg:pd{{{group}}}"


def paid_day(paid_at: int) -> int:
    """What a state keeps of the time paid: days since 2020-01-01 (u16)."""
    return max(0, min(0xFFFF, (paid_at - _EPOCH) // _DAY))


def encode_state(state: CodeState) -> bytes:
    day = paid_day(state.paid_at)
    if state.units_used is None or state.pack_size is None:
        return _WHOLE.pack(state.owner, state.institution_no, day)
    head = _SPLIT_HEAD.pack(
        state.owner, state.institution_no, day, state.units_used, state.pack_size
    )
    return head + b"".join(_TOKEN.pack(token) for token in state.split_owners)


def decode_state(raw: bytes) -> CodeState:
    """`paid_at` comes back at day resolution (the record keeps the exact instant)."""
    if len(raw) == _WHOLE.size:
        owner, institution_no, day = _WHOLE.unpack(raw)
        return CodeState(owner, institution_no, _EPOCH + day * _DAY)
    owner, institution_no, day, used, pack_size = _SPLIT_HEAD.unpack_from(raw)
    tail = raw[_SPLIT_HEAD.size :]
    tokens = tuple(token for (token,) in _TOKEN.iter_unpack(tail))
    return CodeState(owner, institution_no, _EPOCH + day * _DAY, used, pack_size, tokens)


@lru_cache(maxsize=1 << 17)
def _place(bucket_bits: int, slot_groups: int, canonical: str) -> tuple[int, int, bytes]:
    return _locate(bucket_bits, slot_groups, canonical)


def _locate(bucket_bits: int, slot_groups: int, canonical: str) -> tuple[int, int, bytes]:
    digest = hashlib.sha256(canonical.encode()).digest()
    high, low = _ADDRESS.unpack_from(digest)
    group = (high & 0x7FFF_FFFF) % slot_groups  # 31 bits: SQL reads them as a signed int4
    bucket = low & ((1 << bucket_bits) - 1)
    return group, bucket, digest[8 : 8 + FIELD_BYTES]


def _bucket_key(group: int, bucket: int) -> str:
    return f"tg:fs{{{group}}}:{bucket}"
