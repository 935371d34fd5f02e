"""`tracegate loadtest gate`: the real API (`tracegate api`, uvicorn, API_WORKERS processes) under
open-loop load from a separate process, at fixed arrival rates, every answer checked against
the workload's ground truth (loadtest/gatetruth.py). Kafka's acknowledgement is in every
answer (the gate answers after it). No consumer runs meanwhile: the gate alone is measured.
After the settlement rates, `POST /v1/codes/verify` on its own at VERIFY_RATE, for codes the
settlements paid and codes never sold.

Each rate counts the CPU a call cost every process (the API's workers, the servers, the load
generator), from its first call until the generator has every answer: on a machine whose
cores they all share, that sum bounds the rate it can carry; `server_sum_us_per_call` is the
gate's own (API, Redis, PostgreSQL, Kafka: not the generator). A 503 OVERLOADED (the API's
in-flight limit) is a shed, counted apart from errors (any other non-200, a reset, a
timeout).

By turns with the gate's runs at the rates the targets name (right after each), the same
load, all fresh settlements, against the gate's floor (loadtest/baselines/gate_floor.py: the
same uvicorn, Redis and Kafka doing only what no gate can skip), and its verify after the
gate's: what a call costs this stack before any code of tracegate's runs, measured in the
same minutes."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from cli.devstack.process import ChildProcess
from loadtest.cpu import CpuMeter, meter_for, per_unit_us
from loadtest.gatetruth import CODES_PER_CALL, Mix, fresh_codes
from loadtest.stack import ADMIN_KEY, Stack, api_port, create_topics, reset_record
from loadtest.stats import summary_ms
from loadtest.workload import Institution
from service.kit.redis_client import build_redis
from service.settings import Settings

RATES = (500, 1000, 2000, 4000)
# The floor runs at the rates the gate's targets name (loadtest/baselines/gate_floor.py).
FLOOR_RATES = (500, 2000)
VERIFY_RATE = 500
# One uvicorn worker per core: the gate is CPU-bound in Python.
API_WORKERS = 2
SERVER_ROLES = ("api", "redis", "postgres", "kafka")
SHED = "503 OVERLOADED"
FLOOR_LINGER_MS: int = Settings.model_fields["gate_linger_ms"].default  # as the API's producer
# Codes paid in the settlement runs that the verify run asks about (a sample: the file is
# read by the generator before its clock starts).
VERIFY_PAID_SAMPLE = 20_000
_WARM_SERIES, _VERIFY_SERIES = 10, 88  # the settlement rates take 11, 12, ...
_FLOOR_SERIES = 60  # the floor's: 60, 61, ...
_UNCHECKED = ("--unchecked", "--reuse", "0", "--replay", "0")


@dataclass(frozen=True)
class _Api:
    """The API under test, and how one open-loop run is driven against it."""

    stack: Stack
    meter: CpuMeter
    url: str
    institutions: str

    def load(self, run: str, series: int, rate: int, seconds: float, *extra: str,
             key: str = ADMIN_KEY) -> dict[str, Any]:
        """The generator's figures, with `cpu_s_by_role` (the generator times itself: it
        exits inside the window)."""
        out = self.stack.tmp / f"gate-{run}.json"
        self.meter.begin()
        child = self.stack.spawn(f"gateload-{run}", [
            "-m", "loadtest.gateload", "--url", self.url, "--key", key, "--rate", str(rate),
            "--seconds", str(seconds), "--run", run, "--series", str(series),
            "--seed", str(series), "--institutions", self.institutions, "--out", str(out),
            *extra], {})
        _wait_exit(child)
        spent = self.meter.seconds()
        result: dict[str, Any] = orjson.loads(out.read_bytes())
        result["cpu_s_by_role"] = {**spent, "generator": result["cpu_s"]}
        return result


def run_gate(
    stack: Stack, institutions: Sequence[Institution], rates: Sequence[int], seconds: float,
    run: str, *, mix: Mix | None = None, verify_rate: int | None = VERIFY_RATE,
    with_floor: bool = False,
) -> dict[str, Any]:
    """The gate section: `rates` (one row a rate), `verify` (unless verify_rate is None),
    `correct` (every answer of every run was right) and the plan's `mix`; `with_floor`, and
    `floor` (run_floor's section), its runs made by turns with the gate's (`Floor`)."""
    mix = mix or Mix()
    asyncio.run(_reset(stack, run))
    ids = ",".join(i.institution_id for i in institutions if i.go_live_override is None)
    port = api_port()
    env = stack.env(run, TRACEGATE_API_HOST="127.0.0.1", TRACEGATE_API_PORT=str(port),
                    TRACEGATE_API_WORKERS=str(API_WORKERS))
    try:
        target = _serve(stack, f"{run}-api", ["-m", "cli.main", "api"], env, port, ids)
        floor = Floor(stack, seconds, run) if with_floor else None
        url = target.url
        mixed = ("--reuse", str(mix.reuse), "--replay", str(mix.replay))
        # Warm-up: connections, caches; checked like the others, and its codes paid too.
        warm = target.load(f"{run}w", _WARM_SERIES, 200, 1.0, *mixed)
        checked, paid = [_rate_result(200, warm)], list(warm["paid"])
        rows = []
        for number, rate in enumerate(rates):
            raw = target.load(f"{run}{rate}", _WARM_SERIES + 1 + number, rate, seconds, *mixed)
            rows.append(_rate_result(rate, raw))
            paid += raw["paid"]
            _wait_idle(url)  # a backlog left by one rate must not be charged to the next
            if floor is not None and rate in floor_rates(rates):
                floor.at(rate)
        section: dict[str, Any] = {"rates": rows, "mix": asdict(mix)}
        if verify_rate is not None:
            section["verify"] = _verify(target, f"{run}v", verify_rate, seconds, paid)
            if floor is not None:
                floor.verify(verify_rate)
        checked += [*rows, *([section["verify"]] if "verify" in section else [])]
        section["correct"] = all(row["correct"] for row in checked)
        if floor is not None:
            section["floor"] = floor.section
        return section
    finally:
        stack.stop_children()


def run_floor(
    stack: Stack, rates: Sequence[int], seconds: float, run: str, verify_rate: int | None
) -> dict[str, Any]:
    """The floor on its own, at the target rates (or the first rate given): `rates`, one
    row a rate; `verify`."""
    try:
        floor = Floor(stack, seconds, run)
        for rate in floor_rates(rates):
            floor.at(rate)
        if verify_rate is not None:
            floor.verify(verify_rate)
        return floor.section
    finally:
        stack.stop_children()


def floor_rates(rates: Sequence[int]) -> list[int]:
    """The rates the floor is measured at: those the targets name, or the first one run."""
    return [rate for rate in rates if rate in FLOOR_RATES] or list(rates[:1])


class Floor:
    """The stack's own cost of a call, with none of tracegate's code: the floor app on the
    same uvicorn, Redis and Kafka, all calls fresh, answers checked for their status only.
    On a single Redis only: its script's keys are not in one slot. Open beside the gate's
    API, it runs each rate right after the gate's: this machine's speed drifts (by 40 %
    between two full runs), so a floor measured minutes later was a floor of another
    machine. The idle API beside costs the servers ~1 ms of CPU a second."""

    def __init__(self, stack: Stack, seconds: float, run: str) -> None:
        port = api_port()
        env = {"FLOOR_REDIS_URL": stack.redis_url,
               "FLOOR_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
               "FLOOR_TOPIC": f"lt.{run}.settlements", "FLOOR_LINGER_MS": str(FLOOR_LINGER_MS)}
        argv = ["-m", "uvicorn", "loadtest.baselines.gate_floor:floor_app", "--factory",
                "--workers", str(API_WORKERS), "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "--log-level", "warning"]
        self.stack, self.seconds, self.run = stack, seconds, run
        self.target = _serve(stack, f"{run}-floor", argv, env, port, "floor")
        self.target.load(f"{run}fw", _FLOOR_SERIES, 200, 1.0, *_UNCHECKED)
        self.section: dict[str, Any] = {"rates": []}

    def at(self, rate: int) -> None:
        rows = self.section["rates"]
        rows.append(_rate_result(rate, self.target.load(
            f"{self.run}f{rate}", _FLOOR_SERIES + 1 + len(rows), rate, self.seconds,
            *_UNCHECKED)))
        _wait_idle(self.target.url)  # as between the gate's rates

    def verify(self, rate: int) -> None:
        """About codes its first rate claimed (and codes never sold)."""
        self.section["verify"] = _rate_result(rate, self.target.load(
            f"{self.run}fv", _VERIFY_SERIES, rate, self.seconds, "--verify",
            str(_floor_codes(self.stack, self.run)), *_UNCHECKED))


def _serve(
    stack: Stack, name: str, argv: list[str], env: dict[str, str], port: int,
    institutions: str,
) -> _Api:
    """The server child that `argv` and `env` make listen on loopback `port`, once ready,
    metered, with the institutions its load settles at."""
    child = stack.spawn(name, argv, env)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, child.log_tail)
    return _Api(stack, meter_for(stack.servers, api=[child]), url, institutions)


def _floor_codes(stack: Stack, run: str) -> Path:
    """Codes for the floor's verify: those its settlements at the first rate claimed
    (series _FLOOR_SERIES + 1), so about half the codes asked of are held."""
    codes = stack.tmp / f"floor-{run}.txt"
    codes.write_text("\n".join(fresh_codes(_FLOOR_SERIES + 1, index)[0]
                               for index in range(VERIFY_PAID_SAMPLE // 10)))
    return codes


def _verify(
    target: _Api, run: str, rate: int, seconds: float, paid: list[str]
) -> dict[str, Any]:
    """The scan-time check on its own, with a regulator's key (it may ask for any
    institution), about codes paid above and codes never sold."""
    sample = random.Random(0).sample(paid, min(len(paid), VERIFY_PAID_SAMPLE))
    codes = target.stack.tmp / f"paid-{run}.txt"
    codes.write_text("\n".join(sample))
    key = _new_key(target.url, "regulator")
    raw = target.load(run, _VERIFY_SERIES, rate, seconds, "--verify", str(codes), key=key)
    return {**_rate_result(rate, raw), "codes_per_call": CODES_PER_CALL,
            "paid_codes_asked_of": len(sample)}


def _new_key(url: str, role: str) -> str:
    request = urllib.request.Request(  # noqa: S310 (loopback, our own API)
        f"{url}/v1/api-keys", data=orjson.dumps({"role": role}), method="POST",
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return str(orjson.loads(response.read())["key"])


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


def _wait_exit(child: ChildProcess) -> None:
    while child.alive():
        time.sleep(0.05)
    if child.returncode != 0:
        raise RuntimeError(f"gate load generator failed: {child.log_tail()}")


def _rate_result(rate: int, raw: dict[str, Any]) -> dict[str, Any]:
    """One run's row. Latency of every call (`p50_ms`...) and of the answered ones
    (`answered_p50_ms`...); `errors` is every call neither answered 200 nor shed."""
    calls, sent = raw["calls"], raw["sent"]
    statuses = Counter(calls["status"])
    latency = summary_ms(calls["latency"])
    answered = summary_ms([seconds for seconds, status in zip(
        calls["latency"], calls["status"], strict=True) if status == "200"])
    mismatches = raw["mismatches"]
    cpu = per_unit_us(raw["cpu_s_by_role"], sent)
    return {
        "rate": rate, "p50_ms": latency["p50"], "p95_ms": latency["p95"],
        "p99_ms": latency["p99"], "max_ms": latency["max"],
        "answered_p50_ms": answered["p50"], "answered_p95_ms": answered["p95"],
        "answered_p99_ms": answered["p99"], "answered_max_ms": answered["max"],
        "requests": sent, "answered": statuses["200"], "sheds": statuses[SHED],
        "errors": sent - statuses["200"] - statuses[SHED],
        # Right only if something was answered and every answer was right.
        "correct": statuses["200"] > 0 and mismatches["count"] == 0,
        "mismatches": mismatches, "kinds": dict(Counter(calls["kind"])),
        "statuses": dict(statuses), "connections": raw["connections"],
        "generator_lag_p99_ms": summary_ms(raw["lag"])["p99"],
        "cpu_us_per_call": cpu,
        "server_sum_us_per_call": round(sum(cpu.get(role, 0.0) for role in SERVER_ROLES), 1),
    }
