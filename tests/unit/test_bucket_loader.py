"""The rebuild's compiled loader (service/firstseen/_bucket_loader.pyx over bucket_core.h) against
its pure-Python reference (service/firstseen/bucket_loader.py, service/kit/redis_dump.py):
the same bytes out of the same generated streams, every primitive equal to the standard one."""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.firstseen import _bucket_loader as compiled
from service.firstseen import bucket_loader as reference
from service.kit import redis_dump

Row = tuple[str, str, int, int, int]
DAY_US = 86_400 * 10**6
DAY_2020_US = 7305 * DAY_US  # 2020-01-01 in PostgreSQL's µs since 2000-01-01
LOADERS = [compiled.BucketLoader, reference.BucketLoader]


@pytest.fixture(params=[False, True], ids=["cpu-instructions", "portable"])
def sha_path(request: pytest.FixtureRequest) -> Iterator[None]:
    before = compiled.use_portable_sha256(request.param)
    yield
    compiled.use_portable_sha256(not before)


@pytest.mark.usefixtures("sha_path")
def test_sha256_is_hashlibs() -> None:
    rng = random.Random(1)
    for size in [*range(0, 140), 1000, 4099]:
        data = rng.randbytes(size)
        assert compiled.sha256(data) == hashlib.sha256(data).digest(), size


def test_crc32_is_zlibs_and_crc64_is_redis() -> None:
    assert compiled.crc64(b"123456789") == redis_dump.crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    rng = random.Random(2)
    for size in range(0, 80):
        data = rng.randbytes(size)
        assert compiled.crc32(data) == zlib.crc32(data)
        assert compiled.crc64(data) == redis_dump.crc64(data)


# Strings Redis stores as integers in a ziplist and near misses: sizes of each integer
# encoding and past them, leading zeros, signs, int64's edges.
INTEGERISH = [b"0", b"-0", b"00", b"7", b"12", b"13", b"-1", b"-128", b"127", b"128", b"32767",
              b"-32769", b"8388607", b"8388608", b"2147483648", b"9223372036854775807",
              b"9223372036854775808", b"-9223372036854775808", b"-9223372036854775809",
              b"+1", b" 1", b"1 ", b"01", b"123456", b"99999999999999999999"]
piece = st.one_of(st.sampled_from(INTEGERISH), st.binary(max_size=70),
                  st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
                  st.sampled_from([300, 16383, 16384, 20_000]).map(lambda n: b"x" * n))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(piece, piece, min_size=1, max_size=40))
def test_compiled_payload_equals_the_reference(pairs: dict[bytes, bytes]) -> None:
    items = list(pairs.items())
    assert compiled.hash_payload(items) == redis_dump.hash_payload(items)


def copy_stream(rows: list[Row]) -> bytes:
    """What PostgreSQL's COPY (FORMAT binary) sends for these rows."""
    out = [reference.COPY_SIGNATURE, struct.pack(">II", 0, 0)]
    for code, sid, line_no, number, paid_us in rows:
        code_b, sid_b = code.encode(), sid.encode()
        out.append(struct.pack(">hi", 5, len(code_b)) + code_b + struct.pack(">i", len(sid_b))
                   + sid_b + struct.pack(">iiiqiq", 4, line_no, 8, number, 8, paid_us))
    return b"".join([*out, struct.pack(">h", -1)])


def generated_rows(rng: random.Random, count: int) -> list[Row]:
    """National codes, GS1 strings and non-ASCII; instants on both sides of midnight, before
    2000 and 2020 and past 2199 (day clamped), infinity; numbers past 2**31 and 2**32; a
    tenth of the codes again with another owner (a field written twice)."""
    rows = []
    for n in range(count):
        code = rng.choice([f"8{rng.randrange(10**19):019d}", f"0106901234567892 21{n}",
                           f"(01)%/x-{n}药"])
        sid = rng.choice([f"S-{n}", "结算-二", "S:with:colons", "x" * 64])
        rows.append((code, sid, rng.choice([1, 2, 999, -3, 2**31 - 1, -(2**31)]),
                     rng.choice([1, 2**31 + 5, 2**32 - 1, 2**32 + 7]),
                     rng.choice([DAY_2020_US - 1, DAY_2020_US, DAY_2020_US + DAY_US - 1, -1,
                                 rng.randrange(-(10**16), 10**16), 2**63 - 1, -(2**63)])))
    return rows + [(code, "again", 7, 3, DAY_2020_US) for code, *_ in rows[: count // 10]]


def fed(loader: Any, stream: bytes, rng: random.Random) -> int:
    """Feeds `stream` cut at random places (rows straddle chunks); returns the rows filed."""
    position = rows = 0
    while position < len(stream):
        size = rng.choice([1, 7, 100, 4096, 70_000])
        rows += loader.feed(bytearray(stream[position : position + size]))
        position += size
    loader.finish()
    return int(rows)


@pytest.mark.usefixtures("sha_path")
@pytest.mark.parametrize("layout", [(11, 16), (0, 7), (5, 1), (28, 16_384), (2, 3)], ids=str)
def test_compiled_loader_equals_the_reference(layout: tuple[int, int]) -> None:
    rows = generated_rows(random.Random(layout[0]), 2000)
    stream = copy_stream(rows)
    mine, theirs = compiled.BucketLoader(*layout), reference.BucketLoader(*layout)
    assert fed(mine, stream, random.Random(3)) == fed(theirs, stream, random.Random(4)) == len(
        rows)
    assert mine.buffered == theirs.buffered == len(rows)
    written = 0
    for group in range(layout[1]):
        restore = group % 2 == 0  # both forms, RESTORE and HSET
        ours = mine.commands(group, restore)
        assert ours == theirs.commands(group, restore), group
        written += ours[1]
    assert written > 0
    assert mine.buffered == theirs.buffered == 0
    assert mine.commands(0, True) == (b"", 0)  # drained


@pytest.mark.parametrize("loader", LOADERS, ids=["compiled", "reference"])
@pytest.mark.parametrize(("stream", "words"), [
    (b"PGCOPY\n\xff\r\n\x01" + bytes(8), "bad signature"),
    (copy_stream([])[:-2] + struct.pack(">h", 4), "5 columns"),
    (copy_stream([])[:-2] + struct.pack(">hi", 5, -1), "NULL"),
    (copy_stream([])[:-2] + struct.pack(">hi", 5, 0) + struct.pack(">i", 0)
     + struct.pack(">ihiqiq", 2, 1, 8, 1, 8, 1), "int4"),  # a line number of int2
    (copy_stream([]) + struct.pack(">h", 5), "after the end"),
], ids=["signature", "columns", "null", "types", "trailing"])
def test_a_stream_that_is_not_whole_pack_claims_is_refused_in_words(
    loader: Any, stream: bytes, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        loader(4, 2).feed(stream)


@pytest.mark.parametrize("loader", LOADERS, ids=["compiled", "reference"])
def test_a_stream_cut_short_is_refused(loader: Any) -> None:
    target = loader(4, 2)
    assert target.feed(copy_stream([("8" * 20, "S", 1, 1, 0)])[:-3]) == 0
    with pytest.raises(ValueError, match="ended early"):
        target.finish()
