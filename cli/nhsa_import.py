"""`tracegate import nhsa FILE`: a platform's export of 3505/3505A messages (JSON lines) onto
the settlements topic, as settlements that did not pass the gate (`"source": "stream"`, the
claw-back path of CONTRACT §5): the consumers decide and record them.

Resumable: the file is sent in chunks, and after Kafka has acknowledged every event of a chunk
its end is written to a checkpoint (FILE.import.json, or in --state-dir). Run the same command
again after an interruption and it carries on from there. The chunk that was in flight when it
stopped is sent again; that doubles nothing, because the consumers record a settlement once
whatever number of times its event arrives (by settlement_id, CONTRACT §5). A file that grew
since (an export still being appended to) carries on with its new lines; a file that changed
under the checkpoint is refused (--restart sends it all again, which is as harmless).

Order: a settlement's key is its settlement_id, so the settlements of a file spread over the
topic's partitions and are decided in parallel, and which of two sales of one code counts
first (§3: processing order) is not always the file's order when they are in different
partitions; the pair is flagged either way, the flag naming both. --ordered sends every
settlement to one partition: the file is then decided in its own order, by one consumer."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tqdm import tqdm

from cli.nhsa_checkpoint import Checkpoint, ImportRefused, Paths, save, start
from cli.nhsa_workers import Encoders
from service.drugs import repository as drugs_repository
from service.institutions import repository as institutions_repository
from service.kit import event_loop
from service.kit.database import build_engine, build_sessionmaker
from service.kit.garbage_collection import tune_for_throughput
from service.kit.kafka import KeyedBatches, build_producer
from service.nhsa.upload import Encoded, Refused, StreamEvent
from service.settings import Settings

CHUNK_CODES = 50_000  # a chunk ends at the first line past this many codes
CHUNK_LINES = 20_000  # or this many lines
SHOWN_REFUSALS = 10


@dataclass(frozen=True, slots=True)
class ImportOptions:
    restart: bool = False  # ignore the checkpoint
    ordered: bool = False  # one partition: decided in the file's order
    chunk_codes: int = CHUNK_CODES
    # Processes reading and mapping the file while this one sends (0: this one does it all).
    # Mapping is most of the work (~12 µs a code here, sending ~2), so one per core.
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)


def import_nhsa(
    path: Path, settings: Settings, state_dir: Path | None, options: ImportOptions
) -> int:
    tune_for_throughput()
    paths = Paths.for_file(path, state_dir)
    try:
        with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="nhsa import",
                  file=sys.stderr) as bar:
            checkpoint = event_loop.run(run_import(path, settings, paths, options, bar.update))
    except (ImportRefused, OSError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    sys.stdout.write(report(path, settings.topic_settlements, paths, checkpoint))
    return 0


async def run_import(
    path: Path, settings: Settings, paths: Paths, options: ImportOptions,
    progress: Callable[[int], None],
) -> Checkpoint:
    """Send what the checkpoint does not cover; returns the final checkpoint. `progress` is
    told the bytes of each chunk once Kafka has confirmed it."""
    checkpoint = start(path, paths, options.restart)
    progress(checkpoint.offset)
    began, cpu = time.perf_counter(), time.process_time()
    engine = build_engine(settings.database_url, pool_size=1)
    producer = build_producer(settings.kafka_bootstrap)
    await producer.start()
    encoders: Encoders | None = None
    try:
        registry = _Registry(build_sessionmaker(engine))
        pack_sizes = await registry.pack_sizes()
        batches = await KeyedBatches.open(producer, settings.topic_settlements,
                                          0 if options.ordered else None)
        sender = _Sender(batches, paths, checkpoint, registry, progress)
        with Encoders(options.workers, pack_sizes) as encoders:
            await _send_file(path, checkpoint, options.chunk_codes, encoders, sender)
    finally:
        await producer.stop()
        await engine.dispose()
        workers_cpu = encoders.cpu_s if encoders is not None else 0.0
        checkpoint.summary.spent(time.perf_counter() - began,
                                 time.process_time() - cpu + workers_cpu)
        save(paths.checkpoint, checkpoint)
    return checkpoint


async def _send_file(
    path: Path, checkpoint: Checkpoint, chunk_codes: int, encoders: Encoders, sender: _Sender
) -> None:
    with path.open("rb") as handle:
        handle.seek(checkpoint.offset)
        chunks = _chunks(handle, checkpoint.line, chunk_codes)
        async for chunk, encoded in encoders.in_order(chunks):
            await sender.send(chunk, encoded)
    await sender.confirm()


@dataclass
class _Registry:
    """What the record knows that a row needs: the drug catalogue (split rows' pack sizes),
    read once, and which institutions are registered, asked as they appear."""

    sessions: async_sessionmaker[AsyncSession]
    known: set[str] = field(default_factory=set)

    async def pack_sizes(self) -> dict[str, int]:
        async with self.sessions() as session:
            return await drugs_repository.all_pack_sizes(session)

    async def registered(self, institution_ids: set[str]) -> set[str]:
        new = institution_ids - self.known
        if new:
            async with self.sessions() as session:
                rows = await institutions_repository.get_many(session, new)
            self.known |= {row.institution_id for row in rows}
        return institution_ids & self.known


@dataclass(frozen=True, slots=True)
class _Chunk:
    first_line: int  # the number of its first line, from 1
    lines: list[bytes]
    end: int  # the file offset after its last line


def _chunks(
    handle: IO[bytes], confirmed_lines: int, chunk_codes: int
) -> Iterator[_Chunk]:
    """Whole lines; codes are estimated by their field name, which every code carries."""
    first, lines, codes = confirmed_lines + 1, [], 0
    for line in handle:
        lines.append(line)
        codes += line.count(b'"drug_trac_codg"')
        if codes >= chunk_codes or len(lines) >= CHUNK_LINES:
            yield _Chunk(first, lines, handle.tell())
            first, lines, codes = first + len(lines), [], 0
    if lines:
        yield _Chunk(first, lines, handle.tell())


@dataclass
class _Sender:
    """Sends chunk after chunk without waiting on Kafka between them; a chunk is confirmed
    (checkpointed) once the next one is on its way, so producing never stalls on acks."""

    batches: KeyedBatches
    paths: Paths
    checkpoint: Checkpoint
    registry: _Registry
    progress: Callable[[int], None]
    _pending: tuple[_Chunk, list[Encoded], list[StreamEvent], list[Any]] | None = None

    async def send(self, chunk: _Chunk, encoded: list[Encoded]) -> None:
        events = await self._registered(encoded)
        sent = await self.batches.send((event.key, event.value) for event in events)
        await self.confirm()
        self._pending = (chunk, encoded, events, sent)

    async def confirm(self) -> None:
        if self._pending is None:
            return
        chunk, encoded, events, sent = self._pending
        await asyncio.gather(*sent)  # raises if Kafka refused: the checkpoint stays before
        self._pending = None
        self._record_refusals(encoded)
        checkpoint = self.checkpoint
        done = chunk.end - checkpoint.offset
        checkpoint.summary.add(encoded, events)
        checkpoint.offset, checkpoint.line = chunk.end, chunk.first_line + len(chunk.lines) - 1
        save(self.paths.checkpoint, checkpoint)
        self.progress(done)

    async def _registered(self, encoded: list[Encoded]) -> list[StreamEvent]:
        """Events of registered institutions; the others' rows are refused here, rather
        than dead-lettered by the consumers one by one."""
        events = [event for item in encoded for event in item.events]
        known = await self.registry.registered({event.institution_id for event in events})
        for item in encoded:
            item.refused += [Refused(e.line, e.rows, _unknown(e)) for e in item.events
                             if e.institution_id not in known]
        return [event for event in events if event.institution_id in known]

    def _record_refusals(self, encoded: list[Encoded]) -> None:
        refused = [r for item in encoded for r in item.refused]
        if refused:
            with self.paths.refused.open("ab") as handle:
                handle.writelines(orjson.dumps(r.to_json()) + b"\n" for r in refused)
        self.checkpoint.refused_bytes = (
            self.paths.refused.stat().st_size if self.paths.refused.exists() else 0)


def _unknown(event: StreamEvent) -> str:
    return (f"settlement {event.key.decode()}: fixmedins_code {event.institution_id} is not a "
            "registered institution (PUT /v1/institutions first)")


def report(path: Path, topic: str, paths: Paths, checkpoint: Checkpoint) -> str:
    s = checkpoint.summary
    rate = s.codes / s.seconds if s.seconds else 0.0
    cpu = s.cpu_s / s.codes * 1e6 if s.codes else 0.0
    lines = [
        f"{path}: {s.messages:,} messages, {s.rows:,} rows -> {s.settlements:,} settlements "
        f"({s.codes:,} trace codes) on {topic} in {s.seconds:.1f} s ({rate:,.0f} codes/s, "
        f"{cpu:.1f} µs of CPU a code)",
        f"refused: {s.refused_rows:,} rows" + (f", each with its reason in {paths.refused}"
                                               if s.refused_rows else ""),
    ]
    lines += [f"  {_refusal_line(raw)}" for raw in _first_refusals(paths.refused)]
    lines.append("the consumers decide these settlements (source \"stream\"): what the gate "
                 "would have refused is flagged; see GET /v1/flags")
    return "\n".join(lines) + "\n"


def _first_refusals(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open("rb") as handle:
        return [orjson.loads(line) for _, line in zip(range(SHOWN_REFUSALS), handle,
                                                       strict=False)]


def _refusal_line(refusal: dict[str, Any]) -> str:
    return f"line {refusal['line']} ({refusal['rows']} rows): {refusal['reason']}"
