"""`tracegate demo`: realistic synthetic traffic into a running stack, so a newcomer sees
decisions and flags flow. Most settlements go through the gate as a POS would send them; a
share arrives on the settlements topic as the insurer's platform would stream them. A small
share re-uses a paid code (回流药), sells split packs (拆零), reverses, or forgets the code."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from service.kit.clock import SHANGHAI
from service.kit.kafka import build_producer

KINDS = ("retail_pharmacy", "primary", "secondary", "tertiary")


@dataclass
class Traffic:
    """The demo's own memory of what it sold, to re-use some of it on purpose."""

    rng: random.Random
    institutions: list[str]
    paid: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def code(self) -> str:
        if self.paid and self.rng.random() < 0.02:
            return self.rng.choice(self.paid)  # a pack sold again: should be flagged
        return "8" + str(self.rng.randrange(10**19)).zfill(19)

    def settlement(self, seq: int) -> dict[str, Any]:
        lines = [self._line(no) for no in range(1, self.rng.randint(1, 4) + 1)]
        return {
            "settlement_id": f"DEMO-{int(time.time())}-{seq}",
            "institution_id": self.rng.choice(self.institutions),
            "settled_at": dt.datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
            "patient_id": f"psn-{self.rng.randrange(100000)}", "lines": lines,
        }

    def _line(self, no: int) -> dict[str, Any]:
        roll = self.rng.random()
        if roll < 0.01:
            return {"line_no": no, "drug_code": "XN01", "quantity": 1, "trace_codes": []}
        if roll < 0.03:
            return {"line_no": no, "drug_code": "T0007", "quantity": 1, "trace_codes": [],
                    "no_code_reason": "herbal_pieces"}
        if roll < 0.10:
            return {"line_no": no, "drug_code": "XN02", "quantity": self.rng.randint(1, 6),
                    "split": True, "pack_size": 24, "trace_codes": [self.code()]}
        packs = self.rng.randint(1, 3)
        return {"line_no": no, "drug_code": "XC09", "quantity": packs,
                "trace_codes": [self.code() for _ in range(packs)]}


def run_demo(stack_json: Path, rate: float) -> int:
    stack = orjson.loads(stack_json.read_bytes())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the rest
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(stack, rate))
    return 0


async def _run(stack: dict[str, Any], rate: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    headers = {"Authorization": f"Bearer {stack['admin_key']}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=stack["api_url"], headers=headers, timeout=10,
                                 limits=limits) as api:
        traffic = Traffic(random.Random(7), await _institutions(api))
        producer = build_producer(stack["kafka_bootstrap"], linger_ms=5)
        await producer.start()
        try:
            await _feed(api, producer, stack["topics"]["settlements"], traffic, rate, stop)
        finally:
            await producer.stop()


async def _institutions(api: httpx.AsyncClient) -> list[str]:
    ids = []
    for number in range(12):
        iid = f"DEMO{number:08d}"
        body = {"name": f"demo {KINDS[number % 4]} {number}", "kind": KINDS[number % 4],
                "region": "110105"}
        (await api.put(f"/v1/institutions/{iid}", json=body)).raise_for_status()
        ids.append(iid)
    return ids


async def _feed(
    api: httpx.AsyncClient, producer: Any, topic: str, traffic: Traffic, rate: float,
    stop: asyncio.Event,
) -> None:
    """Open loop: a settlement every 1/rate seconds whatever the answers' latency."""
    tasks: set[asyncio.Task[None]] = set()
    started, seq, report = time.monotonic(), 0, time.monotonic() + 5
    while not stop.is_set():
        seq += 1
        task = asyncio.create_task(_one(api, producer, topic, traffic, seq))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if time.monotonic() >= report:
            report += 5
            sys.stdout.write(f"demo: {dict(traffic.counts)}\n")
            sys.stdout.flush()
        await asyncio.sleep(max(0.0, started + seq / rate - time.monotonic()))
    await asyncio.gather(*tasks, return_exceptions=True)


async def _one(
    api: httpx.AsyncClient, producer: Any, topic: str, traffic: Traffic, seq: int
) -> None:
    body = traffic.settlement(seq)
    if traffic.rng.random() < 0.2:
        event = {"type": "settlement", "source": "stream", **body}
        await producer.send(topic, orjson.dumps(event), key=body["settlement_id"].encode())
        traffic.counts["streamed"] += 1
    else:
        await _through_gate(api, traffic, body)
    if traffic.settled and traffic.rng.random() < 0.01:
        await _reverse(api, traffic, traffic.rng.choice(traffic.settled), seq)


async def _through_gate(api: httpx.AsyncClient, traffic: Traffic, body: dict[str, Any]) -> None:
    try:
        response = await api.post("/v1/settlements", json=body)
    except httpx.HTTPError:
        traffic.counts["error"] += 1
        return
    if response.status_code != 200:
        traffic.counts[f"http_{response.status_code}"] += 1
        return
    answer = response.json()
    traffic.counts[answer["decision"]] += 1
    traffic.counts["flags"] += len(answer["flags"])
    traffic.settled.append(body["settlement_id"])
    for line, verdict in zip(body["lines"], answer["lines"], strict=True):
        if verdict["decision"] == "pay" and not line.get("split"):
            traffic.paid.extend(line["trace_codes"])


async def _reverse(api: httpx.AsyncClient, traffic: Traffic, settlement_id: str, seq: int) -> None:
    body = {"reversal_id": f"DEMO-R-{seq}"}
    with contextlib.suppress(httpx.HTTPError):
        response = await api.post(f"/v1/settlements/{settlement_id}/reversal", json=body)
        traffic.counts["reversed" if response.status_code == 200 else "reversal_refused"] += 1
