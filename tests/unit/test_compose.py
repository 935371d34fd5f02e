"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked: every
TRACEGATE_ variable it sets is a real setting and every tracegate command exists in the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs in the dev extra

from cli.main import _parser
from service.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _setting_names() -> set[str]:
    return {f"TRACEGATE_{name.upper()}" for name in Settings.model_fields}


def test_every_tracegate_variable_is_a_setting() -> None:
    services = _compose()["services"]
    names = {
        var
        for service in services.values()
        for var in (service.get("environment") or {})
        if var.startswith("TRACEGATE_")
    }
    assert names, "the tracegate services should be configured by TRACEGATE_ variables"
    assert names <= _setting_names(), names - _setting_names()


def test_every_tracegate_command_exists() -> None:
    commands = [
        service["command"]
        for service in _compose()["services"].values()
        if service.get("command", [None])[0] == "tracegate"
    ]
    assert {tuple(c[1:2]) for c in commands} == {("migrate",), ("api",), ("consume",)}
    for command in commands:
        _parser().parse_args(command[1:])  # exits (SystemExit) on an unknown command


def test_compose_runs_the_three_servers() -> None:
    images = {s.get("image", "") for s in _compose()["services"].values()}
    assert any(i.startswith("apache/kafka") for i in images)
    assert any(i.startswith("redis:7") for i in images)
    # 18: the rebuild computes owner tokens with crc32(), new in PostgreSQL 18
    assert any(i.startswith("postgres:18") for i in images)


def test_unknown_command_is_refused() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["no-such-command"])
