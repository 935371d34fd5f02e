"""`tracegate loadtest nhsa-import`: trace codes per second that `tracegate import nhsa` puts
on the settlements topic, from a generated platform export (3505A batches and 3505 sales,
realistic rows: counts as text, empty optional fields, Chinese names, codes with the CR/LF a
scanner adds, split rows with and without a catalogue entry).

The figure is codes / wall time of the whole import (catalogue read, workers started, every
event acknowledged by Kafka, checkpoints written) against the embedded broker, on this machine;
`cpu_us_per_code` is what the import spent (its process and its workers; the broker's CPU is
not in it). The result is then checked against ground truth the generator builds on its own,
without the mapping under test: every settlement read back from the topic, exactly once, and
exactly the event expected (`correct`)."""

from __future__ import annotations

import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from cli.devstack.servers import ensure_topics
from cli.nhsa_checkpoint import Paths
from cli.nhsa_import import ImportOptions, run_import
from loadtest.stack import open_stack, register
from loadtest.stats import median
from loadtest.workload import Institution
from service.drugs import service as drugs
from service.drugs.schemas import CatalogueRow
from service.kit import event_loop
from service.settings import Settings

PARTITIONS = 6
PACK_SIZES = (10, 12, 20, 24, 30, 100)
_READ_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Export:
    lines: list[bytes]  # the file: one message a line
    expected: dict[str, dict[str, Any]]  # settlement_id -> the topic event, by the generator
    institutions: list[Institution]
    catalogue: list[CatalogueRow]

    @property
    def codes(self) -> int:
        return sum(len(line["trace_codes"]) for event in self.expected.values()
                   for line in event["lines"])


@dataclass(frozen=True)
class Target:
    """Servers to run against: a benchmark's own stack, or the test suite's."""

    database_url: str
    dsn: str
    kafka_bootstrap: str


def run_nhsa_import(codes: int, repeats: int, seed: int = 42) -> dict[str, Any]:
    """The same export imported `repeats` times (each onto a topic of its own); the figure is
    the median run's. The load average before each run is kept beside it: the machine is
    shared, and a figure means little without it."""
    export = generate_export(codes, seed)
    stack = open_stack(export.institutions)
    try:
        target = Target(stack.postgres.url, stack.dsn, stack.kafka_bootstrap)
        runs = [{"load_average_1m": os.getloadavg()[0],
                 **event_loop.run(measure(target, export, stack.tmp, f"nhsa{n}"))}
                for n in range(repeats)]
    finally:
        stack.close()
    return {"codes_per_s": round(median([run["codes_per_s"] for run in runs])),
            "correct": all(run["correct"] for run in runs), "runs": runs}


async def measure(target: Target, export: Export, workdir: Path, run: str) -> dict[str, Any]:
    topic = f"lt.{run}.{secrets.token_hex(3)}.settlements"
    await ensure_topics(target.kafka_bootstrap, {topic: PARTITIONS})
    await _prepare(target, export)
    path = workdir / f"{run}-export.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in export.lines))
    settings = Settings(database_url=target.database_url, kafka_bootstrap=target.kafka_bootstrap,
                        topic_settlements=topic)
    began = time.perf_counter()
    checkpoint = await run_import(path, settings, Paths.for_file(path, workdir),
                                  ImportOptions(restart=True), lambda n: None)
    seconds = time.perf_counter() - began
    checks = await check_topic(target.kafka_bootstrap, topic, export.expected)
    summary = checkpoint.summary
    return {
        "messages": len(export.lines), "settlements": summary.settlements,
        "codes": summary.codes, "seconds": round(seconds, 3),
        "codes_per_s": round(summary.codes / seconds), "cpu_us_per_code": round(
            summary.cpu_s / summary.codes * 1e6, 2), "refused_rows": summary.refused_rows,
        "correct": all(value == 0 for value in checks.values())
        and summary.codes == export.codes, "checks": checks,
    }


async def _prepare(target: Target, export: Export) -> None:
    await register(target.dsn, export.institutions)
    connection = await asyncpg.connect(target.dsn)
    try:
        await drugs.import_catalogue(connection, export.catalogue, lambda n: None)
    finally:
        await connection.close()


async def check_topic(
    bootstrap: str, topic: str, expected: dict[str, dict[str, Any]]
) -> dict[str, int]:
    """Counts of what is wrong (all 0 when correct): settlements missing, doubled, not
    expected, or arrived unlike the expected event."""
    arrived = await _read_all(bootstrap, topic, len(expected))
    counts = Counter(sid for sid, _ in arrived)
    unlike = sum(1 for sid, event in arrived if sid in expected and event != expected[sid])
    return {"missing": sum(1 for sid in expected if sid not in counts),
            "doubled": sum(1 for n in counts.values() if n > 1),
            "unexpected": sum(1 for sid in counts if sid not in expected), "unlike": unlike}


async def _read_all(bootstrap: str, topic: str, wanted: int) -> list[tuple[str, Any]]:
    """Every record of the topic, until `wanted` arrived and a poll brought nothing more."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                              max_partition_fetch_bytes=8 * 1024 * 1024)
    await reader.start()
    found: list[tuple[str, Any]] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while time.monotonic() < deadline:
            batch = await reader.getmany(timeout_ms=500, max_records=10_000)
            got = [(r.key.decode() if r.key else "", orjson.loads(r.value or b"null"))
                   for records in batch.values() for r in records]
            found += got
            if not got and len(found) >= wanted:
                break
    finally:
        await reader.stop()
    return found


# --- the generated export and its ground truth ---------------------------------------------


def generate_export(codes: int, seed: int = 42) -> Export:
    rng = random.Random(seed)
    institutions = [Institution(f"P{n:011d}", "retail_pharmacy", None) for n in range(50)]
    catalogue = [CatalogueRow(f"XN{n:06d}A001010100{n % 1000:03d}", f"布洛芬缓释胶囊 {n}",
                              rng.choice(PACK_SIZES)) for n in range(300)]
    gen = _Generator(rng, institutions, catalogue)
    while gen.codes < codes:
        gen.message()
    return Export(gen.lines, gen.expected, institutions, catalogue)


@dataclass
class _Generator:
    rng: random.Random
    institutions: Sequence[Institution]
    catalogue: Sequence[CatalogueRow]
    serial: int = 0
    codes: int = 0
    lines: list[bytes] = field(default_factory=list)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)

    def message(self) -> None:
        """A 3505 sale (a fifth of messages) or a 3505A batch of 1-12 receipts."""
        institution = self.rng.choice(self.institutions).institution_id
        body: dict[str, Any]
        if self.rng.random() < 0.2:
            receipt = self.receipt(institution, "3505", rows=1)
            body = {"selinfo": receipt[0]}
        else:
            body = {"selinfoDetail": [row for _ in range(self.rng.randint(1, 12))
                                      for row in self.receipt(institution, "3505A")]}
        infno = "3505" if "selinfo" in body else "3505A"
        envelope = {"infno": infno, "msgid": f"{institution}{self.serial:016d}",
                    "fixmedins_code": institution, "fixmedins_name": "测试大药房",
                    "inf_time": "2025-07-01 10:00:00", "opter_name": "张三", "infver": "V1.0",
                    "signtype": "", "input": body}
        self.lines.append(orjson.dumps(envelope))

    def receipt(self, institution: str, infno: str, rows: int = 0) -> list[dict[str, Any]]:
        """The rows of one receipt, and the settlement they must become."""
        self.serial += 1
        docno, bchno = f"R{self.serial:012d}", f"B{self.serial:012d}"
        sold_at = f"2025-07-{self.rng.randint(1, 28):02d} {self.rng.randint(8, 21):02d}:" \
                  f"{self.rng.randint(0, 59):02d}:{self.rng.randint(0, 59):02d}"
        psn = f"psn{self.rng.randint(1, 10**6):07d}" if self.rng.random() < 0.7 else ""
        made = [self.row(docno, bchno, sold_at, psn) for _ in range(rows or
                                                                    self.rng.randint(1, 4))]
        sid = f"3505:{institution}:{bchno}" if infno == "3505" else \
            f"3505A:{institution}:{docno}"
        event = {"type": "settlement", "source": "stream", "settlement_id": sid,
                 "institution_id": institution, "settled_at": sold_at,
                 "lines": [dict(line, line_no=n) for n, (_, line) in enumerate(made, 1)]}
        if psn:
            event["patient_id"] = psn
        self.expected[sid] = event
        return [row for row, _ in made]

    def row(
        self, docno: str, bchno: str, sold_at: str, psn: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A sale row as sent, and the line it must become."""
        split = self.rng.random() < 0.1
        drug = self.rng.choice(self.catalogue)
        listed = not split or self.rng.random() < 0.9  # a split drug the catalogue lacks
        code = drug.med_list_codg if listed else f"XZ{self.serial:08d}"
        count = self.rng.randint(1, 5) if split else self.rng.randint(1, 3)
        codes = [self.code() for _ in range(1 if split else count)]
        row = {"med_list_codg": code, "fixmedins_hilist_id": f"YP{self.serial}",
               "fixmedins_hilist_name": drug.name, "fixmedins_bchno": bchno,
               "rtal_docno": docno, "setl_id": "", "psn_no": psn, "rx_flag": "0",
               "trdn_flag": "1" if split else "0", "sel_retn_cnt": f"{count}.0000",
               "sel_retn_time": sold_at, "sel_retn_opter_name": "李四", "memo": "",
               "drugtracinfo": [{"drug_trac_codg": c} for c in codes]}
        line: dict[str, Any] = {"drug_code": code, "quantity": count, "split": split,
                                "trace_codes": codes}
        if split and listed:
            line["pack_size"] = drug.pack_size
        return row, line

    def code(self) -> str:
        """A fresh cn20, now and then with the CR/LF a scanner sends after it."""
        self.codes += 1
        code = f"8{self.serial % 900_000 + 100_000:06d}{self.codes:013d}"
        return code + "\r\n" if self.rng.random() < 0.1 else code
