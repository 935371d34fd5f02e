"""The operator CLI without servers: every action's --help names the variables it reads, the
triage call's request and answer (its route comes with CONTRACT §7; a stand-in transport plays
the API here), and the pure parts."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from cli.main import _parser
from cli.operator import environment, flags
from cli.operator.api import ApiClient
from cli.operator.environment import ApiAccess, OperatorError

ACTIONS = {
    ("institutions", "put"): "TRACEGATE_API_KEY", ("institutions", "list"): "TRACEGATE_API_URL",
    ("institutions", "import"): "TRACEGATE_DATABASE_URL", ("keys", "create"): "TRACEGATE_API_KEY",
    ("keys", "list"): "TRACEGATE_API_KEY", ("keys", "revoke"): "TRACEGATE_API_KEY",
    ("code", "show"): "TRACEGATE_API_URL", ("flags", "tail"): "TRACEGATE_API_KEY",
    ("flags", "set"): "TRACEGATE_API_KEY", ("dlq", "list"): "TRACEGATE_KAFKA_BOOTSTRAP",
    ("dlq", "replay"): "TRACEGATE_TOPIC_SETTLEMENTS",
    ("partitions", "ensure"): "TRACEGATE_DATABASE_URL",
}


@pytest.mark.parametrize(("action", "variable"), ACTIONS.items())
def test_every_action_lists_its_options_and_variables(
    action: tuple[str, str], variable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args([*action, "--help"])
    shown = capsys.readouterr().out
    assert "--stack-env" in shown
    assert "environment:" in shown
    assert variable in shown
    assert "TRACEGATE_LOG_LEVEL" in shown


def test_loadtest_help_says_what_each_benchmark_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["loadtest", "--help"])
    shown = capsys.readouterr().out
    for benchmark in ("stream", "gate", "memory", "rebuild", "baselines", "all"):
        assert f"\n  {benchmark} " in shown
    assert "Quix Streams" in shown


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def test_flags_set_sends_the_triage_patch_and_shows_the_history(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        flag = {"flag_id": "fl_1", "kind": "duplicate_payment", "severity": "high",
                "trace_code": "81234570000000000035", "institution_id": "P11010500001",
                "settlement_id": "S-1", "line_no": 2, "detected_at": "2025-04-02T02:15:00Z",
                "status": "closed", "resolution": "legitimate", "first_payment": None,
                "history": [{"status": "closed", "resolution": "legitimate",
                             "note": "a return", "by": {"key_id": 7, "role": "ops"},
                             "at": "2025-04-02T03:00:00Z"}]}
        return httpx.Response(200, json=flag)

    _stand_in(monkeypatch, api)
    args = _args("flags", "set", "fl_1", "closed", "--resolution", "legitimate", "--note",
                 "a return")
    assert args.command(args) == 0
    [request] = sent
    assert (request.method, request.url.path) == ("PATCH", "/v1/flags/fl_1")
    assert json.loads(request.content) == {"status": "closed", "resolution": "legitimate",
                                           "note": "a return"}
    assert request.headers["authorization"] == "Bearer tg_k"
    shown = capsys.readouterr().out
    assert "key 7 (ops)" in shown
    assert "2025-04-02 11:00:00" in shown  # the history's time in Asia/Shanghai


def test_flags_set_shows_the_apis_refusal_in_words(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    def api(_: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": {"code": "INVALID_TRANSITION",
                                                   "message": "closed -> escalated"}})

    _stand_in(monkeypatch, api)
    args = _args("flags", "set", "fl_1", "escalated")
    assert args.command(args) == 1
    assert "409 INVALID_TRANSITION: closed -> escalated" in capsys.readouterr().err


def _stand_in(monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
    access = ApiAccess(api_url="http://api.invalid", api_key=SecretStr("tg_k"))
    monkeypatch.setattr(environment, "api_access", lambda _: access)
    monkeypatch.setattr(flags, "ApiClient", lambda a: ApiClient(
        a, transport=httpx.MockTransport(answer)))


def test_since_takes_a_span_or_an_instant() -> None:
    back = dt.datetime.fromisoformat(flags.since("2h"))
    assert abs((dt.datetime.now(dt.UTC) - back) - dt.timedelta(hours=2)) < dt.timedelta(minutes=1)
    assert flags.since("2025-04-02T10:15:00+08:00") == "2025-04-02T10:15:00+08:00"
    for bad in ("yesterday", "2025-04-02T10:15:00"):
        with pytest.raises(argparse.ArgumentTypeError):
            flags.since(bad)


def test_an_unreachable_api_is_said_in_words() -> None:
    access = ApiAccess(api_url="http://127.0.0.1:9", api_key=SecretStr("tg_k"))
    with ApiClient(access, timeout_s=2) as api, pytest.raises(OperatorError,
                                                              match="cannot reach the API"):
        api.call("GET", "/v1/flags")
