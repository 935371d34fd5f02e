"""The worker processes of `tracegate import nhsa`: each maps and encodes whole chunks of the
file while the importing process sends. A module of its own, importing only what mapping needs,
which is all a worker loads."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol, TypeVar

from service.kit.garbage_collection import tune_for_throughput
from service.nhsa.upload import Encoded, encode_line

_PACK_SIZES: dict[str, int] = {}  # this worker's copy of the catalogue


class Chunk(Protocol):
    @property
    def first_line(self) -> int: ...  # its number in the file, from 1

    @property
    def lines(self) -> list[bytes]: ...


C = TypeVar("C", bound=Chunk)


def encode_chunk(first_line: int, lines: list[bytes], pack_sizes: dict[str, int]) -> list[Encoded]:
    return [encode_line(line, first_line + n, pack_sizes)
            for n, line in enumerate(lines) if line.strip()]


def start(pack_sizes: dict[str, int]) -> None:
    _PACK_SIZES.update(pack_sizes)
    tune_for_throughput()


def encode(first_line: int, lines: list[bytes]) -> tuple[list[Encoded], float]:
    """In a worker: the chunk's lines encoded, and the CPU seconds that took."""
    began = time.process_time()
    return encode_chunk(first_line, lines, _PACK_SIZES), time.process_time() - began


class Encoders:
    """Chunks mapped and encoded in worker processes, a few ahead, handed back in file order
    (the checkpoint moves in order). The workers are forked from a fork server that has
    imported only this module: not from the importing process, which runs an event loop and
    threads, and not spawned, each importing everything again (seconds on a busy machine).
    With no workers the importing process encodes each chunk itself."""

    def __init__(self, workers: int, pack_sizes: dict[str, int]) -> None:
        self._pack_sizes = pack_sizes
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=start,
                                             initargs=(pack_sizes,))
        self._ahead = workers + 1
        self.cpu_s = 0.0  # spent by the workers

    def __enter__(self) -> Encoders:
        return self

    def __exit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    async def in_order(self, chunks: Iterator[C]) -> AsyncIterator[tuple[C, list[Encoded]]]:
        if self._pool is None:
            for chunk in chunks:
                yield chunk, encode_chunk(chunk.first_line, chunk.lines, self._pack_sizes)
            return
        loop = asyncio.get_running_loop()
        queued: deque[tuple[C, asyncio.Future[tuple[list[Encoded], float]]]] = deque()
        for chunk in chunks:
            queued.append((chunk, loop.run_in_executor(
                self._pool, encode, chunk.first_line, chunk.lines)))
            if len(queued) > self._ahead:
                yield await self._next(queued)
        while queued:
            yield await self._next(queued)

    async def _next(
        self, queued: deque[tuple[C, asyncio.Future[tuple[list[Encoded], float]]]]
    ) -> tuple[C, list[Encoded]]:
        chunk, encoding = queued.popleft()
        encoded, cpu_s = await encoding
        self.cpu_s += cpu_s
        return chunk, encoded
