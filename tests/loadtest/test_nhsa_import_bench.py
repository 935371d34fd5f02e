"""`tracegate loadtest nhsa-import` on a tiny export against the suite's servers: the import's
result is checked against the generator's ground truth, and that check can fail. No timed
assertions: the figure lives in the benchmark's output."""

from __future__ import annotations

import secrets
from pathlib import Path

from cli.devstack.servers import ensure_topics
from loadtest.nhsa_import import PARTITIONS, Target, check_topic, generate_export, measure
from service.kit.kafka import KeyedBatches, build_producer
from service.settings import Settings


async def test_the_import_benchmark_matches_its_ground_truth(
    settings: Settings, tmp_path: Path
) -> None:
    export = generate_export(3000, seed=5)
    assert 3000 <= export.codes < 3100
    lines = [line for event in export.expected.values() for line in event["lines"]]
    assert any(line["split"] and "pack_size" in line for line in lines)
    assert any(line["split"] and "pack_size" not in line for line in lines)  # not catalogued
    target = Target(settings.database_url, settings.asyncpg_dsn, settings.kafka_bootstrap)
    result = await measure(target, export, tmp_path, "t")
    assert result["correct"], result["checks"]
    assert (result["codes"], result["settlements"], result["refused_rows"]) == (
        export.codes, len(export.expected), 0)
    assert result["codes_per_s"] > 0


async def test_the_ground_truth_check_finds_what_is_missing_doubled_or_unlike(
    settings: Settings
) -> None:
    topic = f"t.{secrets.token_hex(3)}.settlements"
    await ensure_topics(settings.kafka_bootstrap, {topic: PARTITIONS})
    producer = build_producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        batches = await KeyedBatches.open(producer, topic)
        sent = [(b"S1", b'{"a": 1}'), (b"S2", b'{"a": 2}'), (b"S2", b'{"a": 2}'),
                (b"S3", b'{"a": 9}'), (b"S4", b'{"a": 4}')]
        for future in await batches.send(sent):
            await future
    finally:
        await producer.stop()
    expected = {"S1": {"a": 1}, "S2": {"a": 2}, "S3": {"a": 3}, "S5": {"a": 5}}
    checks = await check_topic(settings.kafka_bootstrap, topic, expected)
    assert checks == {"missing": 1, "doubled": 1, "unexpected": 1, "unlike": 1}


def test_tracegate_loadtest_takes_the_benchmark_and_says_what_it_measures() -> None:
    from loadtest.cli import _parser

    parser = _parser()
    assert parser.parse_args(["nhsa-import", "--quick"]).command == "nhsa-import"
    assert "nhsa-import" in parser.format_help()
