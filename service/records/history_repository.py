"""SQL of the regulator's reads of the record that the hot path never makes (a settlement's
reversals), apart from repository.py, which is the gate's and the consumers'."""

from __future__ import annotations

from typing import Any

import asyncpg

# Through the API's lookup pool (asyncpg, JSON codecs installed): `line_nos` and `released`
# arrive decoded. The reversals table is indexed on settlement_id.
_REVERSALS_OF = """
SELECT reversal_id, line_nos, answer -> 'released' AS released, reversed_at
FROM reversals WHERE settlement_id = $1
ORDER BY reversed_at, recorded_at, reversal_id
"""


async def reversals_of(lookups: asyncpg.Pool, settlement_id: str) -> list[dict[str, Any]]:
    """Every recorded reversal of one settlement, in the order they were made."""
    return [dict(row) for row in await lookups.fetch(_REVERSALS_OF, settlement_id)]
