"""Compact layout of the first-seen set (pure, no I/O).

A code lives as one field of one Redis hash, never as a key of its own (a key costs ~105 B):
  key   tg:fs{G}:B   G = slot group (a Redis Cluster hash tag), B = bucket within the group
  field 8 bytes of BLAKE2b(canonical code) — the bytes not already spent on G and B
  value 12 bytes for a whole pack: owner token, institution number, paid_at (u32 each);
        split packs add units_used and pack_size (u16) and the token of every selling line.
With a few hundred fields per bucket Redis keeps each hash as a listpack, ~24 B per code.
Field collisions are possible in principle (64+ bits); they surface as a duplicate that
PostgreSQL, the arbiter, does not confirm, and are resolved there.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from service.decisions.schemas import CodeState

_WHOLE = struct.Struct(">III")
_SPLIT_HEAD = struct.Struct(">IIIHH")
_TOKEN = struct.Struct(">I")


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
        digest = hashlib.blake2b(canonical.encode(), digest_size=16).digest()
        high = int.from_bytes(digest[:8], "big")
        group = high % self.slot_groups
        bucket = (high // self.slot_groups) % (1 << self.bucket_bits)
        return CodeAddress(group, f"tg:fs{{{group}}}:{bucket}", digest[8:])

    def generation_key(self, group: int) -> str:
        """Set once the group is complete; Redis losing its data loses this marker too."""
        return f"tg:gen{{{group}}}"

    def generation_keys(self) -> list[str]:
        return [self.generation_key(group) for group in range(self.slot_groups)]

    def pending_key(self, group: int) -> str:
        """Details of claims not yet durable in PostgreSQL, in the same slot as the group."""
        return f"tg:pd{{{group}}}"


def encode_state(state: CodeState) -> bytes:
    if state.units_used is None or state.pack_size is None:
        return _WHOLE.pack(state.owner, state.institution_no, state.paid_at)
    head = _SPLIT_HEAD.pack(
        state.owner, state.institution_no, state.paid_at, state.units_used, state.pack_size
    )
    return head + b"".join(_TOKEN.pack(token) for token in state.split_owners)


def decode_state(raw: bytes) -> CodeState:
    if len(raw) == _WHOLE.size:
        return CodeState(*_WHOLE.unpack(raw))
    owner, institution_no, paid_at, used, pack_size = _SPLIT_HEAD.unpack_from(raw)
    tail = raw[_SPLIT_HEAD.size :]
    tokens = tuple(token for (token,) in _TOKEN.iter_unpack(tail))
    return CodeState(owner, institution_no, paid_at, used, pack_size, tokens)
