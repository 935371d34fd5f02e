"""Open-loop HTTP load for the gate, run as its own process (`python -m loadtest.gateload`).

Request i is due at start + i / rate and is sent then whether or not earlier ones have been
answered (a closed loop would slow down with the server and hide its queueing). Latency is
measured from the due time, not the send time, so a load generator that falls behind shows
up in the figures instead of hiding them (no coordinated omission). A minimal keep-alive
HTTP/1.1 client on asyncio streams: httpx costs more CPU per request than the server does."""

from __future__ import annotations

import argparse
import datetime as dt
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from service.kit import event_loop

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Client:
    host: str
    port: int
    key: str
    idle: list[Connection] = field(default_factory=list)
    opened: int = 0

    async def post(self, path: str, body: bytes) -> int:
        reader, writer = self._idle_connection() or await self._open()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.key}"
                f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body)
        status = await _read_response(reader)
        self.idle.append((reader, writer))
        return status

    def _idle_connection(self) -> Connection | None:
        """A kept-alive connection the server has not closed meanwhile (as HTTP clients do:
        a request sent into a closed socket would count as an error of the server)."""
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _open(self) -> Connection:
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next((int(line.split(":", 1)[1]) for line in lines
                   if line.lower().startswith("content-length:")), 0)
    await reader.readexactly(length)
    return status


def bodies(run: str, count: int, institutions: list[str]) -> list[bytes]:
    """Settlements of one whole-pack line with 3 fresh codes, after go-live (enforced)."""
    out = []
    for index in range(count):
        codes = [f"88{run[-4:].rjust(4, '0')}{index:010d}{k:04d}" for k in range(3)]
        out.append(orjson.dumps({
            "settlement_id": f"G-{run}-{index}", "institution_id":
            institutions[index % len(institutions)], "settled_at": dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).replace(microsecond=0).isoformat(),
            "lines": [{"line_no": 1, "drug_code": "XC09AAL012A001010100543", "quantity": 3,
                       "split": False, "trace_codes": codes}],
        }))
    return out


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    lag: list[float] = field(default_factory=list)  # how late the generator sent each request


async def fire(client: Client, body: bytes, due: float, outcome: Outcome) -> None:
    outcome.lag.append(time.perf_counter() - due)
    try:
        status = str(await client.post("/v1/settlements", body))
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        status = type(exc).__name__
    outcome.latencies.append(time.perf_counter() - due)
    outcome.statuses[status] += 1


async def run(client: Client, requests: list[bytes], rate: float) -> Outcome:
    outcome = Outcome()
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for index, body in enumerate(requests):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(client, body, due, outcome)))
    await asyncio.wait(tasks, timeout=30)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="http://host:port")
    parser.add_argument("--key", required=True)
    parser.add_argument("--rate", type=float, required=True, help="settlements per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--run", required=True, help="unique per run: ids and codes are fresh")
    parser.add_argument("--institutions", required=True, help="comma-separated ids")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    host, port = args.url.removeprefix("http://").split(":")
    client = Client(host, int(port), args.key)
    requests = bodies(args.run, int(args.rate * args.seconds), args.institutions.split(","))
    cpu = time.process_time()  # the load, not the bodies made before it
    outcome = event_loop.run(run(client, requests, args.rate))
    args.out.write_bytes(orjson.dumps({
        "latencies": outcome.latencies, "statuses": outcome.statuses, "lag": outcome.lag,
        "sent": len(requests), "connections": client.opened,
        "cpu_s": time.process_time() - cpu,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
