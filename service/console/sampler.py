"""The console's sampler: every few seconds it reads Prometheus text from each source (the API
process's own metrics, and every URL in TRACEGATE_METRICS_URLS: each consumer serves its own)
and adds one point to the last hour's buffer. A source that fails is shown as down and the
others carry on; nothing it does can fail a request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from service.console.series import Delta, Reading, SeriesBuffer, combine, delta, read_text

Scrape = Callable[[], Awaitable[str]]


@dataclass(slots=True)
class Source:
    name: str
    scrape: Scrape
    last: Reading | None = None
    change: Delta | None = None
    error: str | None = None
    scraped_at: float | None = None

    def status(self) -> dict[str, Any]:
        return {"source": self.name, "up": self.error is None and self.last is not None,
                "error": self.error, "scraped_at": self.scraped_at}


@dataclass
class Sampler:
    sources: Sequence[Source]
    buffer: SeriesBuffer
    clock: Callable[[], float] = time.time
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def sample(self) -> None:
        """One tick: every source read at once, then one point of all of them."""
        async with self._lock:
            at = self.clock()
            await asyncio.gather(*(self._read(source, at) for source in self.sources))
            live = [s for s in self.sources if s.error is None and s.last is not None]
            readings = [s.last for s in live if s.last is not None]
            changes = [s.change for s in live if s.change is not None]
            self.buffer.add(combine(at, readings, changes))

    async def _read(self, source: Source, at: float) -> None:
        try:
            reading = read_text(await source.scrape(), at)
        except Exception as exc:  # noqa: BLE001 - a source down is a state to show, not a fault
            source.error, source.change = f"{type(exc).__name__}: {exc}"[:200], None
            return
        source.change = delta(reading, source.last) if source.last is not None else None
        source.last, source.error, source.scraped_at = reading, None, at

    def columns(self) -> dict[str, Any]:
        return {**self.buffer.columns(), "sources": [s.status() for s in self.sources]}


def http_source(client: httpx.AsyncClient, url: str) -> Source:
    async def scrape() -> str:
        response = await client.get(url)
        response.raise_for_status()
        return response.text

    return Source(url, scrape)


async def _run(sampler: Sampler, interval_s: float) -> None:
    while True:
        started = time.monotonic()
        await sampler.sample()
        await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))


@asynccontextmanager
async def sampling(
    own: Scrape | None, urls: Sequence[str], interval_s: float
) -> AsyncIterator[Sampler]:
    """A sampler running in the background for as long as the context lasts."""
    async with httpx.AsyncClient(timeout=min(2.0, interval_s)) as client:
        sources = [Source("api", own)] if own is not None else []
        sources += [http_source(client, url) for url in urls]
        sampler = Sampler(sources, SeriesBuffer(interval_s))
        task = asyncio.create_task(_run(sampler, interval_s))
        try:
            yield sampler
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
