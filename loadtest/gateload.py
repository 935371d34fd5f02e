"""Open-loop HTTP load for the gate, run as its own process (`python -m loadtest.gateload`).

Request i is due at start + i / rate and is sent then whether or not earlier ones have been
answered (a closed loop would slow down with the server and hide its queueing). Latency is
measured from the due time, not the send time, so a load generator that falls behind shows
up in the figures instead of hiding them (no coordinated omission). A minimal keep-alive
HTTP/1.1 client on the event loop's protocol callbacks: httpx costs more CPU per request than
the server does, and asyncio's streams (a task, a reader and its futures a call) ~10-20 %
more than these callbacks (measured by turns at 2,000 calls/s: 100-129 us of the
generator's CPU a call against 111-163), CPU the generator takes from the cores it shares
with the gate under test.

Every call is checked against the workload's ground truth (loadtest/gatetruth.py) after its
latency is taken; per call the generator records its kind, its status (`200`, `503
OVERLOADED` for a shed, another status with its error code, an exception's name, `timeout`),
whether a 200 answer was right, and its latency.

The generator's garbage collector is off while it fires (as `timeit` turns it off while it
times): a full collection of its call plans, tasks and answers took 30-95 ms at 2,000 calls/s,
during which no call went out and none was read. Latency counts from the due time, so each
such stall was counted as the gate's: ~1 % of a run's calls late by up to 95 ms, which is the
p99, and the burst sent after it queued in the API as if the load had come that way."""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import orjson

from loadtest.gatetruth import Call, Mix, SettleTruth, VerifyTruth, plan
from service.kit import event_loop

# How long the generator waits for answers after its last call: past it a call is a timeout.
DRAIN_S = 30.0
EXAMPLES = 5
# A call's outcome: its status (200, 503...) and body, or the error that ended it.
Answered = Callable[[int, bytes], None]
Failed = Callable[[BaseException], None]


class MalformedResponse(ValueError):
    """The server sent something that is not an HTTP/1.1 response with a Content-Length."""


class Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection carrying one request at a time, driven by the
    event loop's callbacks: no task, stream reader or future a call (asyncio's streams made
    the generator cost ~115 us of CPU a call at 2,000 calls/s, taken from the cores the gate
    under test shares with it)."""

    def __init__(self, release: Callable[[Connection], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.release = release
        self.waiting: tuple[Answered, Failed] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    @property
    def closed(self) -> bool:
        """Lost, closed by a failure, or never made: not to be handed out again."""
        return self.transport is None or self.transport.is_closing()

    def send(self, request: bytes, answered: Answered, failed: Failed) -> None:
        assert self.transport is not None
        assert self.waiting is None
        self.waiting = (answered, failed)
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            response = take_response(self.buffer)
        except MalformedResponse as exc:
            self._fail(exc)
            return
        if response is not None and self.waiting is not None:
            answered, _ = self.waiting
            self.waiting = None
            self.release(self)  # free before the callback: it may send the next call on it
            answered(*response)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        """Half a response on it: never hand this connection out again."""
        if self.transport is not None:
            self.transport.close()
        if self.waiting is not None:
            _, failed = self.waiting
            self.waiting = None
            failed(exc)


def take_response(buffer: bytearray) -> tuple[int, bytes] | None:
    """The first whole response in `buffer` (taken out of it), or None while it is partial."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
        length = next((int(line.split(":", 1)[1]) for line in lines
                       if line.lower().startswith("content-length:")), 0)
    except (IndexError, ValueError) as exc:
        raise MalformedResponse(f"not an HTTP response: {lines[0][:80]!r}") from exc
    if len(buffer) < end + 4 + length:
        return None
    body = bytes(buffer[end + 4:end + 4 + length])
    del buffer[:end + 4 + length]
    return status, body


@dataclass
class Client:
    host: str
    port: int
    key: str
    idle: list[Connection] = field(default_factory=list)
    opened: int = 0
    opening: set[asyncio.Task[None]] = field(default_factory=set)

    def post(self, path: str, body: bytes, answered: Answered, failed: Failed) -> None:
        """Send now on a kept-alive connection, or once a new one is open."""
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.key}"
                f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        request = head.encode() + body
        connection = self._idle_connection()
        if connection is not None:
            connection.send(request, answered, failed)
            return
        opening = self._open_and_send(request, answered, failed)
        task = asyncio.get_running_loop().create_task(opening)
        self.opening.add(task)
        task.add_done_callback(self.opening.discard)

    def _idle_connection(self) -> Connection | None:
        """A kept-alive connection the server has not closed meanwhile (as HTTP clients do:
        a request sent into a closed socket would count as an error of the server)."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _open_and_send(self, request: bytes, answered: Answered, failed: Failed) -> None:
        self.opened += 1
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                partial(Connection, self._release), self.host, self.port)
        except OSError as exc:
            failed(exc)
            return
        connection.send(request, answered, failed)

    def _release(self, connection: Connection) -> None:
        if not connection.closed:
            self.idle.append(connection)

    def close(self) -> None:
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()


@dataclass
class Calls:
    """Per call, by index: what was sent and what came back."""

    due: list[float]
    kind: list[str]
    status: list[str]
    matched: list[bool | None]
    latency: list[float | None]
    lag: list[float]  # how late the generator sent each request
    mismatch_count: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def planned(cls, count: int, start: float, rate: float) -> Calls:
        return cls([start + index / rate for index in range(count)], [""] * count,
                   ["timeout"] * count, [None] * count, [None] * count, [0.0] * count)

    def mismatch(self, call: Call, problem: str) -> None:
        self.mismatch_count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append({"kind": call.kind, "call": call.label,
                                  "problem": problem[:600]})

    def to_json(self, now: float) -> dict[str, Any]:
        """A call still unanswered counts with the time it waited until it was given up."""
        latency = [now - due if seconds is None else seconds
                   for seconds, due in zip(self.latency, self.due, strict=True)]
        return {"calls": {"kind": self.kind, "status": self.status, "matched": self.matched,
                          "latency": latency},
                "lag": self.lag, "sent": len(self.due),
                "mismatches": {"count": self.mismatch_count, "examples": self.examples}}


@dataclass
class Firing:
    """Sends each call and records what came back; `drain` waits for the calls in flight."""

    client: Client
    path: str
    calls: Calls
    in_flight: int = 0
    drained: asyncio.Future[None] | None = None

    def fire(self, call: Call, index: int) -> None:
        self.calls.kind[index] = call.kind
        self.calls.lag[index] = time.perf_counter() - self.calls.due[index]
        self.in_flight += 1
        self.client.post(self.path, call.body, partial(self._answered, call, index),
                         partial(self._failed, index))

    async def drain(self) -> None:
        """Until every call is answered or DRAIN_S passes (the rest count as timeouts)."""
        if self.in_flight == 0:
            return
        self.drained = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(DRAIN_S):
                await self.drained
        except TimeoutError:
            return

    def _answered(self, call: Call, index: int, status: int, answer: bytes) -> None:
        self.calls.latency[index] = time.perf_counter() - self.calls.due[index]
        self._settle(index, status, answer, call)
        self._one_less()

    def _failed(self, index: int, exc: BaseException) -> None:
        self.calls.latency[index] = time.perf_counter() - self.calls.due[index]
        self.calls.status[index] = type(exc).__name__
        self._one_less()

    def _settle(self, index: int, status: int, answer: bytes, call: Call) -> None:
        calls = self.calls
        if status != 200:
            calls.status[index] = f"{status} {_error_code(answer)}".rstrip()
            return
        calls.status[index] = "200"
        problem = call.check(answer)
        calls.matched[index] = problem is None
        if problem is not None:
            calls.mismatch(call, problem)

    def _one_less(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)


def _error_code(answer: bytes) -> str:
    try:
        return str(orjson.loads(answer)["error"]["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""


async def run(
    client: Client, path: str, make: Callable[[int], Call], count: int, rate: float
) -> Calls:
    calls = Calls.planned(count, time.perf_counter(), rate)
    firing = Firing(client, path, calls)
    for index, due in enumerate(calls.due):
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        firing.fire(make(index), index)
    await firing.drain()
    return calls


def main() -> int:
    args = _parser().parse_args()
    host, port = args.url.removeprefix("http://").split(":")
    client = Client(host, int(port), args.key)
    count = int(args.rate * args.seconds)
    path, make, paid = _workload(args, count)
    if args.unchecked:
        make = partial(_unchecked, make)
    cpu = time.process_time()  # the load, not the plan made before it
    with _collector_off():
        calls = event_loop.run(run(client, path, make, count, args.rate))
    args.out.write_bytes(orjson.dumps({
        **calls.to_json(time.perf_counter()), "connections": client.opened,
        "cpu_s": time.process_time() - cpu, "paid": paid(),
    }))
    return 0


@contextmanager
def _collector_off() -> Iterator[None]:
    """Reference counting frees what a call leaves; the few cycles wait for the end."""
    gc.collect()
    gc.freeze()  # the plan made before the load: never scanned again
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _workload(
    args: argparse.Namespace, count: int
) -> tuple[str, Callable[[int], Call], Callable[[], list[str]]]:
    """The path, each call's maker, and the codes the run got paid (for a later verify run)."""
    if args.verify:
        paid = args.verify.read_text().split() if args.verify.stat().st_size else []
        verify = VerifyTruth(args.series, paid, args.institutions.split(",")[0], args.seed)
        return "/v1/codes/verify", verify.call, list
    kinds = plan(count, Mix(args.reuse, args.replay), args.seed)
    truth = SettleTruth(args.series, args.institutions.split(","), args.run, kinds, args.seed)
    return "/v1/settlements", truth.call, lambda: truth.paid_codes


def _unchecked(make: Callable[[int], Call], index: int) -> Call:
    """The same call, its answer taken as right if it is a 200 (the gate's floor answers
    something else than the contract: loadtest/baselines/gate_floor.py)."""
    return replace(make(index), check=_no_problem)


def _no_problem(answer: bytes) -> None:
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="http://host:port")
    parser.add_argument("--key", required=True)
    parser.add_argument("--rate", type=float, required=True, help="calls per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--run", required=True, help="unique per run: settlement ids are fresh")
    parser.add_argument("--series", type=int, required=True,
                        help="10-88, unique per run: its fresh codes are its own")
    parser.add_argument("--institutions", required=True, help="comma-separated ids")
    parser.add_argument("--reuse", type=float, default=Mix().reuse, help="share re-using a code")
    parser.add_argument("--replay", type=float, default=Mix().replay, help="share of replays")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verify", type=Path, default=None,
                        help="verify codes instead: a file of codes paid earlier, one a line")
    parser.add_argument("--unchecked", action="store_true",
                        help="check only each answer's status (the gate's floor)")
    parser.add_argument("--out", type=Path, required=True)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
