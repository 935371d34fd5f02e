"""The reads of the sales query (3513) over the record. At 1,000亿 code events neither read
scans: a code's events are an index probe per monthly partition of `code_events` (a hash
index on the code; partitions before the range are pruned), and an institution's sales are
one range scan of the settlements index on (institution_id, settled_at), bounded to a month,
their returns a probe of the reversals index on settlement_id each."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.records.models import CodeEvent


@dataclass(frozen=True, slots=True)
class SaleEvent:
    """A sale of one code (a payment) or its return (a reversal), with the time of the sale
    it belongs to (rows are ordered by their sale, each sale followed by its returns)."""

    code: str
    institution_id: str
    settlement_id: str
    line_no: int
    type: str  # "sale" | "return"
    units: int | None  # units of a split sale; None for a whole pack
    at: dt.datetime
    sale_at: dt.datetime

    @property
    def order(self) -> tuple[dt.datetime, str, int, str, bool, dt.datetime]:
        return (self.sale_at, self.settlement_id, self.line_no, self.code,
                self.type == "return", self.at)


async def code_events(
    session: AsyncSession, code: str, institution_id: str | None, since: dt.datetime | None
) -> list[CodeEvent]:
    """Every payment and reversal of one code from `since` on (a return is never older than
    its sale, so the sales' lower bound serves both)."""
    query = select(CodeEvent).where(CodeEvent.code == code)
    if since is not None:
        query = query.where(CodeEvent.event_at >= since)
    if institution_id is not None:
        query = query.where(CodeEvent.institution_id == institution_id)
    return list((await session.execute(query)).scalars())


# Each paid code of each line of the institution's settlements in the range (`paid_codes`:
# [canonical, units, duplicate] per code, as the record keeps a line), and each return of
# it: a reversal of its line (line_nos null = every line) that released the code. A line is
# an array (records.schemas.RecordedLine: line_no first, paid_codes tenth) or, written
# before that form, an object (NamedRecordedLine); ->> of a key is null on an array and
# ->> of a position null on an object, so coalesce reads both.
_INSTITUTION_SALES = text("""
WITH sales AS (
    SELECT s.settlement_id, s.settled_at,
           coalesce(l.value->>0, l.value->>'line_no')::int AS line_no,
           p.value->>0 AS code, (p.value->>1)::int AS units
    FROM settlements s
    CROSS JOIN LATERAL json_array_elements(s.lines) AS l
    CROSS JOIN LATERAL json_array_elements(coalesce(l.value->9, l.value->'paid_codes')) AS p
    WHERE s.institution_id = :institution_id
      AND s.settled_at >= :since AND s.settled_at < :until
)
SELECT code, settlement_id, line_no, 'sale' AS type, units, settled_at AS at,
       settled_at AS sale_at
FROM sales
UNION ALL
SELECT sales.code, sales.settlement_id, sales.line_no, 'return', sales.units, r.reversed_at,
       sales.settled_at
FROM sales
JOIN reversals r ON r.settlement_id = sales.settlement_id
 AND (r.line_nos IS NULL OR r.line_nos @> to_jsonb(sales.line_no))
 AND r.answer->'released' ? sales.code
ORDER BY sale_at, settlement_id, line_no, code, type DESC, at
LIMIT :limit OFFSET :offset
""")


async def institution_sales(
    session: AsyncSession, institution_id: str, since: dt.datetime, until: dt.datetime,
    limit: int, offset: int,
) -> list[SaleEvent]:
    params = {"institution_id": institution_id, "since": since, "until": until,
              "limit": limit, "offset": offset}
    rows = (await session.execute(_INSTITUTION_SALES, params)).all()
    return [SaleEvent(code, institution_id, sid, line_no, kind, units, at, sale_at)
            for code, sid, line_no, kind, units, at, sale_at in rows]
