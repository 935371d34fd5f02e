"""Bulk uploads (CONTRACT §8, §5): each line of a platform's export is a 3505 or 3505A
message, mapped exactly as POST /v1/nhsa maps it and encoded as the settlements topic carries a
settlement that did not pass the gate (`"source": "stream"`): the consumers decide it by the
same rules, and what the gate would have refused becomes a claw-back flag. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.nhsa import mapping
from service.nhsa.schemas import Infno, MessageRefused, Sale


@dataclass(frozen=True, slots=True)
class Refused:
    line: int  # of the file, from 1
    rows: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "rows": self.rows, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class StreamEvent:
    line: int  # of the file
    institution_id: str
    key: bytes  # the settlement_id: Kafka keeps one settlement's events in order
    value: bytes
    rows: int
    codes: int


@dataclass(slots=True)
class Encoded:
    rows: int = 0
    events: list[StreamEvent] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def encode_line(line: bytes, number: int, pack_sizes: Mapping[str, int]) -> Encoded:
    """One line of the file: its settlements as topic events, and the rows that cannot be
    sent with why. A receipt with a row that cannot be read is refused whole."""
    try:
        body = orjson.loads(line)
        envelope = mapping.read_envelope(body)
        if envelope.infno not in (Infno.SALE, Infno.SALES):
            raise MessageRefused(f"infno {envelope.infno.value} is not a sale; a bulk upload "
                                 "takes 3505 and 3505A (returns go to POST /v1/nhsa)")
        groups = mapping.sale_groups(envelope)
    except (orjson.JSONDecodeError, MessageRefused) as exc:
        rows = _rows_in(line)
        reason = exc.message if isinstance(exc, MessageRefused) else f"not JSON: {exc}"
        return Encoded(rows, [], [Refused(number, rows, reason)])
    encoded = Encoded(sum(group.row_count for group in groups))
    for group in groups:
        if group.refusal is not None:
            encoded.refused.append(Refused(number, group.row_count, group.refusal))
            continue
        try:
            sale = mapping.to_sale(envelope.fixmedins_code, group, pack_sizes)
            mapping.settlement(sale)  # what the consumers would dead-letter is refused here
        except MessageRefused as exc:
            encoded.refused.append(Refused(number, group.row_count, exc.message))
            continue
        encoded.events.append(_event(number, envelope.fixmedins_code, sale, group.row_count))
    return encoded


def _event(line: int, institution_id: str, sale: Sale, rows: int) -> StreamEvent:
    value = orjson.dumps({"type": "settlement", "source": "stream", **sale.body})
    return StreamEvent(line, institution_id, sale.settlement_id.encode(), value, rows,
                       sale.codes)


def _rows_in(line: bytes) -> int:
    """How many sale rows a message that cannot be read stood for, as far as it can be told."""
    try:
        detail = orjson.loads(line).get("input", {}).get("selinfoDetail")
    except (orjson.JSONDecodeError, AttributeError):
        return 1
    return len(detail) if isinstance(detail, list) and detail else 1
