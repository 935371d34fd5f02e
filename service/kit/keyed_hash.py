"""Keyed hashes (HMAC-SHA256): API keys are stored and patients shown only through them.

HMAC as RFC 2104 defines it, from SHA-256 states kept per key: a settlement's patient is
hashed on every decision, and OpenSSL 3 sets an HMAC up from the key on every call of
`hmac.digest` (~2.5 us measured here), where copying the two states keyed once costs ~1 us.
The output is `hmac.digest(key, value, "sha256")`'s, byte for byte (tests/unit/
test_keyed_hash.py)."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

_BLOCK = 64  # SHA-256's block size: the key is padded to it (or hashed first if longer)


@lru_cache(maxsize=32)
def _keyed(key: str) -> tuple[Any, Any]:
    """The inner and outer SHA-256 states after the padded key: a process has a handful."""
    block = key.encode()
    if len(block) > _BLOCK:
        block = hashlib.sha256(block).digest()
    block = block.ljust(_BLOCK, b"\0")
    return (hashlib.sha256(bytes(byte ^ 0x36 for byte in block)),
            hashlib.sha256(bytes(byte ^ 0x5C for byte in block)))


def keyed_digest(key: str, value: str) -> bytes:
    inner_keyed, outer_keyed = _keyed(key)
    inner = inner_keyed.copy()
    inner.update(value.encode())
    outer = outer_keyed.copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def keyed_hex(key: str, value: str, *, length: int = 32) -> str:
    return keyed_digest(key, value).hex()[:length]


def digests_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison, so a timing side channel reveals nothing about stored keys."""
    return hmac.compare_digest(a, b)
