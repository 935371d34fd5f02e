"""The OpenAPI document stands on its own: every operation has a description, an example and
the error responses it really gives (each status with its error codes and an example body);
/docs loads Swagger UI from the service itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.app import create_app
from service.api.openapi import ERRORS, OPERATIONS
from service.settings import Settings

DOCUMENT = create_app(Settings()).openapi()
OPS = [(f"{method.upper()} {path}", operation)
       for path, operations in DOCUMENT["paths"].items()
       for method, operation in operations.items()]


def test_every_operation_is_described_and_nothing_described_is_gone() -> None:
    assert {name for name, _ in OPS} == set(OPERATIONS)


@pytest.mark.parametrize(("name", "operation"), OPS, ids=[name for name, _ in OPS])
def test_an_operation_has_a_description_an_example_and_its_errors(
    name: str, operation: dict[str, Any]
) -> None:
    assert len(operation["description"]) > 30
    examples = [media.get("example") for response in operation["responses"].values()
                for media in response.get("content", {}).values()]
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    assert any(e is not None for e in examples) or "example" in body
    if "requestBody" in operation:
        assert "example" in body
    for status, response in operation["responses"].items():
        if not status.startswith(("4", "5")) or name == "GET /readyz":
            continue
        shown = response["content"]["application/json"]["examples"]
        assert shown
        for code, example in shown.items():
            assert ERRORS[code][0] == int(status)
            assert example["value"]["error"]["code"] == code
            assert code in response["description"]


def test_authenticated_operations_document_401_and_503() -> None:
    for name, operation in OPS:
        if name.split()[1].startswith("/v1/"):
            assert {"401", "503"} <= set(operation["responses"]), name


async def test_docs_page_loads_its_assets_from_the_service() -> None:
    app = create_app(Settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tracegate") as client:
        page = (await client.get("/docs")).text
        assets = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page)
        assert assets
        assert all(a.startswith(("/docs/assets/", "/openapi.json")) for a in assets), assets
        for asset in assets:
            if asset.startswith("/docs/assets/"):
                assert (await client.get(asset)).status_code == 200, asset
        assert (await client.get("/redoc")).status_code == 404


def test_the_api_reference_in_docs_covers_every_operation() -> None:
    """docs/API.md stands alone (a clone has no contract beside it): each operation appears
    there with its method on the line that names its path."""
    reference = (Path(__file__).parents[2] / "docs" / "API.md").read_text()
    missing = [name for name, _ in OPS
               if not any(name.split()[0] in line and f"{name.split()[1]}`" in line
                          for line in reference.splitlines())]
    assert missing == []
