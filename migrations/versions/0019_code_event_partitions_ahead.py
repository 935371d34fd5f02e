"""code_events partitions kept ahead: a function that creates the months to come, idempotently,
moving any of their rows out of the default partition first; run once here.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONTHS_AHEAD = 3  # settings.partition_months_ahead's default; the services keep it after this

# In the database, not in Python, so that the standard Alembic CLI, `tracegate migrate`, the
# running services and `tracegate partitions ensure` all do exactly the same thing, and two of
# them at once serialise on one advisory lock.
#
# PostgreSQL refuses to create a partition whose range has rows in the default partition (a
# settlement dated beyond the last month, recorded before its month was made): such a month's
# table is created detached, the rows are moved into it, and it is attached, all in the
# caller's transaction, so no row is ever in neither place. Months are Asia/Shanghai months,
# as in 0001 (a settlement's local day decides its month).
ENSURE = """
CREATE OR REPLACE FUNCTION tracegate_ensure_code_event_partitions(
    months_ahead integer,
    today date DEFAULT (now() AT TIME ZONE 'Asia/Shanghai')::date
) RETURNS TABLE (partition_name text, rows_moved bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    first_month date := date_trunc('month', today)::date;
    month_start date;
    lower_bound timestamptz;
    upper_bound timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('tracegate.code_events.partitions'));
    FOR step IN 0..months_ahead LOOP
        month_start := (first_month + make_interval(months => step))::date;
        partition_name := 'code_events_y' || to_char(month_start, 'YYYY')
                          || 'm' || to_char(month_start, 'MM');
        CONTINUE WHEN to_regclass(partition_name) IS NOT NULL;
        lower_bound := month_start::timestamp AT TIME ZONE 'Asia/Shanghai';
        upper_bound := (month_start + interval '1 month')::timestamp AT TIME ZONE 'Asia/Shanghai';
        EXECUTE format('CREATE TABLE %I (LIKE code_events INCLUDING DEFAULTS '
                       'INCLUDING CONSTRAINTS)', partition_name);
        EXECUTE format('WITH gone AS (DELETE FROM code_events_default WHERE event_at >= $1 '
                       'AND event_at < $2 RETURNING *) INSERT INTO %I SELECT * FROM gone',
                       partition_name) USING lower_bound, upper_bound;
        GET DIAGNOSTICS rows_moved = ROW_COUNT;
        EXECUTE format('ALTER TABLE code_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       partition_name, lower_bound, upper_bound);
        RETURN NEXT;
    END LOOP;
END
$fn$;
"""


def upgrade() -> None:
    op.execute(ENSURE)
    op.execute(f"SELECT count(*) FROM tracegate_ensure_code_event_partitions({MONTHS_AHEAD})")


def downgrade() -> None:
    # The months it created stay: they are partitions of 0001's table, dropped with it.
    op.execute("DROP FUNCTION tracegate_ensure_code_event_partitions(integer, date)")
