"""`tracegate rebuild-hot-set`: reload the Redis first-seen set from PostgreSQL, with a
progress bar."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from service.firstseen import rebuild
from service.firstseen.encoding import Layout
from service.kit import event_loop
from service.kit.garbage_collection import tune_for_throughput
from service.kit.redis_client import build_redis
from service.settings import Settings


def rebuild_hot_set(settings: Settings) -> int:
    tune_for_throughput()
    started = time.perf_counter()
    total = event_loop.run(_rebuild(settings))
    elapsed = time.perf_counter() - started
    rate = total / elapsed if elapsed else 0.0
    sys.stdout.write(f"rebuilt {total} codes in {elapsed:.1f} s ({rate:,.0f} codes/s)\n")
    return 0


async def _rebuild(settings: Settings) -> int:
    redis = build_redis(settings.redis_url, cluster=settings.redis_cluster)
    layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    try:
        with tqdm(unit=" codes", desc="rebuild", file=sys.stderr) as bar:
            done = await rebuild.rebuild_exclusively(
                settings.asyncpg_dsn, redis, layout, bar.update
            )
            if not done:
                raise SystemExit("another rebuild holds the lock; try again when it is done")
            return int(bar.n)
    finally:
        await redis.aclose()
