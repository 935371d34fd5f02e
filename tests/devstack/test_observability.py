"""The production processes as an operator runs them — `tracegate api` with two workers and a
`tracegate consume`, on topics of their own, logging at DEBUG — seen from outside: one scrape
of the API covers every worker; the consumer serves its own metrics; every log line is JSON;
and no line holds the raw patient id or an API key of the calls made, at any level."""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from cli.devstack.process import ChildProcess, free_port, spawn
from cli.devstack.servers import create_topics
from service.settings import Settings
from tests import factories as f
from tests.faults.processes import PROJECT_ROOT, tracegate_env
from tests.hostile.support import stream_event

pytestmark = pytest.mark.timeout(240)

WORKERS = 2
PATIENT = f"psn-secret-{secrets.token_hex(6)}"


@dataclass
class Processes:
    api_url: str
    consumer_url: str
    admin_key: str
    settings: Settings
    multiproc_dir: Path
    children: list[ChildProcess]

    def logs(self) -> dict[str, list[str]]:
        return {child.name: child.log_path.read_text(errors="replace").splitlines()
                for child in self.children}


@pytest.fixture(scope="module")
def processes(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    tmp = tmp_path_factory.mktemp("observability")
    run = secrets.token_hex(3)
    own = settings.model_copy(update={
        "topic_settlements": f"obs.{run}.settlements", "topic_flags": f"obs.{run}.flags",
        "topic_dlq": f"obs.{run}.dlq", "consumer_group": f"obs-{run}",
    })
    create_topics(own.kafka_bootstrap, own.topic_settlements, own.topic_flags, own.topic_dlq,
                  own.settlements_partitions)
    multiproc = tmp / "metrics"
    multiproc.mkdir()
    (multiproc / "counter_1.db").write_bytes(b"left by an earlier run")  # cleaned at start
    admin_key = f"tg_obs_admin_{secrets.token_hex(12)}"
    api_port, consumer_port = free_port(), free_port()
    env = {**tracegate_env(own), "TRACEGATE_LOG_LEVEL": "DEBUG",
           "TRACEGATE_BOOTSTRAP_ADMIN_KEY": admin_key, "TRACEGATE_HOT_SET_SAMPLE_S": "0.5"}
    api_env = {**env, "TRACEGATE_API_PORT": str(api_port), "TRACEGATE_API_WORKERS": str(WORKERS),
               "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    consumer_env = {**env, "TRACEGATE_CONSUMER_METRICS_PORT": str(consumer_port)}
    children = [
        spawn("api", [sys.executable, "-m", "cli.main", "api"], log_path=tmp / "api.log",
              env=api_env, cwd=PROJECT_ROOT),
        spawn("consumer", [sys.executable, "-m", "cli.main", "consume"],
              log_path=tmp / "consumer.log", env=consumer_env, cwd=PROJECT_ROOT),
    ]
    try:
        running = Processes(f"http://127.0.0.1:{api_port}",
                            f"http://127.0.0.1:{consumer_port}/metrics", admin_key, own,
                            multiproc, children)
        _wait(lambda: _answers(f"{running.api_url}/readyz"), children)
        _wait(lambda: _answers(running.consumer_url), children)
        yield running
    finally:
        for child in children:
            child.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(ready: Any, children: list[ChildProcess], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        for child in children:
            assert child.alive(), f"{child.name} exited:\n{child.log_tail(60)}"
        assert time.monotonic() < deadline, "\n".join(c.log_tail(30) for c in children)
        time.sleep(0.1)


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
           **labels: str) -> float:
    return sum(value for found, value in samples.get(name, [])
               if all(found.get(k) == v for k, v in labels.items()))


@dataclass
class Traffic:
    pos_key: str
    gate_calls: int
    request_id: str
    dead_key: str
    institution: str
    code: str


@pytest.fixture(scope="module")
async def traffic(processes: Processes) -> Traffic:
    """Gate calls until both workers have answered some, a duplicate (a flag), a refused body
    carrying the patient id, a key in a query string, and a stream event for an unknown
    institution (dead-lettered, the patient id inside)."""
    admin = {"Authorization": f"Bearer {processes.admin_key}"}
    async with httpx.AsyncClient(base_url=processes.api_url, timeout=15) as http:
        a = await f.register(http, admin)
        b = await f.register(http, admin)
        pos = await f.key_for(http, admin, "pos", a)
        code = f.cn20()
        first = f.settlement(a, [f.line(1, [code])], patient_id=PATIENT)
        request_id = f"req-{secrets.token_hex(4)}"
        answer = await http.post("/v1/settlements", json=first,
                                 headers={**pos, "X-Request-ID": request_id})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-request-id"] == request_id
        duplicate = f.settlement(b, [f.line(1, [code])], patient_id=PATIENT)
        assert (await f.settle(http, admin, duplicate))["flags"]
        calls = 2 + await _until_every_worker_answered(processes, pos, a)
        refused = await http.post("/v1/settlements", headers=pos,
                                  json={**first, "settlement_id": "x", "lines": PATIENT})
        assert refused.status_code == 422
        key = pos["Authorization"].removeprefix("Bearer ")
        assert (await http.get(f"/v1/flags?api_key={key}", headers=pos)).status_code == 403
    dead = f.settlement(f.institution_id(), [f.line(1, [f.cn20()])], patient_id=PATIENT)
    producer = AIOKafkaProducer(bootstrap_servers=processes.settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(processes.settings.topic_settlements,
                                     orjson.dumps(stream_event(dead)),
                                     key=dead["settlement_id"].encode())
    finally:
        await producer.stop()
    return Traffic(key, calls, request_id, dead["settlement_id"], b, code)


async def _until_every_worker_answered(processes: Processes, pos: dict[str, str],
                                       institution: str) -> int:
    """Gate calls on fresh connections until every worker has observed one (each writes its
    own histogram file once it has); how many were made. Bounded."""
    calls = 0
    while len(list(processes.multiproc_dir.glob("histogram_*.db"))) < WORKERS:
        assert calls < 300, "a worker never answered a gate call"
        async with httpx.AsyncClient(base_url=processes.api_url, timeout=15) as fresh:
            body = f.settlement(institution, [f.line(1, [f.cn20()])], patient_id=PATIENT)
            assert (await fresh.post("/v1/settlements", json=body, headers=pos)).status_code \
                == 200
        calls += 1
    return calls


def test_one_scrape_covers_every_api_worker(processes: Processes, traffic: Traffic) -> None:
    assert not (processes.multiproc_dir / "counter_1.db").exists()  # the old run's file is gone
    samples = _samples(httpx.get(f"{processes.api_url}/metrics", timeout=5).text)
    count = _total(samples, "tracegate_gate_request_seconds_count", route="settlement")
    assert count == traffic.gate_calls
    assert _total(samples, "tracegate_gate_request_seconds_count", route="settlement",
                  decision="reject") == 1  # the duplicate


def test_the_months_ahead_are_one_reading_across_the_workers(processes: Processes) -> None:
    """Every worker keeps code_events' partitions ahead and sets the gauge; one scrape shows
    the latest reading once (multiprocess mode "mostrecent"), not one series per worker."""

    def months() -> list[tuple[dict[str, str], float]]:
        samples = _samples(httpx.get(f"{processes.api_url}/metrics", timeout=5).text)
        return samples.get("tracegate_partition_months_ahead", [])

    _wait(lambda: bool(months()), processes.children, timeout_s=30)
    [(labels, value)] = months()
    assert labels == {}
    assert value >= 3


async def test_the_consumer_serves_its_own_metrics(
    processes: Processes, traffic: Traffic
) -> None:
    def scraped() -> dict[str, list[tuple[dict[str, str], float]]]:
        return _samples(httpx.get(processes.consumer_url, timeout=5).text)

    def caught_up() -> bool:
        now = scraped()
        return (_total(now, "tracegate_dlq_total", reason="unknown_institution") >= 1
                and _total(now, "tracegate_codes_processed_total") >= traffic.gate_calls - 1
                and _total(now, "tracegate_hot_set_codes") > 0
                and _total(now, "tracegate_partition_months_ahead") >= 3)

    _wait(caught_up, processes.children, timeout_s=30)
    samples = scraped()
    assert _total(samples, "tracegate_flags_total", kind="duplicate_payment") == 1
    assert _total(samples, "tracegate_dlq_total") == 1  # one class: the free text is no label
    assert _total(samples, "tracegate_consumer_batch_seconds_count") >= 1
    lags = {labels["partition"] for labels, _ in samples["tracegate_consumer_lag"]}
    assert lags == {str(p) for p in range(processes.settings.settlements_partitions)}


def test_every_line_is_json_and_keeps_no_secret(processes: Processes, traffic: Traffic) -> None:
    # Wait for the dead letter to be on its way (its send is the line that would carry the
    # patient id), then stop both processes so every line is written.
    _wait(lambda: any(traffic.dead_key in line for line in processes.logs()["consumer"]),
          processes.children, timeout_s=30)
    for child in processes.children:
        child.stop()
    logs = processes.logs()
    records = {name: [json.loads(line) for line in lines if line.strip()]
               for name, lines in logs.items()}
    assert all(records.values())
    levels = {record["level"] for lines in records.values() for record in lines}
    assert "debug" in levels  # TRACEGATE_LOG_LEVEL reached both processes
    access = [r for r in records["api"] if r.get("logger") == "tracegate.access"]
    tagged = [r for r in access if r.get("request_id") == traffic.request_id]
    assert [(r["method"], r["path"], r["status"]) for r in tagged] == [
        ("POST", "/v1/settlements", 200)]
    assert {r["status"] for r in access} >= {200, 403, 422}
    assert all("?" not in r["path"] for r in access)
    # The consumer sent the dead letter (its value holds the patient id) and said so.
    assert any(traffic.dead_key in r["event"] and "Sending" in r["event"]
               for r in records["consumer"])
    secrets_seen = [(name, line[:300]) for name, lines in logs.items() for line in lines
                    if PATIENT in line or traffic.pos_key in line
                    or processes.admin_key in line]
    assert secrets_seen == []
