"""Issue 15 item 3: a consumer killed with SIGKILL at each point of one batch that holds whole
chains (a pack paid, reversed and paid again; an opened pack sold, returned, sold to its end
and beyond; a settlement and a reversal each delivered twice), then a consumer started afresh
to finish the stream. The record, the first-seen set and the flags topic must equal what the
workload's ground truth (loadtest/truth.py, independent of service/) says, at every point.

The whole stream is produced before the first consumer starts, on one partition, and fits one
batch: every chain is decided inside the batch the kill interrupts."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from cli.devstack.process import spawn
from loadtest.stack import register
from loadtest.truth import HistoryEvent, Truth, simulate
from loadtest.workload import Institution, generate
from service.claims.service import owner_token
from service.firstseen.encoding import Layout
from service.firstseen.store import FirstSeenStore
from service.kit.redis_client import build_redis
from service.settings import Settings
from tests import factories as f
from tests.faults.processes import PROJECT_ROOT, ConsumerProcess, tracegate_env
from tests.faults.scenario import isolated
from tests.faults.stream import read_topic, wait_group_caught_up

SETTLED = "2025-07-15T12:00:00+08:00"  # after every go-live: everything is enforced


@dataclass
class CrashOutcome:
    point: str
    exit_code: int | None
    problems: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)


@dataclass
class _Workload:
    prefix: str
    institutions: list[Institution]
    bodies: list[dict[str, Any]]
    truth: Truth

    @property
    def codes(self) -> list[str]:
        return sorted({code for body in self.bodies for line in body.get("lines", ())
                       for code in line["trace_codes"]})


def workload(settlements: int) -> _Workload:
    """A generated stream (loadtest/workload.py) renamed into this run's ids and codes, with
    the chains the issue names written out in front of it."""
    prefix = f"CP{secrets.token_hex(4)}"
    generated = generate(settlements, seed=secrets.randbelow(10**6), partitions=1)
    rename = _Renamer(prefix)
    bodies = [rename.body(event.body) for event in generated.events]
    institutions = [Institution(rename.institution(i.institution_id), i.kind, None)
                    for i in generated.institutions if i.institution_id in rename.institutions]
    chains, extra = _chains(prefix, rename)
    institutions += extra
    every = [*chains, *bodies]
    return _Workload(prefix, institutions, every, simulate(institutions, every))


class _Renamer:
    """Fresh settlement ids, institution ids and cn20 codes for a generated stream (the
    generator's are the same in every run, and runs share one database)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.codes: dict[str, str] = {}
        self.institutions: dict[str, str] = {}

    def institution(self, original: str) -> str:
        if original not in self.institutions:
            self.institutions[original] = f.institution_id()
        return self.institutions[original]

    def code(self, original: str) -> str:
        if not (len(original) == 20 and original.startswith("8")):
            return original  # an invalid code stays invalid
        if original not in self.codes:
            self.codes[original] = f.cn20()
        return self.codes[original]

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        renamed = {**body, "settlement_id": f"{self.prefix}-{body['settlement_id']}"}
        if body["type"] == "reversal":
            return {**renamed, "reversal_id": f"{self.prefix}-{body['reversal_id']}"}
        renamed["institution_id"] = self.institution(body["institution_id"])
        renamed["lines"] = [{**line, "trace_codes": [self.code(c) for c in line["trace_codes"]]}
                            for line in body["lines"]]
        return renamed


def _chains(prefix: str, rename: _Renamer) -> tuple[list[dict[str, Any]], list[Institution]]:
    one, two, three = (Institution(f.institution_id(), "retail_pharmacy", None) for _ in range(3))
    x, y, pack = f.cn20(), f.cn20(), f.cn20()
    counter = iter(range(1, 100))

    def sale(institution: Institution, line: dict[str, Any]) -> dict[str, Any]:
        return {"type": "settlement", "source": "stream",
                "settlement_id": f"{prefix}-CH-{next(counter):02d}",
                "institution_id": institution.institution_id, "settled_at": SETTLED,
                "lines": [{"line_no": 1, "drug_code": "XC09AAL012A001010100543", **line}]}

    def whole(code: str) -> dict[str, Any]:
        return {"quantity": 1, "split": False, "trace_codes": [code]}

    def split(units: int) -> dict[str, Any]:
        return {"quantity": units, "split": True, "pack_size": 10, "trace_codes": [pack]}

    def reversal(of: dict[str, Any]) -> dict[str, Any]:
        sid = of["settlement_id"]
        return {"type": "reversal", "source": "stream", "settlement_id": sid,
                "reversal_id": f"R-{sid}"}

    paid, again, third = sale(one, whole(x)), sale(two, whole(x)), sale(three, whole(x))
    opened, more, to_end = sale(one, split(3)), sale(one, split(4)), sale(one, split(6))
    beyond, elsewhere = sale(one, split(1)), sale(two, split(1))
    twice, after = sale(one, whole(y)), sale(two, whole(y))
    chain = [paid, reversal(paid), again, third,  # pay -> reverse -> re-sell -> duplicate
             opened, more, reversal(opened), to_end, beyond, elsewhere,  # a pack's life
             twice, twice, reversal(twice), reversal(twice), after]  # copies of each
    return chain, [one, two, three]


async def produce(settings: Settings, bodies: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=False)
    await producer.start()
    try:
        sends = [await producer.send(settings.topic_settlements, orjson.dumps(body),
                                     key=body["settlement_id"].encode(), partition=0)
                 for body in bodies]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def crash_at(
    point: str, base: Settings, workdir: Path, settlements: int, batch: int | None = None,
    occurrence: int = 1,
) -> CrashOutcome:
    """Killed the `occurrence`th time a batch reaches `point`; with `batch` (events a batch at
    most), the stream is many batches, each decided while the one before is written."""
    name = f"cp-{point}" if batch is None else f"cp-{point}-b{batch}"
    overrides = {} if batch is None else {"consumer_max_batch": batch}
    settings = isolated(base, name, settlements_partitions=1, **overrides)
    run = workload(settlements)
    await register(settings.asyncpg_dsn, run.institutions)
    await produce(settings, run.bodies)
    outcome = CrashOutcome(point, await _crashing(settings, workdir / f"{name}.log", point,
                                                  occurrence))
    finisher = ConsumerProcess("finisher", settings, workdir / f"{name}-finisher.log")
    finisher.start()
    try:
        behind = await wait_group_caught_up(settings.kafka_bootstrap,
                                            settings.topic_settlements, settings.consumer_group,
                                            120.0, lambda: None)
    finally:
        finisher.stop()
    if behind:
        outcome.problems.append(f"{behind} events never consumed:\n{finisher.log()[-2000:]}")
    await audit(settings, run, outcome)
    return outcome


async def _crashing(
    settings: Settings, log_path: Path, point: str, occurrence: int
) -> int | None:
    """The crashing consumer, until it killed itself (or gave up waiting for it)."""
    child = spawn(f"crash-{point}",
                  [sys.executable, "-m", "tests.faults.crashing_consumer", point,
                   str(occurrence)],
                  log_path=log_path, env=tracegate_env(settings), cwd=PROJECT_ROOT,
                  grace_seconds=5.0)
    for _ in range(1200):  # 60 s
        if not child.alive():
            break
        await asyncio.sleep(0.05)
    child.stop()
    return child.returncode


async def audit(settings: Settings, run: _Workload, outcome: CrashOutcome) -> None:
    connection = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await _flags(connection, run, outcome)
        await _histories(connection, run, outcome)
        await _claims(connection, run, outcome)
    finally:
        await connection.close()
    await _first_seen(settings, run, outcome)
    await _topic(settings, run, outcome)


async def _flags(connection: Any, run: _Workload, outcome: CrashOutcome) -> None:
    rows = await connection.fetch(
        "SELECT kind, settlement_id, line_no, trace_code FROM flags "
        "WHERE settlement_id LIKE $1", f"{run.prefix}-%")
    got = {(r["kind"], r["settlement_id"], r["line_no"], r["trace_code"]) for r in rows}
    outcome.figures["flags"] = len(rows)
    for key in sorted(run.truth.flags - got, key=str):
        outcome.problems.append(f"missing flag {key}")
    for key in sorted(got - run.truth.flags, key=str):
        outcome.problems.append(f"false flag {key}")


async def _histories(connection: Any, run: _Workload, outcome: CrashOutcome) -> None:
    rows = await connection.fetch(
        "SELECT code, type, settlement_id, line_no, duplicate FROM code_events "
        "WHERE code = ANY($1::text[])", run.codes)
    got: dict[str, Counter[HistoryEvent]] = {}
    for r in rows:
        got.setdefault(r["code"], Counter())[
            (r["type"], r["settlement_id"], r["line_no"], r["duplicate"])] += 1
    want = {code: Counter(events) for code, events in run.truth.histories.items()}
    outcome.figures["history_events"] = len(rows)
    for code in sorted(set(got) | set(want)):
        if got.get(code, Counter()) != want.get(code, Counter()):
            outcome.problems.append(f"history of {code}: recorded {sorted(got.get(code, {}))}"
                                    f", expected {sorted(want.get(code, {}))}")


async def _claims(connection: Any, run: _Workload, outcome: CrashOutcome) -> None:
    rows = await connection.fetch(
        "SELECT code, settlement_id, line_no, units_used FROM code_claims "
        "WHERE code = ANY($1::text[])", run.codes)
    got = {r["code"]: (r["settlement_id"], r["line_no"]) if r["units_used"] is None else None
           for r in rows}
    outcome.figures["claims"] = len(rows)
    if got != run.truth.holders:
        wrong = sorted(c for c in set(got) | set(run.truth.holders)
                       if got.get(c, "absent") != run.truth.holders.get(c, "absent"))
        outcome.problems.append(f"claims differ for {len(wrong)} codes, e.g. {wrong[:3]}")


async def _first_seen(settings: Settings, run: _Workload, outcome: CrashOutcome) -> None:
    """Redis holds what the record does: each whole pack under its first payer's token, each
    open pack with its units, nothing else."""
    redis = build_redis(settings.redis_url, cluster=settings.redis_cluster)
    try:
        store = FirstSeenStore(redis, Layout(settings.hotset_bucket_bits,
                                             settings.hotset_slot_groups))
        seen = await store.read(run.codes)
    finally:
        await redis.aclose()
    for code in run.codes:
        state, holder = seen[code].state, run.truth.holders.get(code, "absent")
        if holder == "absent":
            ok = state is None
        elif holder is None:  # an open split pack
            ok = state is not None and state.is_split
        else:
            ok = state is not None and not state.is_split and state.owner == owner_token(*holder)
        if not ok:
            outcome.problems.append(f"first-seen set: {code} is {state}, the record {holder}")


async def _topic(settings: Settings, run: _Workload, outcome: CrashOutcome) -> None:
    """Every recorded flag reached the flags topic (a crash between publishing and marking
    may send one twice: at least once is the topic's promise), none that is not due."""
    published = [orjson.loads(r.value) for r in
                 await read_topic(settings.kafka_bootstrap, settings.topic_flags)]
    keys = {(flag["kind"], flag["settlement_id"], flag["line_no"], flag["trace_code"])
            for flag in published}
    for key in sorted(run.truth.flags - keys, key=str):
        outcome.problems.append(f"flag never published {key}")
    for key in sorted(keys - run.truth.flags, key=str):
        outcome.problems.append(f"flag published but not due {key}")
