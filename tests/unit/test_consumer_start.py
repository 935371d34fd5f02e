"""A consumer told to stop (SIGTERM) while it is still starting stops then, rather than once
aiokafka's start() has joined the group: here a broker that accepts the connection and never
answers keeps start() waiting, as a slow join or a rebalance would."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaError

from consumers.runner import _started, build_consumer
from service.settings import Settings


async def test_a_stop_while_starting_ends_the_start() -> None:
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # never answered
        connected.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    consumer = build_consumer(Settings(kafka_bootstrap=f"127.0.0.1:{port}"))
    consumer.subscribe(["tracegate.settlements"])
    stop = asyncio.Event()
    try:
        starting = asyncio.create_task(_started(consumer, stop))
        await connected.wait()  # start() is under way: its first request has no answer
        assert not starting.done()
        stop.set()
        assert await starting is False
    finally:
        await consumer.stop()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_started_consumer_goes_on() -> None:
    """The race lost by the stop: start()'s own outcome counts (here its error)."""
    consumer = build_consumer(Settings(kafka_bootstrap="127.0.0.1:9"))  # nothing listens
    consumer.subscribe(["tracegate.settlements"])
    try:
        with pytest.raises(KafkaError):  # not taken as started
            await _started(consumer, asyncio.Event())
    finally:
        await consumer.stop()
