"""`tracegate loadtest gate`: the real API (`tracegate api`, uvicorn, API_WORKERS processes) under
open-loop load from a separate process, at fixed arrival rates. Kafka's acknowledgement is in
every answer (the gate answers after it). No consumer runs meanwhile: the gate alone is
measured. Each rate also counts the CPU a call cost every process (the API's workers, the
servers, the load generator), from its first call until the generator has every answer: on a
machine whose cores they all share, that sum bounds the rate it can carry."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import orjson

from cli.devstack.process import ChildProcess
from loadtest.cpu import CpuMeter, meter_for, per_unit_us
from loadtest.stack import ADMIN_KEY, Stack, api_port, create_topics, reset_record
from loadtest.stats import summary_ms
from loadtest.workload import Institution
from service.kit.redis_client import build_redis

RATES = (500, 1000, 2000, 4000)
# One uvicorn worker per core: the gate is CPU-bound in Python (~2.5 ms of CPU a call here),
# and a single process saturates near 400-550 calls/s on this machine.
API_WORKERS = 2


def run_gate(
    stack: Stack, institutions: Sequence[Institution], rates: Sequence[int], seconds: float,
    run: str,
) -> list[dict[str, Any]]:
    asyncio.run(_reset(stack, run))
    port = api_port()
    env = stack.env(run, TRACEGATE_API_HOST="127.0.0.1", TRACEGATE_API_PORT=str(port),
                    TRACEGATE_API_WORKERS=str(API_WORKERS))
    api = stack.spawn(f"{run}-api", ["-m", "cli.main", "api"], env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, api.log_tail)
        ids = ",".join(i.institution_id for i in institutions if i.go_live_override is None)
        meter = meter_for(stack.servers, api=[api])
        _load(stack, meter, url, ids, 200, 1.0, f"{run}w")  # warm-up: connections, caches
        results = []
        for rate in rates:
            raw = _load(stack, meter, url, ids, rate, seconds, f"{run}{rate}")
            results.append(_rate_result(rate, raw))
            _wait_idle(url)  # a backlog left by one rate must not be charged to the next
        return results
    finally:
        stack.stop_children()


async def _reset(stack: Stack, run: str) -> None:
    await reset_record(stack.dsn)
    client = build_redis(stack.redis_url, cluster=stack.redis_cluster)  # issue 19
    await client.flushall()
    await client.aclose()
    await create_topics(stack, run, 6)


def _wait_ready(url: str, log_tail: Any) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"API not ready: {log_tail()}")


def _wait_idle(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5):  # noqa: S310
                pass
        except (urllib.error.URLError, OSError):
            pass
        if time.perf_counter() - began < 0.02:
            return
        time.sleep(0.2)


def _load(
    stack: Stack, meter: CpuMeter, url: str, institutions: str, rate: int, seconds: float,
    run: str,
) -> dict[str, Any]:
    """The generator's figures, with `cpu_s_by_role` (the generator times itself: it exits
    inside the window)."""
    out = stack.tmp / f"gate-{run}.json"
    meter.begin()
    child = stack.spawn(f"gateload-{run}", [
        "-m", "loadtest.gateload", "--url", url, "--key", ADMIN_KEY, "--rate", str(rate),
        "--seconds", str(seconds), "--run", run, "--institutions", institutions,
        "--out", str(out)], {})
    _wait_exit(child)
    spent = meter.seconds()
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    result["cpu_s_by_role"] = {**spent, "generator": result["cpu_s"]}
    return result


def _wait_exit(child: ChildProcess) -> None:
    while child.alive():
        time.sleep(0.05)
    if child.returncode != 0:
        raise RuntimeError(f"gate load generator failed: {child.log_tail()}")


def _rate_result(rate: int, raw: dict[str, Any]) -> dict[str, Any]:
    latency = summary_ms(raw["latencies"])
    statuses: dict[str, int] = raw["statuses"]
    errors = raw["sent"] - statuses.get("200", 0)
    return {
        "rate": rate, "p50_ms": latency["p50"], "p95_ms": latency["p95"],
        "p99_ms": latency["p99"], "max_ms": latency["max"], "errors": errors,
        "requests": raw["sent"], "statuses": statuses, "connections": raw["connections"],
        "generator_lag_p99_ms": summary_ms(raw["lag"])["p99"],
        "cpu_us_per_call": per_unit_us(raw["cpu_s_by_role"], raw["sent"]),
    }
