"""SQL of the regulator's reads of the record that the hot path never makes (a settlement's
reversals), apart from repository.py, which is the gate's and the consumers'."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

# Through the API's lookup pool, whose JSON arrives as its bytes (repository.json_as_bytes).
# The reversals table is indexed on settlement_id.
_REVERSALS_OF = """
SELECT reversal_id, line_nos, answer -> 'released' AS released, reversed_at
FROM reversals WHERE settlement_id = $1
ORDER BY reversed_at, recorded_at, reversal_id
"""


async def reversals_of(lookups: asyncpg.Pool, settlement_id: str) -> list[dict[str, Any]]:
    """Every recorded reversal of one settlement, in the order they were made."""
    return [{"reversal_id": row[0], "line_nos": _json(row[1]), "released": _json(row[2]),
             "reversed_at": row[3]}
            for row in await lookups.fetch(_REVERSALS_OF, settlement_id)]


def _json(raw: bytes | None) -> Any:
    return None if raw is None else msgspec.json.decode(raw)
