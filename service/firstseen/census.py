"""How many codes the first-seen set holds, for the tracegate_hot_set_codes gauge.

A code is one field of one bucket hash, so the count is the sum of the buckets' HLEN, added up
inside Redis by a script (one call per run of buckets, a few milliseconds of Redis time each,
no key names on the wire). A layout of up to `MAX_BUCKETS` buckets (the default one has
131,072) is counted exactly; a larger one (a national set over a cluster) is estimated from
runs of buckets at random, which is sound because codes are spread over buckets by their hash.
Meant to be sampled every few seconds at most, never per call."""

from __future__ import annotations

import random

from service.firstseen.encoding import Layout
from service.kit.redis_client import LuaScript, RedisClient, ScriptCall, run_script

MAX_BUCKETS = 1 << 17
RUN = 4096  # buckets per script call: a few ms of Redis time, so other clients hardly wait

# KEYS[1]: the run's first bucket (routes the call to the node owning the group's slot; every
# bucket of a group shares its hash tag). ARGV: the bucket key prefix, first bucket, count.
_COUNT_FIELDS = LuaScript("""
local n = 0
local first = tonumber(ARGV[2])
for bucket = first, first + tonumber(ARGV[3]) - 1 do
  n = n + redis.call('HLEN', ARGV[1] .. bucket)
end
return n
""")


async def count_codes(redis: RedisClient, layout: Layout, max_buckets: int = MAX_BUCKETS) -> int:
    """Codes in the set: exact up to `max_buckets` buckets, estimated beyond."""
    per_group = 1 << layout.bucket_bits
    total = per_group * layout.slot_groups
    runs = _runs(layout, per_group, total, max_buckets)
    calls: list[ScriptCall] = [
        ([layout.bucket_key(group, first)], [_prefix(layout, group), str(first), str(count)])
        for group, first, count in runs
    ]
    replies = await run_script(redis, _COUNT_FIELDS, calls)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    counted = sum(int(reply) for reply in replies)
    scanned = sum(count for _, _, count in runs)
    return counted if scanned == total else round(counted * total / scanned)


def _runs(
    layout: Layout, per_group: int, total: int, max_buckets: int
) -> list[tuple[int, int, int]]:
    """(group, first bucket, count) of every run to count: all of them when the layout is
    small enough, else `max_buckets` worth of runs at random places."""
    length = min(RUN, per_group)
    if total <= max_buckets:
        return [(group, first, length) for group in range(layout.slot_groups)
                for first in range(0, per_group, length)]
    chosen = random.Random()
    return [(chosen.randrange(layout.slot_groups), chosen.randrange(0, per_group, length),
             length) for _ in range(max(1, max_buckets // length))]


def _prefix(layout: Layout, group: int) -> str:
    """The group's bucket keys less the bucket number (bucket 0's key ends in "0")."""
    return layout.bucket_key(group, 0).removesuffix("0")
