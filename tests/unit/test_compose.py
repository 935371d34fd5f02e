"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked: every
TRACEGATE_ variable it sets is a real setting and every tracegate command exists in the CLI."""

from __future__ import annotations

import json
import re
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


DEPLOY = COMPOSE.parent / "deploy"


def test_prometheus_scrapes_the_api_and_every_consumer_where_they_serve() -> None:
    services = _compose()["services"]
    env = services["consumers"]["environment"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    [api_target] = jobs["tracegate-api"]["static_configs"][0]["targets"]
    assert api_target == f"api:{services['api']['environment']['TRACEGATE_API_PORT']}"
    [consumers] = jobs["tracegate-consumers"]["dns_sd_configs"]
    assert consumers["names"] == ["consumers"]
    assert str(consumers["port"]) == env["TRACEGATE_CONSUMER_METRICS_PORT"]
    assert env["TRACEGATE_CONSUMER_METRICS_HOST"] == "0.0.0.0"  # reachable from prometheus
    mounts = services["prometheus"]["volumes"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_the_dashboard_charts_only_metrics_the_processes_export() -> None:
    from service.kit.metrics import ConsumerMetrics, GateMetrics

    exported = {
        name for metrics in (GateMetrics(), ConsumerMetrics())
        for family in metrics.registry.collect()
        for name in (family.name, f"{family.name}_total", f"{family.name}_bucket",
                     f"{family.name}_count", f"{family.name}_sum")
    }
    dashboard = json.loads((DEPLOY / "grafana" / "tracegate.json").read_text())
    charted = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\btracegate_\w+", target["expr"])}
    assert charted
    assert charted <= exported, charted - exported
    required = {"tracegate_gate_request_seconds_bucket", "tracegate_codes_processed_total",
                "tracegate_flags_total", "tracegate_consumer_lag",
                "tracegate_consumer_batch_seconds_bucket", "tracegate_dlq_total",
                "tracegate_hot_set_codes"}
    assert required <= charted
    grafana = _compose()["services"]["grafana"]["volumes"]
    assert any(v.startswith("./deploy/grafana/tracegate.json:") for v in grafana)
