"""`tracegate dlq list|replay`: the dead-letter topic, read and replayed on Kafka directly (the
API has no view of it).

Replay re-publishes each dead letter's event (its `raw` text, or `raw_b64` bytes), or the
mended text an operator gives for it, to the settlements topic under its original key. Its
checkpoint is a consumer group of its own (`<TRACEGATE_CONSUMER_GROUP>-dlq-replay`): offsets
are committed once Kafka acknowledged the events before them, so a replay never re-publishes
an offset a finished replay published. One cut short between the acknowledgement and the
commit publishes that chunk again, which changes nothing: the consumers record settlements
once per settlement_id and reversals once per reversal_id. An event that still cannot be
taken comes back to the DLQ as a new dead letter at a new offset: nothing is lost, and a
replay reads every dead letter it will publish before it publishes any, so it never chases
its own.

Mending: `tracegate dlq list --json > dlq.jsonl`, edit the `raw` of the lines to mend (drop
the others or leave them as they are), then `tracegate dlq replay --mended dlq.jsonl`."""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from tqdm import tqdm

from cli.operator import environment, parsing, render
from cli.operator.environment import OperatorError
from service.kit import event_loop
from service.kit.kafka import build_producer
from service.settings import Settings

CHUNK = 500
_QUIET_S = 30.0
_PREVIEW = 120


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the DLQ topic, where it sits there and what it carried."""

    partition: int
    offset: int
    key: bytes | None
    body: dict[str, Any] | None  # None: the record is not a dead letter this service wrote

    @property
    def event(self) -> bytes | None:
        """The original event's bytes, as the consumer received them."""
        if self.body is None:
            return None
        if isinstance(self.body.get("raw"), str):
            return str(self.body["raw"]).encode()
        if isinstance(self.body.get("raw_b64"), str):
            return base64.b64decode(self.body["raw_b64"])
        return None

    def to_json(self) -> dict[str, Any]:
        body = self.body or {}
        shown: dict[str, Any] = {name: body[name] for name in ("raw", "raw_b64") if name in body}
        return {"dlq_partition": self.partition, "dlq_offset": self.offset,
                "key": self.key.decode(errors="replace") if self.key else None,
                "error": body.get("error"), "source": {name: body.get(name) for name in (
                    "topic", "partition", "offset")}, **shown}


def replay_group(settings: Settings) -> str:
    return f"{settings.consumer_group}-dlq-replay"


# --- list ----------------------------------------------------------------------------------


def list_letters(args: argparse.Namespace) -> int:
    settings = environment.settings(args)
    letters = event_loop.run(_read(settings, from_start=args.all, limit=args.limit))
    if args.json:
        render.json_lines(letter.to_json() for letter in letters)
    else:
        render.table(([letter.partition, letter.offset, _key(letter), _error(letter),
                       _preview(letter)] for letter in letters),
                     ["partition", "offset", "key", "error", "event"])
        where = "in the topic" if args.all else "not replayed yet"
        render.out(f"{len(letters)} dead letters {where} ({settings.topic_dlq})")
    return 0


async def _read(settings: Settings, from_start: bool, limit: int | None) -> list[DeadLetter]:
    async with _dlq_reader(settings) as reader:
        with tqdm(unit=" letters", desc="read", file=sys.stderr, delay=2) as bar:
            letters = []
            async for letter in reader.letters(from_start, limit):
                letters.append(letter)
                bar.update()
            return letters


def _key(letter: DeadLetter) -> str:
    return letter.key.decode(errors="replace") if letter.key else ""


def _error(letter: DeadLetter) -> str:
    return "(not a dead letter)" if letter.body is None else str(letter.body.get("error"))


def _preview(letter: DeadLetter) -> str:
    event = letter.event
    text = "" if event is None else event.decode(errors="replace")
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…"


# --- replay --------------------------------------------------------------------------------


def replay(args: argparse.Namespace) -> int:
    settings = environment.settings(args)
    mended = read_mended(args.mended) if args.mended else {}
    done = event_loop.run(_replay(settings, mended, args.limit, args.dry_run))
    verb = "would re-publish" if args.dry_run else "re-published"
    render.out(f"{verb} {done.published} events to {settings.topic_settlements} "
               f"({done.mended} mended); skipped {done.skipped} records that carry no event")
    return 0


@dataclass(slots=True)
class Replayed:
    published: int = 0
    mended: int = 0
    skipped: int = 0


async def _replay(
    settings: Settings, mended: dict[tuple[int, int], bytes], limit: int | None, dry_run: bool
) -> Replayed:
    done = Replayed()
    async with _dlq_reader(settings) as reader, _producer(settings, dry_run) as producer:
        letters = [letter async for letter in reader.letters(False, limit)]
        with tqdm(total=len(letters), unit=" events", desc="replay", file=sys.stderr,
                  delay=1) as bar:
            for start in range(0, len(letters), CHUNK):
                chunk = letters[start:start + CHUNK]
                await _publish(producer, settings.topic_settlements, chunk, mended, done)
                if producer is not None:
                    await reader.checkpoint(chunk)
                bar.update(len(chunk))
    return done


async def _publish(
    producer: AIOKafkaProducer | None, topic: str, chunk: Sequence[DeadLetter],
    mended: dict[tuple[int, int], bytes], done: Replayed,
) -> None:
    """Every event of the chunk sent, then every acknowledgement awaited."""
    pending = []
    for letter in chunk:
        value = mended.get((letter.partition, letter.offset), letter.event)
        if value is None:
            done.skipped += 1
            continue
        done.published += 1
        done.mended += (letter.partition, letter.offset) in mended
        if producer is not None:
            pending.append(await producer.send(topic, value, key=letter.key))
    for acknowledged in pending:
        await acknowledged


@asynccontextmanager
async def _producer(settings: Settings, dry_run: bool) -> AsyncIterator[AIOKafkaProducer | None]:
    if dry_run:
        yield None
        return
    producer = build_producer(settings.kafka_bootstrap)
    try:
        await producer.start()
    except KafkaError as exc:
        raise OperatorError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        yield producer
    finally:
        await producer.stop()


def read_mended(path: Path) -> dict[tuple[int, int], bytes]:
    """(DLQ partition, offset) → the mended event, from lines as `dlq list --json` prints
    them. A line that is not one, or whose `raw` is not a JSON object, refuses the file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatorError(f"cannot read {path}: {exc}") from exc
    mended = {}
    for number, line in enumerate(lines, 1):
        if line.strip():
            where, raw = _mended_line(line, f"{path}, line {number}")
            mended[where] = raw
    return mended


def _mended_line(line: str, where: str) -> tuple[tuple[int, int], bytes]:
    try:
        entry = orjson.loads(line)
        partition, offset, raw = entry["dlq_partition"], entry["dlq_offset"], entry["raw"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise OperatorError(f"{where}: expected a JSON object with dlq_partition, dlq_offset "
                            f"and raw, as `tracegate dlq list --json` prints ({exc})") from exc
    if not (isinstance(partition, int) and isinstance(offset, int) and isinstance(raw, str)):
        raise OperatorError(f"{where}: dlq_partition and dlq_offset must be numbers, raw text")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise OperatorError(f"{where}: raw is not JSON ({exc})") from exc
    if not isinstance(event, dict):
        raise OperatorError(f"{where}: raw must be a JSON object (an event)")
    return (partition, offset), raw.encode()


# --- reading the topic ---------------------------------------------------------------------


class _DlqReader:
    """The DLQ topic's partitions, read from the replay checkpoint (or the start) to the end
    offsets seen when reading began."""

    def __init__(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        self.consumer = consumer
        self.partitions = partitions

    async def letters(self, from_start: bool, limit: int | None) -> AsyncIterator[DeadLetter]:
        """In offset order within each partition, at most `limit` in all, up to the high-water
        mark of each partition's fetches. (Not ListOffsets' end offset: Tansu answers it with
        the last batch's first offset + 1, short of a batch of several dead letters.)"""
        for partition in self.partitions:
            start = 0 if from_start else await self.consumer.committed(partition) or 0
            self.consumer.seek(partition, start)
        remaining = set(self.partitions)
        count, quiet_since = 0, time.monotonic()
        while remaining:
            fetched = await self.consumer.getmany(*remaining, timeout_ms=500)
            for records in fetched.values():
                for record in records:
                    if limit is not None and count >= limit:
                        return
                    count += 1
                    yield _letter(record)
            remaining -= await self._caught_up(remaining)
            quiet_since = time.monotonic() if fetched else quiet_since
            if time.monotonic() - quiet_since > _QUIET_S:
                raise OperatorError(f"Kafka sent nothing for {_QUIET_S:.0f} s and never told "
                                    f"the end of {sorted(p.partition for p in remaining)}")

    async def _caught_up(self, partitions: set[TopicPartition]) -> set[TopicPartition]:
        done = set()
        for partition in partitions:
            end = self.consumer.highwater(partition)
            if end is not None and await self.consumer.position(partition) >= end:
                done.add(partition)
        return done

    async def checkpoint(self, chunk: Sequence[DeadLetter]) -> None:
        """Past the last offset of each partition in `chunk` (read in offset order)."""
        ahead: dict[TopicPartition, OffsetAndMetadata] = {}
        for letter in chunk:
            partition = TopicPartition(self.partitions[0].topic, letter.partition)
            ahead[partition] = OffsetAndMetadata(letter.offset + 1, "")
        await self.consumer.commit(ahead)


def _letter(record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    try:
        body = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        body = None
    return DeadLetter(record.partition, record.offset, record.key,
                      body if isinstance(body, dict) else None)


@asynccontextmanager
async def _dlq_reader(settings: Settings) -> AsyncIterator[_DlqReader]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=replay_group(settings),
        enable_auto_commit=False, auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        raise OperatorError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        partitions = await _partitions(consumer, settings.topic_dlq)
        consumer.assign(partitions)
        yield _DlqReader(consumer, partitions)
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    if topic not in await consumer.topics():
        raise OperatorError(f"Kafka has no topic {topic} (TRACEGATE_TOPIC_DLQ)")
    numbers = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, number) for number in sorted(numbers)]


def register(sub: parsing.SubParsers) -> None:
    actions = parsing.group(sub, "dlq", "the dead-letter topic (Kafka directly)")
    shown = parsing.command(actions, "list", "dead letters not replayed yet (--all: every one)",
                            environment.KAFKA_VARIABLES, list_letters)
    shown.add_argument("--all", action="store_true", help="from the topic's start, replayed too")
    shown.add_argument("--limit", type=int, default=None, help="at most this many")
    shown.add_argument("--json", action="store_true",
                       help="one JSON object a line: the form `replay --mended` reads")
    again = parsing.command(
        actions, "replay", "re-publish dead-lettered events (as they were, or mended) to the "
        "settlements topic, each DLQ offset once", environment.KAFKA_VARIABLES, replay,
        description=__doc__)
    again.add_argument("--mended", type=Path, default=None, metavar="FILE.jsonl",
                       help="lines of `dlq list --json` whose raw you edited: those events are "
                            "re-published as edited, the others as they were")
    again.add_argument("--limit", type=int, default=None,
                       help="replay only the next this many dead letters")
    again.add_argument("--dry-run", action="store_true",
                       help="count what would be re-published; publish and commit nothing")
