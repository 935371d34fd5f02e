"""Keyed hashes (HMAC-SHA256): API keys are stored and patients shown only through them."""

from __future__ import annotations

import hmac


def keyed_digest(key: str, value: str) -> bytes:
    return hmac.digest(key.encode(), value.encode(), "sha256")  # the one-call C path


def keyed_hex(key: str, value: str, *, length: int = 32) -> str:
    return keyed_digest(key, value).hex()[:length]


def digests_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison, so a timing side channel reveals nothing about stored keys."""
    return hmac.compare_digest(a, b)
