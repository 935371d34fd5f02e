"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked: every
TRACEGATE_ variable it sets is a real setting and every tracegate command exists in the CLI."""

from __future__ import annotations

import json
import os
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
    # 18: the PostgreSQL the stack is run and tested on (the embedded server's)
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
                "tracegate_hot_set_codes", "tracegate_partition_months_ahead"}
    assert required <= charted
    grafana = _compose()["services"]["grafana"]["volumes"]
    assert any(v.startswith("./deploy/grafana/tracegate.json:") for v in grafana)


# --- issue 19: a compose that keeps its data, restarts, checks health, and an image that ships
# nothing it should not -------------------------------------------------------------------------

ROOT = COMPOSE.parent
SERVERS = {"kafka": "/var/lib/kafka/data", "redis": "/data", "postgres": "/var/lib/postgresql"}
TRACEGATE = ("migrate", "api", "consumers")


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def test_every_server_keeps_its_data_in_a_named_volume() -> None:
    declared = set(_compose()["volumes"])
    for name, path in SERVERS.items():
        mounts = dict(v.split(":", 1) for v in _services()[name]["volumes"])
        volume = {target: source for source, target in mounts.items()}.get(path)
        assert volume in declared, f"{name} keeps {path} in no named volume ({mounts})"


def test_kafka_writes_where_its_volume_is() -> None:
    env = _services()["kafka"]["environment"]
    assert env["KAFKA_LOG_DIRS"] == SERVERS["kafka"]
    assert env["CLUSTER_ID"], "a fixed cluster id, so the volume stays this cluster's"


def test_redis_appends_and_fsyncs_every_second() -> None:
    command = _services()["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    # an evicted claim is a missed duplicate: Redis must refuse writes rather than evict
    assert options["--maxmemory-policy"] == "noeviction"


def test_every_long_running_service_restarts_and_has_a_healthcheck() -> None:
    for name, service in _services().items():
        if name == "migrate":  # one-shot: retried on failure, done when it exits 0
            assert service["restart"] == "on-failure"
            continue
        assert service.get("restart") == "unless-stopped", name
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
        assert test[0] in ("CMD", "CMD-SHELL"), name


def test_the_api_and_consumer_healthchecks_probe_the_process() -> None:
    api = " ".join(_services()["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in api
    consumer = _services()["consumers"]["healthcheck"]["test"][1:]
    assert consumer == ["tracegate", "consume", "--check"]
    _parser().parse_args(consumer[1:])
    env = _services()["consumers"]["environment"]
    assert env["TRACEGATE_CONSUMER_HEARTBEAT_FILE"], "--check reads this file"


def test_each_process_gets_only_the_secrets_it_reads() -> None:
    from service.settings import API_SECRETS, CONSUMER_SECRETS, Secret

    def secrets_of(name: str) -> set[str]:
        env = _services()[name]["environment"]
        return {s.value for s in Secret if f"TRACEGATE_{s.value.upper()}" in env}

    assert secrets_of("api") == {s.value for s in API_SECRETS}
    assert secrets_of("consumers") == {s.value for s in CONSUMER_SECRETS}
    assert secrets_of("migrate") == set()
    for name in TRACEGATE:
        assert _services()[name]["environment"]["TRACEGATE_ENV"] == "production"


def test_the_api_and_consumers_wait_for_the_migration_and_healthy_servers() -> None:
    for name in ("api", "consumers"):
        depends = _services()[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        for server in SERVERS:
            assert depends[server] == {"condition": "service_healthy"}, (name, server)


def test_production_replication_is_written_beside_the_single_node_values() -> None:
    text = COMPOSE.read_text()
    for line in ("KAFKA_DEFAULT_REPLICATION_FACTOR: \"1\"                # production: 3",
                 "KAFKA_MIN_INSYNC_REPLICAS: \"1\"                       # production: 2",
                 "synchronous_standby_names"):
        assert line in text


# --- the image ---------------------------------------------------------------------------------


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern that matches decides; `!` re-includes. Enough of it
    for this file's patterns (`*`, `dir/`, `**/name`)."""
    import fnmatch

    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        candidates = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        names_and_prefixes = prefixes + parts
        if any(fnmatch.fnmatchcase(p, c) for c in candidates for p in names_and_prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".git/HEAD", "tests/conftest.py", ".tracegate/stack.env",
    "loadtest/results/latest.json", "service/__pycache__/settings.cpython-311.pyc",
    "secrets.json", ".ci/run", "docker-compose.yml",
])
def test_the_build_context_leaves_out(path: str) -> None:
    assert _dockerignore_excludes(path)


@pytest.mark.parametrize("path", [
    "pyproject.toml", "README.md", "service/settings.py", "consumers/runner.py",
    "migrations/versions/0019_code_event_partitions_ahead.py", "cli/main.py",
    "service/firstseen/claim.lua", "service/console/static/index.html",
])
def test_the_build_context_keeps(path: str) -> None:
    assert not _dockerignore_excludes(path)


def test_the_image_is_multi_stage_and_runs_unprivileged() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "Dockerfile").read_text()
             .splitlines()]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 2
    assert froms[0].endswith(" AS build")
    final = lines[lines.index(froms[-1]):]
    assert not any(line.startswith(("COPY . ", "ADD ")) for line in lines)
    assert not any(line.startswith("COPY ") and "--from=" not in line for line in final), \
        "the runtime stage copies nothing from the context"
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    copied = {line.split()[1] for line in lines[: lines.index(froms[-1])]
              if line.startswith("COPY ")}
    for package in ("service", "consumers", "migrations", "cli"):
        assert package in copied, f"the build stage copies no {package}/"
    assert "tests" not in copied


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """Where a compose implementation exists (docker compose or docker-compose), it must
    accept the file; the checks above are what holds without one."""
    import shutil
    import subprocess

    candidates = [["docker", "compose"], ["docker-compose"]]
    usable = [c for c in candidates if shutil.which(c[0]) and subprocess.run(
        [*c, "version"], capture_output=True, check=False).returncode == 0]
    if not usable:
        pytest.skip("no docker compose / docker-compose on this machine")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "TRACEGATE_API_KEY_PEPPER": "p" * 40, "TRACEGATE_PATIENT_HASH_KEY": "h" * 40,
           "TRACEGATE_BOOTSTRAP_ADMIN_KEY": "a" * 40}
    result = subprocess.run([*usable[0], "-f", str(COMPOSE), "config", "-q"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    unset = subprocess.run([*usable[0], "-f", str(COMPOSE), "config", "-q"],
                           env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=False)
    assert unset.returncode != 0, "compose must refuse to run without the secrets"
