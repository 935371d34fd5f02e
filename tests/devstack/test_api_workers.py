"""`tracegate api` with several worker processes (TRACEGATE_API_WORKERS): every worker
bootstraps the same new admin key at start-up (an insert that yields to the others', since
they race) and none may fail; the workers serve the gate on one port."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.devstack.process import ChildProcess, free_port, spawn
from service.settings import Settings
from tests.factories import cn20, institution_id, line, settlement
from tests.faults.processes import PROJECT_ROOT, tracegate_env

WORKERS = 3


@pytest.fixture(scope="module")
def api_process(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[str, str, ChildProcess]]:
    key = f"workers-admin-{secrets.token_hex(8)}"  # new: every worker inserts it at start-up
    port = free_port()
    env = {**tracegate_env(settings), "TRACEGATE_API_PORT": str(port),
           "TRACEGATE_API_WORKERS": str(WORKERS), "TRACEGATE_BOOTSTRAP_ADMIN_KEY": key}
    log = tmp_path_factory.mktemp("api-workers") / "api.log"
    child = spawn("api-workers", [sys.executable, "-m", "cli.main", "api"], log_path=log,
                  env=env, cwd=PROJECT_ROOT, grace_seconds=10.0)
    try:
        yield f"http://127.0.0.1:{port}", key, child
    finally:
        child.stop()


def _wait_ready(url: str, child: ChildProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert child.alive(), child.log_tail()
        time.sleep(0.1)
    pytest.fail(f"API with {WORKERS} workers not ready: {child.log_tail()}")


def _worker_pids(parent: int) -> set[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return {int(pid) for pid in children}


def test_every_worker_starts_and_serves(api_process: tuple[str, str, ChildProcess]) -> None:
    url, key, child = api_process
    _wait_ready(url, child)
    # uvicorn's supervisor restarts a worker that died at start-up: no worker may have.
    log = child.log_tail()
    assert "Traceback" not in log, log
    assert "Child process" not in log, log
    assert len(_worker_pids(child.pid)) >= WORKERS
    headers = {"Authorization": f"Bearer {key}"}
    iid = institution_id()
    code = cn20()
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        registered = client.put(f"/v1/institutions/{iid}", json={
            "name": f"test {iid}", "kind": "retail_pharmacy", "region": "110105"})
        assert registered.status_code == 200, registered.text
        answers = [client.post("/v1/settlements", json=settlement(iid, [line(1, [code])]))
                   for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json()["decision"] == "pay"
    assert answers[1].json()["lines"][0]["reasons"][0]["code"] == "DUPLICATE_PAYMENT"
