"""What a batch does to `code_claims`, netted in the batch's order before it is written: a pack
paid, reversed and paid again within one batch is one insert (the last payer's), not an
insert, a delete and a conflicting insert. Pure bookkeeping; the repository writes it."""

from __future__ import annotations

import datetime as dt

import msgspec


class ClaimInsert(msgspec.Struct, gc=False):
    code: str
    settlement_id: str
    line_no: int
    institution_id: str
    paid_at: dt.datetime


class SplitDelta(msgspec.Struct, gc=False):
    """Units a batch adds to (or takes from) an opened pack; the opener's columns are used
    only if the record has no row for the pack yet."""

    code: str
    settlement_id: str
    line_no: int
    institution_id: str
    paid_at: dt.datetime
    units: int
    pack_size: int | None


class ClaimLedger(msgspec.Struct, gc=False):
    inserts: dict[str, ClaimInsert] = {}
    # A second first payment of a code within the batch (only the gate's can be: it is not
    # decided again): the record's arbiter judges it like a claim PostgreSQL refuses.
    contested: list[ClaimInsert] = []
    deletes: list[tuple[str, str]] = []  # (code, settlement_id) claimed before the batch
    split: dict[str, SplitDelta] = {}

    def claim(self, claim: ClaimInsert) -> None:
        if claim.code in self.inserts:
            self.contested.append(claim)
        else:
            self.inserts[claim.code] = claim

    def release(self, code: str, settlement_id: str) -> None:
        held = self.inserts.get(code)
        if held is not None and held.settlement_id == settlement_id:
            del self.inserts[code]  # claimed and given back within the batch: nothing to write
        else:
            self.deletes.append((code, settlement_id))

    def add_units(self, delta: SplitDelta) -> None:
        known = self.split.get(delta.code)
        if known is None:
            self.split[delta.code] = delta
        else:
            known.units += delta.units
