"""`tracegate dev --redis-cluster 3 --partitions 6 --consumers 2`: the scaled-out stack on one
box — a Redis Cluster of three primaries from the same redis-server binary, six partitions on
every topic, two consumer processes — takes a settlement, streams its record, and leaves
nothing running after Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from tests.devstack.test_dev_command import PROJECT_ROOT, stack_processes, stop_dev, wait_for_stack

pytestmark = pytest.mark.timeout(300)


def _call(api: str, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{api}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


async def _partitions(bootstrap: str, topics: list[str]) -> dict[str, int]:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await reader.start()
    try:
        await reader.topics()  # fetches the metadata that partitions_for_topic reads
        return {topic: len(reader.partitions_for_topic(topic) or ()) for topic in topics}
    finally:
        await reader.stop()


def test_dev_runs_on_a_cluster_with_six_partitions_and_two_consumers(tmp_path: Path) -> None:
    state_dir, log = tmp_path / "state", tmp_path / "dev.log"
    cmd = [sys.executable, "-m", "cli.main", "dev", "--state-dir", str(state_dir),
           "--redis-cluster", "3", "--partitions", "6", "--consumers", "2"]
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        stack = wait_for_stack(process, state_dir, log)
        assert stack["redis_cluster"] is True
        assert len(stack["redis_nodes"]) == 3
        env = dict(line.split("=", 1) for line in
                   (state_dir / "stack.env").read_text().splitlines())
        assert env["TRACEGATE_REDIS_CLUSTER"] == "true"
        assert env["TRACEGATE_SETTLEMENTS_PARTITIONS"] == "6"
        assert {"consumer-1", "consumer-2"} <= set(stack["pids"])
        counts = asyncio.run(_partitions(stack["kafka_bootstrap"], list(stack["topics"].values())))
        assert counts == dict.fromkeys(stack["topics"].values(), 6)
        _settle_and_see_it_recorded(stack["api_url"], stack["admin_key"])
        assert "Redis Cluster, primaries on ports" in log.read_text()
    finally:
        if process.poll() is None:
            stop_dev(process, log)
    assert stack_processes(stack, state_dir) == []


def _settle_and_see_it_recorded(api: str, key: str) -> None:
    institution = "P19000000001"
    status, _ = _call(api, key, "PUT", f"/v1/institutions/{institution}",
                      {"name": "cluster pharmacy", "kind": "retail_pharmacy", "region": "110105",
                       "go_live_override": None})
    assert status == 200
    codes = [f"8190000000000000{n:04d}" for n in range(12)]  # spread over the three nodes
    body = {"settlement_id": "S-dev-cluster-1", "institution_id": institution,
            "settled_at": "2025-07-01 10:00:00", "lines": [
                {"line_no": 1, "drug_code": "XC09AAL012A001010100543", "quantity": len(codes),
                 "split": False, "trace_codes": codes}]}
    status, answer = _call(api, key, "POST", "/v1/settlements", body)
    assert (status, answer["decision"]) == (200, "pay"), answer
    again = {**body, "settlement_id": "S-dev-cluster-2"}
    status, answer = _call(api, key, "POST", "/v1/settlements", again)
    reasons = answer["lines"][0]["reasons"]
    assert [r["code"] for r in reasons] == ["DUPLICATE_PAYMENT"] * len(codes)
    deadline = time.monotonic() + 60
    while _call(api, key, "GET", "/v1/settlements/S-dev-cluster-1")[0] != 200:
        assert time.monotonic() < deadline, "the consumers never recorded the settlement"
        time.sleep(0.2)


@pytest.mark.parametrize(("argv", "said"), [
    (["--redis-cluster", "2"], "at least 3"),
    (["--partitions", "0"], "--partitions must be at least 1"),
], ids=["cluster-of-two", "no-partitions"])
def test_a_shape_that_cannot_run_is_refused_before_anything_starts(
    argv: list[str], said: str,
) -> None:
    result = subprocess.run([sys.executable, "-m", "cli.main", "dev", *argv],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert said in result.stderr
