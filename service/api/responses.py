"""JSON responses rendered by orjson: the hot routes build plain dicts and skip a second
validation pass through response models (the models still document them in OpenAPI)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
