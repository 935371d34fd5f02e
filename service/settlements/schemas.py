"""What the gate's routes take besides a settlement, and the errors of the settlement path."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from service.decisions.schemas import Identifier
from service.kit.errors import Conflict, NotFound, Unavailable, Unprocessable


class ReversalRequest(msgspec.Struct, frozen=True, gc=False):
    reversal_id: Identifier
    line_nos: Annotated[list[Annotated[int, Meta(ge=1, le=100_000)]],
                        Meta(max_length=200)] | None = None


class SettlementConflict(Conflict):
    code = "SETTLEMENT_CONFLICT"


class SettlementNotFound(NotFound):
    code = "SETTLEMENT_NOT_FOUND"


class ReversalConflict(Conflict):
    code = "REVERSAL_CONFLICT"


class UnknownLine(Unprocessable):
    code = "UNKNOWN_LINE"


class RecordUnavailable(Unavailable):
    code = "RECORD_UNAVAILABLE"


class ClaimContention(Unavailable):
    code = "CLAIM_CONTENTION"

