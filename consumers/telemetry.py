"""A consumer process's metrics: what each batch did, its lag, the size of the first-seen set,
served on a port of its own (TRACEGATE_CONSUMER_METRICS_HOST/PORT; port 0 picks a free one).

The runner and the batch call in here through one line each; everything here costs a batch a
few operations, never one per code or per event beyond counting them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer
from prometheus_client import start_http_server

from service.firstseen.census import count_codes
from service.firstseen.encoding import Layout
from service.kit.metrics import ConsumerMetrics
from service.kit.redis_client import RedisClient
from service.settings import Settings
from service.settlements.stream import BatchReport

log = logging.getLogger(__name__)

# Dead-letter reasons as a few fixed classes (a label of their own each), from the error texts
# of service/settlements (events.py, stream.py, batch.py, heal.py). A text none of
# them matches is "other"; tests/unit/test_consumer_telemetry.py pins each class to the event
# that produces it, so a reworded error shows there rather than as "other" in production.
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), reason) for pattern, reason in (
        (r"^event contains a NUL", "nul_character"),
        (r"^not JSON", "not_json"),
        (r"^event must be a JSON object", "not_object"),
        (r"^type must be ", "unknown_type"),
        (r"^a gate settlement must carry", "incomplete_gate_event"),
        (r"^unknown institution ", "unknown_institution"),
        (r" names unknown settlement ", "unknown_settlement"),
        (r"^settlement \S+ has no line ", "unknown_line"),
        (r"^settlement \S+ is recorded with another body", "conflicting_gate_settlement"),
        (r"^[\w.\[\]-]+: ", "invalid_field"),  # a validation message: "lines.0.quantity: ..."
    )
)


def reason_class(error: str) -> str:
    for pattern, reason in _REASONS:
        if pattern.search(error):
            return reason
    return "other"


def observe_batch(metrics: ConsumerMetrics, seconds: float, report: BatchReport) -> None:
    """One batch processed: its time, its codes, the flags it published, its dead letters."""
    metrics.batch_done(seconds, report.codes, (flag.kind for flag in report.flags))
    for letter in report.dead:
        metrics.dead_lettered(reason_class(letter.error))


async def sample_lag(metrics: ConsumerMetrics, consumer: AIOKafkaConsumer) -> None:
    """Per assigned partition: the high-water mark the last fetch reported minus the position.
    Both are what the consumer already knows; no request goes to the broker."""
    lags = {}
    for partition in consumer.assignment():
        highwater = consumer.highwater(partition)
        if highwater is not None:
            lags[partition.partition] = max(0, highwater - await consumer.position(partition))
    metrics.lags(lags)


@contextlib.asynccontextmanager
async def consumer_telemetry(
    settings: Settings, metrics: ConsumerMetrics, redis: RedisClient
) -> AsyncIterator[str]:
    """Serve `metrics` on the configured port and sample the first-seen set's size, for as
    long as the block runs; yields the metrics URL."""
    host, port = settings.consumer_metrics_host, settings.consumer_metrics_port
    try:
        server, thread = start_http_server(port, host, metrics.registry)
    except OSError as exc:
        raise RuntimeError(
            f"cannot serve the consumer's metrics on {host}:{port} ({exc}); set "
            "TRACEGATE_CONSUMER_METRICS_PORT to a free port, or 0 to pick one") from exc
    url = f"http://{host}:{server.server_port}/metrics"
    log.info("consumer metrics at %s", url)
    layout = Layout(settings.hotset_bucket_bits, settings.hotset_slot_groups)
    sampler = asyncio.create_task(_sample_hot_set(metrics, redis, layout,
                                                  settings.hot_set_sample_s))
    try:
        yield url
    finally:
        sampler.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _sample_hot_set(
    metrics: ConsumerMetrics, redis: RedisClient, layout: Layout, every_s: float
) -> None:
    while True:
        try:
            metrics.hot_set_codes(await count_codes(redis, layout))
        except Exception:  # noqa: BLE001 - Redis away: the gauge keeps its last value
            log.warning("could not count the first-seen set", exc_info=True)
        await asyncio.sleep(every_s)
