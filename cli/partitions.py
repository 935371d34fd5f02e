"""`tracegate partitions ensure`: create the code_events months to come now (what `migrate` and
the running services do on their own), and say how far ahead the partitions reach."""

from __future__ import annotations

import sys

from service.kit import event_loop
from service.records.partitions import PartitionStatus, ensure_code_event_partitions
from service.settings import Settings


def ensure_partitions(settings: Settings) -> int:
    status = event_loop.run(ensure_code_event_partitions(settings))
    sys.stdout.write(describe(status) + "\n")
    return 0


def describe(status: PartitionStatus) -> str:
    made = (f"created {', '.join(status.created)} ({status.rows_moved} rows moved from the "
            "default partition)" if status.created else "nothing to create")
    return f"code_events partitions: {made}; {status.months_ahead} months ahead"
