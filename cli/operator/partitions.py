"""`tracegate partitions ensure`: create the code_events months to come now (what `migrate` and
the running services do on their own), on PostgreSQL directly (DDL: the API has no business
creating tables), and say how far ahead the partitions reach."""

from __future__ import annotations

import argparse

import asyncpg

from cli.operator import environment, parsing, render
from cli.operator.environment import OperatorError
from service.kit import event_loop
from service.records.partitions import PartitionStatus, ensure_code_event_partitions
from service.settings import Settings


def ensure(args: argparse.Namespace) -> int:
    try:
        return ensure_and_say(environment.settings(args), args.months)
    except (OSError, asyncpg.PostgresError) as exc:
        raise OperatorError(f"cannot keep the partitions ahead: {exc}") from exc


def ensure_and_say(settings: Settings, months: int | None = None) -> int:
    """Also `tracegate migrate`'s last step."""
    status = event_loop.run(ensure_code_event_partitions(settings, months=months))
    render.out(describe(status))
    return 0


def describe(status: PartitionStatus) -> str:
    made = (f"created {', '.join(status.created)} ({status.rows_moved} rows moved from the "
            "default partition)" if status.created else "nothing to create")
    return f"code_events partitions: {made}; {status.months_ahead} months ahead"


def _months(text: str) -> int:
    months = int(text)
    if months < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return months


def register(sub: parsing.SubParsers) -> None:
    actions = parsing.group(sub, "partitions", "code_events partitions (PostgreSQL directly)")
    ahead = parsing.command(
        actions, "ensure", "create the monthly code_events partitions of this month and the "
        "months ahead that are missing (idempotent; migrate and every running API and "
        "consumer do it too, hourly)",
        (*environment.DATABASE_VARIABLES, "TRACEGATE_PARTITION_MONTHS_AHEAD"), ensure)
    ahead.add_argument("--months", type=_months, default=None,
                       help="months ahead of this one (Asia/Shanghai) to cover this time "
                       "(default TRACEGATE_PARTITION_MONTHS_AHEAD, 3)")
