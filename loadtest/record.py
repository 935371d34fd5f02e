"""What the record costs PostgreSQL per code: after a stream run, the rows and bytes (heap,
indexes and TOAST, every partition) of each record table, divided by the run's codes. The
capacity model (SCALE.md) sizes the national database from these."""

from __future__ import annotations

from typing import Any

import asyncpg

TABLES = ("settlements", "code_events", "code_claims", "flags", "reversals", "institution_stats")

# A partitioned table's size is the sum of its partitions' (it holds no rows itself); for a
# plain table pg_partition_tree lists nothing, and the table's own size is the answer.
_SIZE = """
SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree($1::regclass)),
                pg_total_relation_size($1::regclass))::bigint
"""


async def measure_record(dsn: str, codes: int) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("ANALYZE")
        tables = {}
        for table in TABLES:
            rows = await connection.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            tables[table] = {"rows": rows, "bytes": await connection.fetchval(_SIZE, table)}
    finally:
        await connection.close()
    total = sum(t["bytes"] for t in tables.values())
    return {
        "codes": codes, "tables": tables,
        "bytes_per_code": round(total / codes, 1) if codes else None,
        "rows_per_code": {name: round(t["rows"] / codes, 4) for name, t in tables.items()}
        if codes else {},
    }
