"""Claim leases: a consumer batch holds one from before its first claim until its transaction
commits, and a rebuild waits for every lease that existed when it took the set down.

Without them a rebuild could run entirely between a batch's claims in Redis and its commit:
it clears the claims, reads a record that lacks them, and the set forgets codes that are
paid (the record would still flag a later sale; the gate would pay it). A lease is one key
with a time to live, so a consumer that dies holds a rebuild up for at most LEASE_TTL_S; a
batch that outlives its lease rolls back instead of committing, since the rebuild no longer
waits for it."""

from __future__ import annotations

import asyncio
import uuid
from types import TracebackType

from service.kit.errors import Unavailable
from service.kit.redis_client import RedisClient

LEASE_PREFIX = "tg:lease:"
LEASE_TTL_S = 30
_POLL_S = 0.02


class LeaseLost(Unavailable):
    """The batch ran past its lease: a rebuild may have read the record without it."""

    code = "CLAIM_LEASE_LOST"


class ClaimLease:
    """`async with ClaimLease(redis) as lease: … await lease.confirm()` around a batch's
    claims and its commit; the key is removed on the way out, whatever happened."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self.key = f"{LEASE_PREFIX}{uuid.uuid4().hex}"

    async def __aenter__(self) -> ClaimLease:
        await self._redis.set(self.key, b"1", ex=LEASE_TTL_S)
        return self

    async def confirm(self) -> None:
        """Right before the commit: still held (and renewed), or the batch must not commit."""
        if not await self._redis.set(self.key, b"1", ex=LEASE_TTL_S, xx=True):
            raise LeaseLost("the batch outlived its claim lease; it is decided again")

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._redis.delete(self.key)


async def wait_for_leases(redis: RedisClient) -> int:
    """Wait until the leases held now are gone (committed, rolled back or expired); returns
    how many there were. Called once the generation markers are down: leases taken after
    that cannot claim anything, so only these matter (a retrying consumer's new leases must
    not hold the rebuild up forever). `confirm` renews a lease once, so none outlives
    2 × LEASE_TTL_S."""
    held = [key async for key in redis.scan_iter(match=f"{LEASE_PREFIX}*", count=1000)]
    # Polled: the keys live in Redis, not this process. One command, split by slot on a cluster.
    while held and await redis.exists(*held):  # noqa: ASYNC110
        await asyncio.sleep(_POLL_S)
    return len(held)
