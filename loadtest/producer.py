"""The load generator of the stream benchmark, run as its own process (`python -m
loadtest.producer`) so it does not share an interpreter with the measuring side.

Reads the pickled events, produces them with explicit partitions (keys are settlement ids) as
fast as it can or paced at `--rate` codes/s, and writes when each event was handed to the
client (the latency clock starts there) and the CPU it spent producing as JSON to `--out`."""

from __future__ import annotations

import argparse
import asyncio
import pickle
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

Row = tuple[int, bytes, bytes, int]  # partition, key, value, codes


async def produce(rows: list[Row], bootstrap: str, topic: str, rate: float) -> dict[str, object]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5,
        max_batch_size=1024 * 1024, request_timeout_ms=30_000,
    )
    await producer.start()
    try:
        start, cpu = time.time(), time.process_time()
        sent, futures = await _send_all(producer, rows, topic, rate, start)
        await asyncio.gather(*futures)
        return {"start": start, "end": time.time(), "sent": sent,
                "cpu_s": time.process_time() - cpu}
    finally:
        await producer.stop()


async def _send_all(
    producer: AIOKafkaProducer, rows: list[Row], topic: str, rate: float, start: float
) -> tuple[list[float], list[asyncio.Future[object]]]:
    sent: list[float] = []
    futures: list[asyncio.Future[object]] = []
    codes = 0
    for partition, key, value, count in rows:
        if rate > 0:
            await _pace(start + codes / rate)
        sent.append(time.time())
        futures.append(await producer.send(topic, value, key=key, partition=partition))
        codes += count
    return sent, futures


async def _pace(due: float) -> None:
    delay = due - time.time()
    if delay > 0.001:  # coarser sleeps than that only add scheduler noise
        await asyncio.sleep(delay)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="codes per second; 0 = max")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows: list[Row] = pickle.loads(args.events.read_bytes())  # noqa: S301 - our own file
    result = asyncio.run(produce(rows, args.bootstrap, args.topic, args.rate))
    args.out.write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
