"""The HTTP API of one scenario's settings, run in this process (lifespan and all) and spoken to
over ASGI: the gate, verify, institutions and /readyz, as an integrator sees them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from service.api.app import create_app
from service.settings import Settings
from tests.faults.workload import DRUG_CODE, KINDS


@dataclass(frozen=True, slots=True)
class Readiness:
    started: float  # monotonic seconds
    finished: float
    status: int
    checks: dict[str, str]

    def unreachable(self, component: str) -> bool:
        return self.status == 503 and self.checks.get(component) == "unreachable"


@dataclass
class Gate:
    http: httpx.AsyncClient
    admin: dict[str, str]
    regulator: dict[str, str]
    timeout_s: float = 30.0

    async def register(self, institutions: list[str]) -> None:
        for number, institution in enumerate(institutions):
            body = {"name": f"fault test {institution}", "kind": KINDS[number % len(KINDS)],
                    "region": "110105", "go_live_override": None}
            response = await self.http.put(f"/v1/institutions/{institution}", json=body,
                                           headers=self.admin)
            assert response.status_code == 200, response.text

    async def settle(self, settlement_id: str, institution: str, code: str) -> httpx.Response:
        """One settlement of one pack, enforced (settled after every go-live)."""
        body = {"settlement_id": settlement_id, "institution_id": institution,
                "settled_at": "2025-07-15 12:00:00", "patient_id": "psn-fault",
                "lines": [{"line_no": 1, "drug_code": DRUG_CODE, "quantity": 1,
                           "split": False, "trace_codes": [code]}]}
        return await asyncio.wait_for(
            self.http.post("/v1/settlements", json=body, headers=self.admin), self.timeout_s)

    async def status(self, institution: str, code: str) -> str:
        """What verify says of `code`: unpaid, paid, ... (or the error code)."""
        response = await asyncio.wait_for(self.http.post(
            "/v1/codes/verify", json={"institution_id": institution, "trace_codes": [code]},
            headers=self.regulator), self.timeout_s)
        if response.status_code != 200:
            return str(error_code(response))
        status: str = response.json()["results"][0]["status"]
        return status

    async def readiness(self) -> Readiness:
        started = time.monotonic()
        response = await asyncio.wait_for(self.http.get("/readyz"), self.timeout_s)
        checks: dict[str, str] = response.json().get("checks", {})
        return Readiness(started, time.monotonic(), response.status_code, checks)

    async def readiness_until(self, deadline: float) -> list[Readiness]:
        """/readyz asked again and again until `deadline` (monotonic)."""
        seen: list[Readiness] = []
        while time.monotonic() < deadline:
            seen.append(await self.readiness())
            await asyncio.sleep(0.2)
        return seen

    async def wait_ready(self, timeout_s: float) -> Readiness:
        deadline = time.monotonic() + timeout_s
        while True:
            ready = await self.readiness()
            if ready.status == 200 or time.monotonic() > deadline:
                return ready
            await asyncio.sleep(0.2)


def error_code(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code"))
    return None


@asynccontextmanager
async def open_gate(settings: Settings) -> AsyncIterator[Gate]:
    assert settings.bootstrap_admin_key is not None, "the scenario needs an admin key"
    admin = {"Authorization": f"Bearer {settings.bootstrap_admin_key.get_secret_value()}"}
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tracegate") as http:
            response = await http.post("/v1/api-keys", json={"role": "regulator"},
                                       headers=admin)
            assert response.status_code == 201, response.text
            regulator = {"Authorization": f"Bearer {response.json()['key']}"}
            yield Gate(http, admin, regulator)
