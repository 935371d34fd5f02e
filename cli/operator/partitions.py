"""`tracegate partitions ensure`: monthly code_events partitions ahead of time, on PostgreSQL
directly (DDL: the API has no business creating tables)."""

from __future__ import annotations

import argparse

from cli.operator import environment, parsing, render
from cli.operator.database import unit_of_work
from service.kit import event_loop
from service.records.partitions import ensure_code_event_partitions
from service.settings import Settings


def ensure(args: argparse.Namespace) -> int:
    created = event_loop.run(_ensure(environment.settings(args), args.months))
    if created:
        render.out("created " + ", ".join(created))
    else:
        render.out(f"every partition of this month and the {args.months} after it exists")
    return 0


async def _ensure(settings: Settings, months: int) -> list[str]:
    async with unit_of_work(settings) as session:
        # The one call site of the records' partition logic (issue 19 may grow it).
        return await ensure_code_event_partitions(session, months_ahead=months)


def register(sub: parsing.SubParsers) -> None:
    actions = parsing.group(sub, "partitions", "code_events partitions (PostgreSQL directly)")
    ahead = parsing.command(actions, "ensure", "create the monthly code_events partitions of "
                            "this month and the months ahead that are missing (idempotent; "
                            "run it monthly)", environment.DATABASE_VARIABLES, ensure)
    ahead.add_argument("--months", type=int, default=12,
                       help="months ahead of this one (Asia/Shanghai) to cover (default 12)")
