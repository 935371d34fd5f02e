"""Issue 5 item 2: Redis loses the first-seen set mid-stream (FLUSHALL; redis-server killed with
SIGKILL and started again empty on its port; the consumer that rebuilds the set killed in the
middle of it; the set lost while Redis refuses writes, so that it cannot be rebuilt for a
while). While the set is missing the gate answers 503 HOT_SET_REBUILDING and claims
nothing, the consumers pause; the set is rebuilt from PostgreSQL and everything carries on:
no missed duplicate (the gate's and the stream's), no false flag."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from httpx import Response
from redis.asyncio import Redis

from service.firstseen import rebuild
from service.firstseen.encoding import Layout
from service.firstseen.rebuild import LOCK_KEY
from service.settings import Settings
from tests.faults.gate import Gate, error_code
from tests.faults.processes import OwnServers, own_servers
from tests.faults.scale import Scale
from tests.faults.scenario import ScenarioReport, StreamRun, gated_stream, isolated
from tests.faults.workload import Workload

PAUSE_S = 2.0  # how long the record must stand still while the set is missing
# A consumer waiting for the set may try its batch now and then, not in a tight loop.
QUIET_ROLLBACKS_PER_S = 10.0
TEST_LOCK = "held-by-the-fault-test"
WRITES_REFUSED_S = 3.0
LATE_RECOVERY_S = 45.0  # how much longer to wait for the set, to say when it came back


@dataclass(frozen=True, slots=True)
class _Paid:
    """A code whose first payment is already in PostgreSQL (so a rebuild must restore it)."""

    code: str
    settlement_id: str
    institution: str


class _Scenario:
    def __init__(
        self, stream: StreamRun, gate: Gate, servers: OwnServers, scale: Scale, run: int
    ) -> None:
        self.stream = stream
        self.scale = scale
        self.gate = gate
        self.servers = servers
        self.report = stream.report
        self.workload: Workload = stream.workload
        self.truth = stream.workload.truth
        self.rng = random.Random(run)
        self.ids = itertools.count(1)
        self.codes_by_settlement: dict[str, list[str]] = {}
        for code, (sid, _) in self.truth.owners.items():
            self.codes_by_settlement.setdefault(sid, []).append(code)

    def redis(self) -> Redis:
        return Redis.from_url(self.stream.settings.redis_url, socket_timeout=5)

    def gate_id(self) -> str:
        return f"{self.truth.prefix}G{next(self.ids):05d}"

    async def settle(self, institution: str, code: str, sid: str | None = None) -> Response:
        """At the gate; a settlement refused with 503 must never reach the record."""
        sid = sid or self.gate_id()
        response = await self.gate.settle(sid, institution, code)
        if response.status_code == 503:
            self.truth.refused.add(sid)
        return response

    def institution_other_than(self, institution: str) -> str:
        return self.rng.choice([i for i in self.workload.institutions if i != institution])

    async def recorded_code(self) -> _Paid:
        """A code of the stream whose first payment the record holds now."""
        while True:
            sid = f"{self.truth.prefix}{self.rng.randrange(1, len(self.truth.settlements)):07d}"
            if sid in self.codes_by_settlement and await self._is_recorded(sid):
                return _Paid(self.rng.choice(self.codes_by_settlement[sid]), sid,
                             self.truth.settlements[sid])

    async def _is_recorded(self, settlement_id: str) -> bool:
        response = await self.gate.http.get(f"/v1/settlements/{settlement_id}",
                                            headers=self.gate.admin)
        return response.status_code == 200

    # --- the faults ------------------------------------------------------------------------

    async def flush_while_rebuild_is_held(self) -> None:
        """FLUSHALL, and hold the rebuild lock for a while (atomically, so no consumer can
        rebuild at once): the window in which the set is missing, made long enough to see."""
        paid = await self.recorded_code()
        async with self.redis() as redis, redis.pipeline(transaction=True) as pipe:
            pipe.flushall()
            pipe.set(LOCK_KEY, TEST_LOCK, ex=60)
            await pipe.execute()
        self.report.fault(f"FLUSHALL at {self.stream.recorded.last} recorded settlements "
                          f"(rebuild held off for {PAUSE_S:.0f}s)")
        institution, attempt = await self.gate_refuses_while_missing(paid, "")
        await asyncio.sleep(1.0)  # a batch past its Redis round trips may still commit
        cpu_before, paused = self.stream.consumer.cpu_seconds(), time.monotonic()
        rollbacks_before = await self.rollbacks()
        moved = await self.stream.recorded.grows(PAUSE_S)
        await asyncio.sleep(1.0)
        rollbacks = (await self.rollbacks() - rollbacks_before) / (time.monotonic() - paused)
        cpu = (self.stream.consumer.cpu_seconds() - cpu_before) / (time.monotonic() - paused)
        self.report.observe(f"consumer at {cpu:.0%} CPU while it waited for the set, "
                            f"{rollbacks:.0f} transactions/s rolled back")
        self.report.check("consumers_wait_quietly", rollbacks < QUIET_ROLLBACKS_PER_S,
                          f"while the set was missing the consumer rolled back {rollbacks:.0f} "
                          f"transactions/s at {cpu:.0%} CPU: it retries its batch in a loop")
        self.report.check("consumers_pause", not moved,
                          "the record grew while the first-seen set was missing")
        async with self.redis() as redis:
            await redis.delete(LOCK_KEY)
        await self.after_recovery(paid, institution, attempt)

    async def restart_redis(self) -> None:
        """redis-server killed with SIGKILL (it keeps nothing) and started again on its port."""
        paid = await self.recorded_code()
        await asyncio.to_thread(self.servers.kill_redis)
        self.report.fault(f"SIGKILL redis-server at {self.stream.recorded.last} recorded "
                          "settlements, restarted empty on the same port")
        attempt = self.workload.code(next(self.ids))
        institution = self.institution_other_than(paid.institution)
        refused = await self.settle(institution, attempt)
        self.report.check("gate_503_while_set_missing", refused.status_code == 503,
                          f"gate answered {refused.status_code} with Redis down")
        ready = await self.gate.readiness()
        self.report.check("readyz_reports_redis", ready.unreachable("redis"),
                          f"/readyz said {ready.status} {ready.checks} with Redis down")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(self.servers.restart_redis)
        await self.after_recovery(paid, institution, attempt)

    async def kill_the_rebuilder(self) -> None:
        """FLUSHALL, then SIGKILL the consumer while it holds the rebuild lock (it is
        rebuilding), and start it again: the set must still be rebuilt soon."""
        paid = await self.recorded_code()
        async with self.redis() as redis:
            await redis.flushall()
            caught = await _wait_for_key(redis, LOCK_KEY, timeout_s=10.0)
            self.stream.revive()
            if caught:
                self.stream.consumer.kill()
                self.stream.consumer.start()
            killed = time.monotonic()
        self.report.fault(f"FLUSHALL at {self.stream.recorded.last} recorded settlements, then "
                          + ("SIGKILL of the consumer rebuilding the set" if caught else
                             "no rebuild seen to kill"))
        self.report.check("rebuild_seen", caught, "no consumer took the rebuild lock in 10 s")
        institution = self.institution_other_than(paid.institution)
        attempt = self.workload.code(next(self.ids))
        if not await self.set_complete():  # else the kill came after the rebuild's last step
            refused = await self.settle(institution, attempt)
            self.report.check(
                "gate_503_while_set_missing",
                refused.status_code == 503 and error_code(refused) == "HOT_SET_REBUILDING",
                f"gate answered {refused.status_code} {refused.text[:200]} mid-rebuild")
        limit = self.scale.rebuild_recovery_s
        recovered = await self.wait_for_set(killed + limit)
        self.report.check(
            "rebuild_survives_a_crash", recovered,
            f"the set was still missing {limit:.0f}s after its rebuilder was killed "
            f"(lock {LOCK_KEY} TTL then {await self._lock_ttl()}s)")
        if not recovered:  # how much longer, then what an operator would do
            recovered = await self.wait_for_set(killed + limit + LATE_RECOVERY_S)
            if not recovered:
                async with self.redis() as redis:
                    await redis.delete(LOCK_KEY)
                self.report.observe(f"deleted the dead rebuilder's {LOCK_KEY} by hand")
        self.report.observe(
            f"set rebuilt {time.monotonic() - killed:.1f}s after its rebuilder was killed"
            if recovered else "set not rebuilt after its rebuilder was killed")
        await self.after_recovery(paid, institution, attempt)

    async def refuse_writes_while_set_missing(self) -> None:
        """FLUSHALL while Redis refuses every write (maxmemory reached, as when the set
        outgrows it): nobody can rebuild the set until Redis takes writes again. The
        consumers must wait that out, not exit."""
        paid = await self.recorded_code()
        async with self.redis() as redis, redis.pipeline(transaction=True) as pipe:
            pipe.flushall()
            pipe.config_set("maxmemory", "1")
            await pipe.execute()
        self.report.fault(f"FLUSHALL at {self.stream.recorded.last} recorded settlements with "
                          f"Redis refusing writes (maxmemory) for {WRITES_REFUSED_S:.0f}s")
        institution, attempt = await self.gate_refuses_while_missing(
            paid, " and Redis refusing writes")
        await asyncio.sleep(WRITES_REFUSED_S)  # batches meet the missing set, try to rebuild
        async with self.redis() as redis:
            await redis.config_set("maxmemory", "0")
        self.stream.revive()
        await self.after_recovery(paid, institution, attempt)

    async def gate_refuses_while_missing(
        self, paid: _Paid, context: str, attempt: str | None = None,
        check: str = "gate_503_while_set_missing",
    ) -> tuple[str, str]:
        """A fresh code (`attempt`, else a new one) settled at another institution while the
        set, or the part of it holding that code, is missing: the gate must answer 503
        HOT_SET_REBUILDING with a Retry-After. Returns (institution, code) for
        `after_recovery` to check that the refused attempt claimed nothing."""
        attempt = attempt or self.workload.code(next(self.ids))
        institution = self.institution_other_than(paid.institution)
        refused = await self.settle(institution, attempt)
        self.report.check(
            check,
            refused.status_code == 503 and error_code(refused) == "HOT_SET_REBUILDING"
            and int(refused.headers.get("Retry-After", "0")) > 0,
            f"gate answered {refused.status_code} {refused.text[:200]} with the set "
            f"missing{context}")
        return institution, attempt

    async def rollbacks(self) -> int:
        connection = await asyncpg.connect(self.stream.settings.asyncpg_dsn)
        try:
            count: int = await connection.fetchval(
                "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()")
            return count
        finally:
            await connection.close()

    async def set_complete(self) -> bool:
        settings = self.stream.settings
        layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
        async with self.redis() as redis:
            return await rebuild.complete(redis, layout)

    async def _lock_ttl(self) -> int:
        async with self.redis() as redis:
            ttl: int = await redis.ttl(LOCK_KEY)
            return ttl

    # --- after each fault --------------------------------------------------------------------

    async def wait_for_set(self, deadline: float) -> bool:
        """True once verify answers again (the set is whole) before `deadline` (monotonic)."""
        probe = self.workload.code(0)
        while time.monotonic() < deadline:
            if await self.gate.status(self.workload.institutions[0], probe) == "unpaid":
                return True
            await asyncio.sleep(0.2)
        return False

    async def after_recovery(self, paid: _Paid, institution: str, refused_code: str) -> None:
        """Once the set is back: the code paid before the loss is a duplicate at the gate,
        the code of the refused attempt is unpaid and can be paid now."""
        begin = time.monotonic()
        answers: list[str] = []
        while True:
            sid = self.gate_id()
            response = await self.settle(institution, paid.code, sid)
            if response.status_code != 503 or time.monotonic() - begin > 60:
                break
            answers.append(str(error_code(response)))
            await asyncio.sleep(0.2)
        self.report.observe(
            f"set back {time.monotonic() - begin:.1f}s after the fault was over; "
            f"gate 503s meanwhile: {_tally(answers)}")
        body = response.json() if response.status_code == 200 else {}
        reasons = body.get("lines", [{}])[0].get("reasons", []) if body else []
        first = reasons[0].get("first_payment", {}) if reasons else {}
        if self.report.check(
            "no_missed_duplicate",
            response.status_code == 200 and body.get("decision") == "reject"
            and bool(reasons) and reasons[0]["code"] == "DUPLICATE_PAYMENT"
            and first.get("settlement_id") == paid.settlement_id,
            f"{paid.code} paid by {paid.settlement_id} before the loss; the gate then said "
            f"{response.status_code} {response.text[:300]}",
        ):
            self.truth.refuse_reuse(sid, institution, 1, paid.code)
        status = await self.gate.status(institution, refused_code)
        self.report.check("refused_attempt_claims_nothing", status == "unpaid",
                          f"{refused_code}: refused with 503, then verify says {status}")
        sid = self.gate_id()
        response = await self.gate.settle(sid, institution, refused_code)
        if self.report.check("refused_attempt_claims_nothing",
                             response.status_code == 200 and response.json()["decision"] == "pay",
                             f"{refused_code} again: {response.status_code} {response.text[:200]}"):
            self.truth.pay(sid, institution, 1, [refused_code])


async def _wait_for_key(redis: Redis, key: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not await redis.exists(key):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


def _tally(answers: list[str]) -> str:
    counts = {answer: answers.count(answer) for answer in dict.fromkeys(answers)}
    return ", ".join(f"{n}x {answer}" for answer, n in counts.items()) or "none"


async def redis_loss(base: Settings, workdir: Path, scale: Scale) -> ScenarioReport:
    async with own_servers(workdir) as servers:
        redis = await asyncio.to_thread(servers.start_redis)
        # one Redis server of its own to kill and flush, whatever the suite's runs on
        settings = isolated(base, "redis", redis_url=redis.url, redis_cluster=False)
        return await _run(settings, servers, workdir, scale)


async def _run(
    settings: Settings, servers: OwnServers, workdir: Path, scale: Scale
) -> ScenarioReport:
    report = ScenarioReport("redis-loss", scale.name)
    async with gated_stream(settings, workdir, report, scale.redis_codes) as (stream, gate, run):
        scenario = _Scenario(stream, gate, servers, scale, run)
        faults = [scenario.flush_while_rebuild_is_held] * scale.redis_flushes
        faults += [scenario.restart_redis] * scale.redis_restarts
        faults += [scenario.kill_the_rebuilder, scenario.refuse_writes_while_set_missing]
        scenario.rng.shuffle(faults)
        stream.start(codes_per_s=scale.feed_rate)
        for number, fault in enumerate(faults, start=1):
            fraction = 0.85 * number / (len(faults) + 1)
            following = 0.85 * (number + 1) / (len(faults) + 1) if number < len(faults) else 1.0
            if not await stream.reach(fraction, at_least=stream.recorded.last + 1,
                                      until=following):
                break
            await fault()
        await stream.finish()
    return report
