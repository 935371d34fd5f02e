"""The keyed hash is HMAC-SHA256 exactly: patient refs and stored API key digests written
before it kept its keyed states must still match."""

from __future__ import annotations

import hmac

import pytest

from service.kit.keyed_hash import keyed_digest, keyed_hex

KEYS = ["", "k", "patient-hash-key-0123456789abcdef", "x" * 64, "y" * 65, "键" * 40]
VALUES = ["", "P1234567890", "患者-0001", "a" * 1000]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", VALUES)
def test_keyed_digest_is_the_standard_hmac(key: str, value: str) -> None:
    expected = hmac.digest(key.encode(), value.encode(), "sha256")
    assert keyed_digest(key, value) == expected
    assert keyed_digest(key, value) == expected  # the kept states are copied, never used up
    assert keyed_hex(key, value) == expected.hex()[:32]


def test_different_keys_give_different_digests() -> None:
    assert keyed_digest("one", "P1") != keyed_digest("two", "P1")
