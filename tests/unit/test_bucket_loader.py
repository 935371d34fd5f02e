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

from service.claims.schemas import CodeState
from service.claims.service import owner_token
from service.firstseen import _bucket_loader as compiled
from service.firstseen import bucket_loader as reference
from service.firstseen.encoding import encode_state
from service.kit import redis_dump

# code, settlement id, line number, institution, paid at (µs from 2000), units used, pack size
Row = tuple[str, str, int, str, int, int | None, int | None]
DAY_US = 86_400 * 10**6
DAY_2020_US = 7305 * DAY_US  # 2020-01-01 in PostgreSQL's µs since 2000-01-01
LOADERS: list[Any] = [compiled.BucketLoader, reference.BucketLoader]
# institution numbers past 2**31 and 2**32 (only the low 32 bits are kept), non-ASCII ids
INSTITUTIONS = {"H11010100001": 1, "P31000000002": 2**31 + 5, "医院0000000三": 2**32 - 1,
                "T44000000004": 2**32 + 7, "D00000000005": int.from_bytes(b"4567", "big")}
# A value Redis stores as an integer (b"8133456789": the token of "S-74158:1", then that
# institution's number and a day whose bytes are digits too): its bucket takes the general
# ziplist path, not the plain one.
INTEGER_VALUE_ROW: Row = ("", "S-74158", 1, "D00000000005",
                          (7305 + int.from_bytes(b"89", "big")) * DAY_US, None, None)


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


def test_the_integer_value_is_one() -> None:
    _, sid, line_no, institution, paid_us, *_ = INTEGER_VALUE_ROW
    paid_at = paid_us // 10**6 + 946_684_800
    value = encode_state(CodeState(owner_token(sid, line_no), INSTITUTIONS[institution], paid_at))
    assert value == b"8133456789"


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
    for code, sid, line_no, institution, paid_us, used, pack_size in rows:
        row = [struct.pack(">h", 7)]
        for text in (code, sid):
            row.append(struct.pack(">i", len(text.encode())) + text.encode())
        row.append(struct.pack(">ii", 4, line_no))
        row.append(struct.pack(">i", len(institution.encode())) + institution.encode())
        row.append(struct.pack(">iq", 8, paid_us))
        row += [struct.pack(">i", -1) if n is None else struct.pack(">ii", 4, n)
                for n in (used, pack_size)]
        out.append(b"".join(row))
    return b"".join([*out, struct.pack(">h", -1)])


def generated_rows(rng: random.Random, count: int) -> list[Row]:
    """National codes, GS1 strings, non-ASCII and codes too long for one SHA-256 block;
    instants on both sides of midnight, before 2000 and 2020 and past 2199 (day clamped),
    infinity; every institution and one unknown; a split pack in twenty (one without a pack
    size); a tenth of the codes again with another owner (a field written twice); five values
    Redis stores as integers."""
    rows: list[Row] = []
    for n in range(count):
        code = rng.choice([f"8{rng.randrange(10**19):019d}", f"0106901234567892 21{n}",
                           f"(01)%/x-{n}药", f"{n:08d}{'x' * 56}"])  # past one SHA block
        sid = rng.choice([f"S-{n}", "结算-二", "S:with:colons", "x" * 64])
        split = rng.choice([(None, None)] * 18 + [(3, 10), (2, None)])
        rows.append((code, sid, rng.choice([1, 2, 999, -3, 2**31 - 1, -(2**31)]),
                     rng.choice([*INSTITUTIONS, "UNKNOWN00000"]),
                     rng.choice([DAY_2020_US - 1, DAY_2020_US, DAY_2020_US + DAY_US - 1, -1,
                                 rng.randrange(-(10**16), 10**16), 2**63 - 1, -(2**63)]),
                     *split))
    again = [(code, "again", 7, "H11010100001", DAY_2020_US, None, None)
             for code, *_ in rows[: count // 10]]
    integers = [(f"8{n:019d}", *INTEGER_VALUE_ROW[1:]) for n in range(5)]
    return rows + again + integers


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
    mine = compiled.BucketLoader(*layout, INSTITUTIONS)
    theirs = reference.BucketLoader(*layout, INSTITUTIONS)
    filed = fed(mine, stream, random.Random(3))
    assert filed == fed(theirs, stream, random.Random(4))
    assert mine.unknown_institutions == theirs.unknown_institutions > 0
    split = mine.take_split()
    assert split == theirs.take_split()
    assert len(split) > 0
    assert filed + len(split) + mine.unknown_institutions == len(rows)
    assert mine.buffered == theirs.buffered == filed
    written = 0
    for group in range(layout[1]):
        restore = group % 2 == 0  # both forms, RESTORE and HSET
        ours = mine.commands(group, restore)
        assert ours == theirs.commands(group, restore), group
        written += ours[1]
    assert written > 0
    assert mine.buffered == theirs.buffered == 0
    assert mine.commands(0, True) == (b"", 0)  # drained
    assert mine.take_split() == []


@pytest.mark.parametrize("layout", [(11, 16), (0, 3)], ids=str)
def test_merged_loaders_equal_the_reference(layout: tuple[int, int]) -> None:
    """Two streams (the rebuild reads the record over two connections), one loader each,
    merged: the second's packs follow the first's in each bucket, a code in both keeps the
    second's value; what each still has to read goes on into its own loader."""
    rows = generated_rows(random.Random(14), 1200)
    first, second = copy_stream(rows[::2]), copy_stream(rows[1::2])
    ours: list[Any] = [compiled.BucketLoader(*layout, INSTITUTIONS) for _ in range(2)]
    theirs: list[Any] = [reference.BucketLoader(*layout, INSTITUTIONS) for _ in range(2)]
    half = len(second) // 2
    for loaders in (ours, theirs):
        fed(loaders[0], first, random.Random(15))
        loaders[1].feed(second[:half])
        loaders[0].absorb(loaders[1])
        loaders[1].feed(second[half:])  # the second stream goes on after the merge
        loaders[1].finish()
        loaders[0].absorb(loaders[1])
    assert ours[0].buffered == theirs[0].buffered > 0
    assert ours[1].buffered == 0
    assert ours[0].unknown_institutions == theirs[0].unknown_institutions > 0
    assert ours[0].take_split() == theirs[0].take_split()
    for group in range(layout[1]):
        assert ours[0].commands(group, True) == theirs[0].commands(group, True), group


def test_one_loader_takes_stream_after_stream() -> None:
    """A connection reads its partitions one COPY after another into one loader."""
    rows = generated_rows(random.Random(16), 900)
    streams = [copy_stream(rows[n::3]) for n in range(3)]
    ours = compiled.BucketLoader(5, 4, INSTITUTIONS)
    theirs = reference.BucketLoader(5, 4, INSTITUTIONS)
    for loader in (ours, theirs):
        for stream in streams:
            fed(loader, stream, random.Random(17))
            loader.next_stream()
        with pytest.raises(ValueError, match="ended early"):
            loader.next_stream()  # a stream that has not ended cannot be followed
    assert ours.buffered == theirs.buffered > 0
    for group in range(4):
        assert ours.commands(group, True) == theirs.commands(group, True), group


def test_split_packs_are_kept_aside_as_the_record_has_them() -> None:
    """What the rebuild encodes with the pack's other lines: paid-at in epoch seconds."""
    rows: list[Row] = [("8" * 20, "S-1", 2, "P31000000002", DAY_2020_US + 1_500_000, 3, 10),
                       ("9" * 20, "S-2", 1, "H11010100001", -1, 1, None),
                       ("7" * 20, "S-3", 1, "UNKNOWN00000", 0, 1, 2)]
    for loader in LOADERS:
        target = loader(4, 2, INSTITUTIONS)
        assert fed(target, copy_stream(rows), random.Random(9)) == 0
        assert target.take_split() == [
            ("8" * 20, "S-1", 2, 2**31 + 5, 1_577_836_801, 3, 10),
            ("9" * 20, "S-2", 1, 1, 946_684_799, 1, None)]
        assert target.unknown_institutions == 1


@pytest.mark.parametrize("loader", LOADERS, ids=["compiled", "reference"])
@pytest.mark.parametrize(("stream", "words"), [
    (b"PGCOPY\n\xff\r\n\x01" + bytes(8), "bad signature"),
    (copy_stream([])[:-2] + struct.pack(">h", 5), "7 columns"),
    (copy_stream([])[:-2] + struct.pack(">hi", 7, -1), "NULL"),
    (copy_stream([])[:-2] + struct.pack(">hiiih", 7, 0, 0, 2, 1), "int4"),  # an int2 line
    (copy_stream([]) + struct.pack(">h", 7), "after the end"),
], ids=["signature", "columns", "null", "types", "trailing"])
def test_a_stream_that_is_not_whole_pack_claims_is_refused_in_words(
    loader: Any, stream: bytes, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        loader(4, 2, INSTITUTIONS).feed(stream + bytes(60))


@pytest.mark.parametrize("loader", LOADERS, ids=["compiled", "reference"])
def test_a_stream_cut_short_is_refused(loader: Any) -> None:
    target = loader(4, 2, INSTITUTIONS)
    assert target.feed(copy_stream([("8" * 20, "S", 1, "H11010100001", 0, None, None)])[:-3]) == 0
    with pytest.raises(ValueError, match="ended early"):
        target.finish()
