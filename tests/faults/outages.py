"""Issue 5 item 3: servers going away mid-stream, on a stack of the scenario's own (PostgreSQL,
Redis and a broker that nobody else uses):
- the broker suspended (SIGSTOP): the gate answers 503 RECORD_UNAVAILABLE and keeps no claim,
  also after the broker is back; /readyz says kafka unreachable while it lasts; the consumer
  resumes after SIGCONT;
- PostgreSQL stopped while a consumer writes a batch (its transaction open), started again on
  the same data and port: the batch is retried, nothing lost or doubled; /readyz says postgres
  unreachable while it is down;
- Redis suspended: /readyz says redis unreachable while it lasts.
The stream's record must equal its ground truth at the end."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import httpx

from service.settings import Settings
from tests.faults.gate import Gate, Readiness, error_code
from tests.faults.processes import OwnServers, own_servers, suspended
from tests.faults.scale import Scale
from tests.faults.scenario import (
    ScenarioReport,
    StreamRun,
    gated_stream,
    isolated,
    wait_for_batch_writing,
)

RECOVERY_S = 30.0

class _Scenario:
    def __init__(self, stream: StreamRun, gate: Gate, servers: OwnServers, scale: Scale) -> None:
        self.stream = stream
        self.gate = gate
        self.servers = servers
        self.scale = scale
        self.report = stream.report
        self.workload = stream.workload
        self.ids = itertools.count(1)
        self.refused: list[tuple[str, str, str]] = []  # (settlement_id, institution, code)

    def attempt(self) -> tuple[str, str, str]:
        number = next(self.ids)
        institutions = self.workload.institutions
        return (f"{self.workload.truth.prefix}G{number:05d}",
                institutions[number % len(institutions)], self.workload.code(number))

    def answered(self, response: httpx.Response, sid: str, institution: str, code: str) -> None:
        """A refusal (503) must never reach the record; a payment must."""
        if response.status_code == 503:
            self.refused.append((sid, institution, code))
            self.workload.truth.refused.add(sid)
        elif response.status_code == 200 and response.json()["decision"] == "pay":
            self.workload.truth.pay(sid, institution, 1, [code])

    def check_readiness(self, component: str, seen: list[Readiness], ended: float) -> None:
        """Every /readyz asked while `component` was away said so."""
        during = [r for r in seen if r.finished <= ended]
        self.report.observe(f"/readyz asked {len(during)}x while {component} was away: "
                            f"{sum(r.unreachable(component) for r in during)}x unreachable")
        self.report.check(
            f"readyz_reports_{component}",
            bool(during) and all(r.unreachable(component) for r in during),
            f"/readyz during the {component} outage: "
            f"{[(r.status, r.checks) for r in during][:5]}")

    async def check_recovered(self, component: str) -> None:
        ready = await self.gate.wait_ready(RECOVERY_S)
        self.report.check("readyz_recovers", ready.status == 200,
                          f"/readyz still {ready.status} {ready.checks} "
                          f"{RECOVERY_S:.0f}s after {component} came back")
        stood = await self.stream.progresses(RECOVERY_S)
        self.report.check("consumers_progress", stood is None,
                          f"{stood} after {component} came back")

    # --- the faults ------------------------------------------------------------------------

    async def broker_stop(self) -> None:
        """Gate calls at the start of the stop, and one that gives up (answers 503) about a
        second before the broker resumes, its send still in flight then."""
        assert self.servers.kafka is not None
        stop_s = self.scale.broker_stop_s
        late = max(0.0, stop_s - self.stream.settings.gate_publish_timeout_s - 1.0)
        with suspended(self.servers.kafka):
            stopped = time.monotonic()
            ends = stopped + stop_s
            self.report.fault(f"SIGSTOP broker for {stop_s:.0f}s at "
                              f"{self.stream.recorded.last} recorded settlements")
            calls = [asyncio.create_task(self.settle_at(stopped + delay))
                     for delay in sorted({0.0, late})]
            seen = await self.gate.readiness_until(ends)
            answers = [await call for call in calls]
            overran = time.monotonic() - ends
        self.check_readiness("kafka", seen, ends)
        for (sid, institution, code), response, status in answers:
            self.report.check(
                "gate_503_when_broker_down",
                response.status_code == 503 and error_code(response) == "RECORD_UNAVAILABLE",
                f"gate answered {response.status_code} {response.text[:200]} with the broker "
                "down")
            self.report.check("gate_releases_its_claim", status == "unpaid",
                              f"{code}: refused with 503, then verify said {status} (broker down)")
            self.answered(response, sid, institution, code)
        if overran > 1.0:
            self.report.observe(f"the broker stayed stopped {overran:.1f}s longer than planned")
        await self.check_recovered("kafka")

    async def settle_at(
        self, when: float
    ) -> tuple[tuple[str, str, str], httpx.Response, str]:
        """A gate call at `when` (monotonic), and what verify says of its code right after."""
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        sid, institution, code = attempt = self.attempt()
        response = await self.gate.settle(sid, institution, code)
        return attempt, response, await self.gate.status(institution, code)

    async def postgres_restart(self) -> None:
        with self.stream.unheld():  # a batch must be on its way to meet the stop
            mid_batch = await wait_for_batch_writing(self.stream.settings.asyncpg_dsn, 15.0)
            log_mark = len(self.stream.consumer.log())
            await asyncio.to_thread(self.servers.stop_postgres)
        stopped = time.monotonic()
        ends = stopped + self.scale.postgres_down_s
        self.report.fault(
            f"PostgreSQL stopped (fast shutdown) for {self.scale.postgres_down_s:.0f}s at "
            f"{self.stream.recorded.last} recorded settlements, "
            + ("while the consumer wrote a batch" if mid_batch else "no batch seen being written"))
        sid, institution, code = self.attempt()
        response = await self.gate.settle(sid, institution, code)
        self.report.check("gate_503_when_postgres_down", response.status_code == 503,
                          f"gate answered {response.status_code} with PostgreSQL down")
        seen = await self.gate.readiness_until(ends)
        self.check_readiness("postgres", seen, ends)
        await asyncio.to_thread(self.servers.restart_postgres)
        await self.check_recovered("postgres")
        retried = "failed; retrying" in self.stream.consumer.log()[log_mark:]
        self.report.check("batch_retried", retried,
                          "the consumer log shows no batch retried after PostgreSQL went away")
        status = await self.gate.status(institution, code)
        self.report.check("gate_releases_its_claim", status == "unpaid",
                          f"{code}: refused with PostgreSQL down, then verify said {status}")
        self.answered(response, sid, institution, code)

    async def redis_stop(self) -> None:
        assert self.servers.redis is not None
        with suspended(self.servers.redis):
            ends = time.monotonic() + self.scale.redis_stop_s
            self.report.fault(f"SIGSTOP Redis for {self.scale.redis_stop_s:.0f}s at "
                              f"{self.stream.recorded.last} recorded settlements")
            seen = await self.gate.readiness_until(ends)
        self.check_readiness("redis", seen, ends)
        await self.check_recovered("redis")

    async def refused_stay_unclaimed(self) -> None:
        """Once everything is consumed: no settlement the gate refused reached the record,
        none of their codes is paid (a send the gate gave up on must not arrive later)."""
        for sid, institution, code in self.refused:
            status = await self.gate.status(institution, code)
            recorded = await self.gate.http.get(f"/v1/settlements/{sid}",
                                                headers=self.gate.admin)
            self.report.check(
                "refused_never_recorded", status == "unpaid" and recorded.status_code == 404,
                f"{sid} was refused with 503, yet after the stream verify says {code} is "
                f"{status} and GET /v1/settlements/{sid} is {recorded.status_code}")


async def outages(base: Settings, workdir: Path, scale: Scale) -> ScenarioReport:
    async with own_servers(workdir) as servers:
        postgres = await asyncio.to_thread(servers.start_postgres)
        redis = await asyncio.to_thread(servers.start_redis)
        kafka = await asyncio.to_thread(servers.start_kafka)
        settings = isolated(base, "outages", database_url=postgres.url, redis_url=redis.url,
                            redis_cluster=False, kafka_bootstrap=kafka.bootstrap)
        return await _run(settings, servers, workdir, scale)


async def _run(
    settings: Settings, servers: OwnServers, workdir: Path, scale: Scale
) -> ScenarioReport:
    report = ScenarioReport("outages", scale.name)
    async with gated_stream(settings, workdir, report, scale.outage_codes) as (stream, gate, _):
        scenario = _Scenario(stream, gate, servers, scale)
        stream.start(codes_per_s=scale.feed_rate)
        faults = ((0.15, scenario.broker_stop), (0.4, scenario.postgres_restart),
                  (0.65, scenario.redis_stop))
        for number, (fraction, fault) in enumerate(faults):
            following = faults[number + 1][0] if number + 1 < len(faults) else 1.0
            if not await stream.reach(fraction, at_least=stream.recorded.last + 1,
                                      until=following):
                break
            await fault()
        await stream.drain()
        await scenario.refused_stay_unclaimed()
        await stream.close()
    return report
