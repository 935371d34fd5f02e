"""Claims on trace codes, as plain immutable values (msgspec Structs: cheap to build by the
thousand in a consumer batch, and `gc=False` keeps them out of the collector's scans)."""

from __future__ import annotations

import datetime as dt
from enum import IntEnum
from typing import Any

import msgspec


class FirstPayment(msgspec.Struct, frozen=True, gc=False):
    """Who paid a code first: what a repeat's reason and flag point at."""

    settlement_id: str
    institution_id: str
    paid_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"settlement_id": self.settlement_id, "institution_id": self.institution_id,
                "paid_at": self.paid_at.isoformat()}


class CodeState(msgspec.Struct, frozen=True, gc=False):
    """What the first-seen set holds for a paid code. `owner` is the token of the (settlement,
    line) that paid it first; a split pack also lists every line that sold units from it."""

    owner: int
    institution_no: int
    paid_at: int  # epoch seconds
    units_used: int | None = None
    pack_size: int | None = None
    split_owners: tuple[int, ...] = ()

    @property
    def is_split(self) -> bool:
        return self.units_used is not None


class ClaimChange(msgspec.Struct, frozen=True, gc=False):
    """A compare-and-set on one code of the first-seen set, from `expected` to `new`, made by
    the line whose token is `token`; `units` are the units a split sale sold (negative when a
    reversal gives them back)."""

    canonical: str
    line_no: int
    token: int
    expected: CodeState | None
    new: CodeState | None
    units: int | None = None

    def undone(self) -> ClaimChange:
        """The change that takes this one back (lands only while this one's `new` holds)."""
        return ClaimChange(self.canonical, self.line_no, self.token, self.new, self.expected,
                           -self.units if self.units is not None else None)

    def effect(self) -> ClaimEffect:
        """The same change as an idempotent effect (what a consumer applies after its commit,
        when the set may have moved on since it read it)."""
        new, old = self.new, self.expected
        if self.units is not None:  # a split sale, or its reversal
            kind = Effect.SELL_UNITS if self.units > 0 else Effect.RETURN_UNITS
            state = new if new is not None else old
            assert state is not None
            return ClaimEffect(kind, self.canonical, self.token, state.institution_no,
                               state.paid_at, abs(self.units), state.pack_size or 0)
        if new is not None:
            return ClaimEffect(Effect.CLAIM, self.canonical, self.token, new.institution_no,
                               new.paid_at, 0, 0)
        assert old is not None
        return ClaimEffect(Effect.RELEASE, self.canonical, self.token, old.institution_no,
                           old.paid_at, 0, 0)


class Effect(IntEnum):
    """How an effect changes a code; each is idempotent, so a sequence of them applied twice
    leaves what applying it once left (a redelivered batch re-applies its effects)."""

    CLAIM = 1  # whole pack: set if absent
    RELEASE = 2  # whole pack: remove if `token` holds it
    SELL_UNITS = 3  # split pack: open it, or add this line's units unless already listed
    RETURN_UNITS = 4  # split pack: take this line's units back if listed


class ClaimEffect(msgspec.Struct, frozen=True, gc=False, array_like=True):
    kind: Effect
    canonical: str
    token: int
    institution_no: int
    paid_at: int  # epoch seconds of the first payment (a new split pack: this sale's)
    units: int
    pack_size: int


class Payment(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A paid code of a paid line; `duplicate` when it was paid without taking the claim."""

    canonical: str
    line_no: int
    units: int | None
    duplicate: bool
