"""422 messages say what is wrong in words: never a regular expression, pydantic's
"Value error, " prefix, or PostgreSQL's own text."""

from __future__ import annotations

import asyncpg.exceptions as pg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.exc import DataError

from service.api.errors import install_error_handlers
from service.decisions.checks import InvalidSettlement, decode_settlement


class _Body(BaseModel):
    """A pydantic body (the cold routes' kind) with a pattern and a validator."""

    settlement_id: str = Field(pattern=r"^[\x21-\x7e]+$")
    settled_at: str
    institution_id: str = ""
    lines: list[dict[str, object]] = []

    @field_validator("settled_at")
    @classmethod
    def _readable(cls, value: str) -> str:
        if value == "soon":
            raise ValueError(f"settled_at {value!r} must be RFC 3339 with an offset")
        return value


def _app(error: Exception | None = None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/settle")
    async def settle(body: _Body) -> None:
        if error is not None:
            raise error

    return app


async def _post(app: FastAPI, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/settle", **kwargs)  # type: ignore[arg-type]


async def test_pattern_and_validator_messages_are_words() -> None:
    body = {"settlement_id": "S 1", "institution_id": "P11010500001", "settled_at": "soon",
            "lines": [{"line_no": 1, "drug_code": "X", "quantity": 1, "trace_codes": []}]}
    message = (await _post(_app(), json=body)).json()["error"]["message"]
    assert "body.settlement_id: must be printable ASCII characters, without spaces" in message
    assert "body.settled_at: settled_at 'soon' must be RFC 3339" in message
    assert "\\x21" not in message
    assert "\\x21" not in message
    assert "pattern" not in message
    assert "Value error" not in message


async def test_a_body_that_is_not_json_or_missing_says_so() -> None:
    headers = {"content-type": "application/json"}
    broken = await _post(_app(), content=b'{"settlement_id": ', headers=headers)
    assert broken.json()["error"]["message"].startswith("body (at character ")
    assert "not valid JSON" in broken.json()["error"]["message"]
    empty = await _post(_app(), content=b"", headers=headers)
    assert empty.json()["error"]["message"] == "body: a JSON body is required"


@pytest.mark.parametrize(("error", "words"), [
    (pg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
     "a text contains a character that cannot be stored"),
    (DataError("INSERT", None, pg.NumericValueOutOfRangeError("integer out of range")),
     "a number is out of the range that can be stored"),
    (OverflowError("date value out of range"), "a number or time is out of the range"),
    (pg.InvalidTextRepresentationError('invalid input syntax for type bigint: "x"'),
     "a value is out of range, or in a form that cannot be stored"),
])
async def test_values_postgresql_refuses_are_422_in_words(error: Exception, words: str) -> None:
    body = {"settlement_id": "S-1", "institution_id": "P11010500001",
            "settled_at": "2025-07-01 10:00:00",
            "lines": [{"line_no": 1, "drug_code": "X", "quantity": 1, "trace_codes": []}]}
    response = await _post(_app(error), json=body)
    assert response.status_code == 422
    error_body = response.json()["error"]
    assert error_body["code"] == "INVALID_VALUE"
    assert error_body["message"].startswith(words)
    assert str(error) not in error_body["message"]


@pytest.mark.parametrize(("body", "words"), [
    (b'{"settlement_id": "S 1", "institution_id": "P11010500001", "settled_at": "2025-07-01 '
     b'10:00:00", "lines": [{"line_no": 1, "drug_code": "X", "quantity": 1}]}',
     "settlement_id: must be printable ASCII without spaces"),
    (b'{"settlement_id": "S-1", "institution_id": "P11010500001", "settled_at": "soon", '
     b'"lines": [{"line_no": 1, "drug_code": "X", "quantity": 1}]}',
     "settled_at: settled_at 'soon' must be RFC 3339"),
    (b'{"settlement_id": "S-1", "institution_id": "P11010500001", "settled_at": "soon", '
     b'"lines": [{"line_no": "1", "drug_code": "X", "quantity": 1}]}',
     "lines[0].line_no: must be an integer, not a string"),
    (b'{"settlement_id": "S-1"', "the body is not valid JSON"),
])
def test_the_gate_says_what_is_wrong_with_a_settlement_in_words(body: bytes, words: str) -> None:
    with pytest.raises(InvalidSettlement) as refused:
        decode_settlement(body)
    assert refused.value.message.startswith(words), refused.value.message
    assert "$." not in refused.value.message
    assert "`" not in refused.value.message
