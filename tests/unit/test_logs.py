"""JSON log lines (service/kit/logs.py) and the access log with its request id
(service/api/access_log.py), on a tiny ASGI app: no server needed."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx
import pytest
import structlog
from starlette.types import Receive, Scope, Send

from service.api.access_log import AccessLog
from service.kit.logs import configure_logging


@pytest.fixture
def captured(logging_restored: None) -> io.StringIO:
    """The process's logging pointed at a buffer, put back afterwards (pytest's own handlers
    included)."""
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def ours(stream: io.StringIO) -> list[dict[str, Any]]:
    """The lines of the middleware and the app (asyncio and others log at DEBUG too)."""
    return [line for line in lines(stream) if line["logger"].startswith("tracegate.")]


def test_http_clients_log_no_urls(captured: io.StringIO) -> None:
    logging.getLogger("httpx").info("HTTP Request: GET http://t/x?api_key=tg_secret")
    assert lines(captured) == []


def test_stdlib_and_structlog_records_become_json_lines(captured: io.StringIO) -> None:
    logging.getLogger("consumers.runner").info("joined group %s", "g1")
    structlog.get_logger("tracegate.test").warning("odd", count=3)
    first, second = lines(captured)
    assert (first["event"], first["level"], first["logger"]) == ("joined group g1", "info",
                                                                 "consumers.runner")
    assert (second["event"], second["count"], second["level"]) == ("odd", 3, "warning")
    assert {"timestamp", "pid"} <= set(first) & set(second)


def test_aiokafka_debug_line_of_a_sent_message_keeps_no_value(captured: io.StringIO) -> None:
    logging.getLogger("aiokafka.producer.producer").debug(
        "Sending (key=%s value=%s) to %s", b"S-1", b'{"patient_id": "psn-9"}', "tp-0")
    [line] = lines(captured)
    assert "psn-9" not in line["event"]
    assert "S-1" in line["event"]
    assert "23 bytes" in line["event"]


def test_sqlalchemy_echo_stays_off_at_debug(captured: io.StringIO) -> None:
    logging.getLogger("sqlalchemy.engine.Engine").info("INSERT ... ('psn-9',)")
    assert lines(captured) == []


def test_the_level_is_applied(captured: io.StringIO) -> None:
    configure_logging("WARNING", captured)
    logging.getLogger("x").info("hidden")
    structlog.get_logger("y").info("hidden too")
    logging.getLogger("x").warning("shown")
    assert [line["event"] for line in lines(captured)] == ["shown"]


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    structlog.get_logger("tracegate.handler").info("inside")
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _explodes(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("bug")


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=AccessLog(app), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_access_line_and_request_id(captured: io.StringIO) -> None:
    async with _client(_app) as client:
        given = await client.get("/v1/codes/x?api_key=tg_secret", headers={
            "X-Request-ID": "pos-42.a", "Authorization": "Bearer tg_also_secret"})
        made = await client.post("/missing", content=b'{"patient_id": "psn-9"}',
                                 headers={"X-Request-ID": "no spaces allowed"})
    assert given.headers["x-request-id"] == "pos-42.a"
    assert made.headers["x-request-id"] != "no spaces allowed"
    inside, access, inside_2, access_2 = ours(captured)
    assert inside["request_id"] == access["request_id"] == "pos-42.a"  # bound to every line
    assert (access["method"], access["path"], access["status"]) == ("GET", "/v1/codes/x", 200)
    assert access["duration_ms"] >= 0
    assert inside_2["request_id"] == access_2["request_id"] == made.headers["x-request-id"]
    assert access_2["status"] == 404
    text = captured.getvalue()
    assert "tg_secret" not in text
    assert "tg_also_secret" not in text
    assert "psn-9" not in text


async def test_a_failing_app_is_logged_as_500(captured: io.StringIO) -> None:
    async with _client(_explodes) as client:
        assert (await client.get("/boom")).status_code == 500
    assert [line["status"] for line in ours(captured) if line["event"] == "request"] == [500]


async def test_probes_are_logged_below_info(captured: io.StringIO) -> None:
    configure_logging("INFO", captured)
    async with _client(_app) as client:
        await client.get("/healthz")
        await client.get("/v1/flags")
    assert [line.get("path") for line in ours(captured) if line["event"] == "request"] == [
        "/v1/flags"]


@pytest.mark.usefixtures("logging_restored")
@pytest.mark.parametrize("level", [None, "INFO"])
def test_the_load_test_keeps_library_chatter_off_its_progress_bars(
    level: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """`tracegate loadtest` logs at WARNING unless TRACEGATE_LOG_LEVEL says otherwise: its own
    Kafka clients' INFO lines (a group joined, a coordinator found) drowned its progress."""
    import loadtest.cli
    from cli.main import main

    def harness(args: list[str]) -> int:
        logging.getLogger("aiokafka.consumer.group_coordinator").info("Discovered coordinator")
        return 0

    if level is None:
        monkeypatch.delenv("TRACEGATE_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TRACEGATE_LOG_LEVEL", level)
    monkeypatch.setattr(loadtest.cli, "main", harness)
    assert main(["loadtest", "stream"]) == 0
    assert ("Discovered coordinator" in capsys.readouterr().err) == (level is not None)
