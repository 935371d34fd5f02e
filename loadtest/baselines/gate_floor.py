"""The gate's floor: what this stack costs a settlement call with none of tracegate's rules.

A bare ASGI app on the same uvicorn (the same worker count, uvloop, httptools), the same
Redis and the same Kafka as `tracegate api` in the gate benchmark, doing only what no gate
can skip: read the body and decode it (msgspec), one script call claiming its codes (SET NX
each, all or none), the settlement produced to Kafka with the same producer settings and its
acknowledgement awaited, a JSON answer. Its verify (`POST /v1/codes/verify`) is one script
call reading the codes. No authentication, no decision, no recent answer, no
confirmation, no middleware: whatever the gate costs above this floor is tracegate's code,
and whatever the floor costs is uvicorn's, asyncio's, redis-py's, aiokafka's, the servers'
and the kernel's.

Served as `uvicorn loadtest.baselines.gate_floor:floor_app --factory` with its settings in
FLOOR_REDIS_URL, FLOOR_KAFKA_BOOTSTRAP, FLOOR_TOPIC and FLOOR_LINGER_MS. Its answers are not
the contract's, so the load generator checks only their status (`--unchecked`)."""

from __future__ import annotations

import os

import msgspec
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send

from service.kit.kafka import build_producer
from service.kit.redis_client import build_redis

# Every code or none: a code held already fails the whole call, as a claim does.
CLAIM = """
for n = 1, #KEYS do
  if redis.call('EXISTS', KEYS[n]) == 1 then return 0 end
end
for n = 1, #KEYS do redis.call('SET', KEYS[n], ARGV[1]) end
return 1
"""
READ = "return redis.call('MGET', unpack(KEYS))"
_HEADERS = [(b"content-type", b"application/json")]


class _Line(msgspec.Struct):
    trace_codes: list[str] = []


class _Settlement(msgspec.Struct):
    settlement_id: str
    lines: list[_Line]


class _Verify(msgspec.Struct):
    trace_codes: list[str]


class FloorApp:
    """The ASGI callable; its clients are built at start-up (lifespan), never at import."""

    def __init__(self, redis_url: str, bootstrap: str, topic: str, linger_ms: int) -> None:
        self._redis_url, self._bootstrap = redis_url, bootstrap
        self._topic, self._linger_ms = topic, linger_ms
        self._settlements = msgspec.json.Decoder(_Settlement)
        self._verifies = msgspec.json.Decoder(_Verify)
        self._redis: Redis | None = None
        self._producer: AIOKafkaProducer | None = None
        self._claim = self._read = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            raw = await _body(receive)
            status, body = await self._answer(scope["method"], scope["path"], raw)
            headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    async def _answer(self, method: str, path: str, raw: bytes) -> tuple[int, bytes]:
        if method == "GET":  # the harness asking whether it is up
            return 200, b"{}"
        try:
            if path == "/v1/codes/verify":
                return await self._verify(self._verifies.decode(raw))
            return await self._settle(self._settlements.decode(raw))
        except msgspec.MsgspecError as exc:
            return 422, msgspec.json.encode({"error": str(exc)})

    async def _verify(self, verify: _Verify) -> tuple[int, bytes]:
        assert self._redis is not None  # started
        keys = [f"floor:{code}" for code in verify.trace_codes]
        found = await self._redis.evalsha(self._read, len(keys), *keys)
        results = [{"trace_code": code, "paid": value is not None}
                   for code, value in zip(verify.trace_codes, found, strict=True)]
        return 200, msgspec.json.encode({"results": results})

    async def _settle(self, settlement: _Settlement) -> tuple[int, bytes]:
        assert self._redis is not None  # started
        assert self._producer is not None
        codes = [f"floor:{code}" for line in settlement.lines for code in line.trace_codes]
        raw = msgspec.json.encode(settlement)  # an event encoded, as the gate encodes its own
        claimed = await self._redis.evalsha(self._claim, len(codes), *codes,
                                            settlement.settlement_id)
        await self._producer.send_and_wait(self._topic, raw, key=settlement.settlement_id.encode())
        answer = {"settlement_id": settlement.settlement_id, "paid": bool(claimed)}
        return 200, msgspec.json.encode(answer)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        redis = build_redis(self._redis_url)
        assert isinstance(redis, Redis)  # a single server: its script's keys are in no one slot
        self._redis = redis
        self._claim = await self._redis.script_load(CLAIM)
        self._read = await self._redis.script_load(READ)
        self._producer = build_producer(self._bootstrap, linger_ms=self._linger_ms)
        await self._producer.start()

    async def _stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._redis is not None:
            await self._redis.aclose()


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def floor_app() -> FloorApp:
    return FloorApp(os.environ["FLOOR_REDIS_URL"], os.environ["FLOOR_KAFKA_BOOTSTRAP"],
                    os.environ["FLOOR_TOPIC"], int(os.environ["FLOOR_LINGER_MS"]))
