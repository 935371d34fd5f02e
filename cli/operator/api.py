"""The API as the operator commands call it: a bearer key, the contract's error body turned
into one sentence, cursor pages followed to the end."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
from tqdm import tqdm

from cli.operator.environment import ApiAccess, OperatorError


class ApiError(OperatorError):
    """The API answered with an error."""

    def __init__(self, message: str, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # the contract's error code, when the body carries one


class ApiClient:
    def __init__(
        self, access: ApiAccess, timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        key = access.api_key.get_secret_value() if access.api_key else ""
        self.base_url = access.api_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                  headers={"Authorization": f"Bearer {key}"})

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON; an error answer or an unreachable API raises OperatorError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise OperatorError(f"cannot reach the API at {self.base_url}: {exc}") from exc
        if response.is_error:
            raise api_error(f"{method} {path}", response)
        return response.json()

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a paginated listing (`items`, `next_cursor`), with a progress bar on
        stderr once it takes more than two seconds."""
        cursor = None
        with tqdm(unit=" items", desc=path, file=sys.stderr, delay=2) as bar:
            while True:
                page = self.call("GET", path, params={**params, "cursor": cursor}
                                 if cursor else params)
                bar.update(len(page["items"]))
                yield from page["items"]
                cursor = page.get("next_cursor")
                if not cursor:
                    return

    def stream_lines(
        self, path: str, params: dict[str, Any], headers: dict[str, str]
    ) -> Iterator[str]:
        """The lines of a Server-Sent Events answer, for as long as it runs."""
        try:
            with self._http.stream("GET", path, params=params, headers=headers,
                                   timeout=None) as response:
                if response.is_error:
                    response.read()
                    raise api_error(f"GET {path}", response)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise OperatorError(f"the stream from {self.base_url} ended: {exc}") from exc


def api_error(call: str, response: httpx.Response) -> ApiError:
    """`PUT /v1/…: 403 FORBIDDEN: role ops may not do this`, from the contract's error body."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return ApiError(f"{call}: {response.status_code} {response.reason_phrase}",
                        response.status_code, None)
    return ApiError(f"{call}: {response.status_code} {code}: {message}", response.status_code,
                    code)
