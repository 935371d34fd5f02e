"""The compact first-seen layout: round trips, sizes, and addresses that stay in one slot."""

from __future__ import annotations

import datetime as dt

from service.claims.schemas import CodeState
from service.firstseen.encoding import ENCODING_VERSION, Layout, decode_state, encode_state

PAID = int(dt.datetime(2025, 7, 1, 10, tzinfo=dt.UTC).timestamp())


def test_whole_pack_state_is_ten_bytes_and_round_trips_at_day_resolution() -> None:
    state = CodeState(0xDEADBEEF, 123456, PAID)
    raw = encode_state(state)
    assert len(raw) == 10
    back = decode_state(raw)
    assert (back.owner, back.institution_no, back.is_split) == (0xDEADBEEF, 123456, False)
    assert 0 <= PAID - back.paid_at < 86_400
    assert encode_state(back) == raw  # stable, so compare-and-set on re-encoded state works


def test_split_state_keeps_units_and_every_seller() -> None:
    state = CodeState(1, 2, PAID, units_used=7, pack_size=24, split_owners=(1, 99, 12345))
    back = decode_state(encode_state(state))
    assert (back.units_used, back.pack_size, back.split_owners) == (7, 24, (1, 99, 12345))


def test_address_is_deterministic_and_keys_share_the_group_hash_tag() -> None:
    layout = Layout(bucket_bits=12, slot_groups=16)
    first, again = layout.address("81234560000000000011"), layout.address("81234560000000000011")
    assert first == again
    assert len(first.field) == 6
    tag = "{" + str(first.group) + "}"
    assert tag in first.bucket_key
    assert tag in layout.pending_key(first.group)
    assert tag in layout.generation_key(first.group)


def test_a_changed_layout_has_other_generation_markers() -> None:
    assert set(Layout(12, 16).generation_keys()).isdisjoint(Layout(13, 16).generation_keys())


def test_codes_spread_over_groups_and_buckets() -> None:
    layout = Layout(bucket_bits=4, slot_groups=8)
    addresses = [layout.address(f"8{i:019d}") for i in range(4000)]
    assert {a.group for a in addresses} == set(range(8))
    assert len({a.bucket_key for a in addresses}) == 8 * 16


def test_locate_is_where_address_points() -> None:
    layout = Layout(bucket_bits=3, slot_groups=5)  # groups need not be a power of two
    for code in (f"8{i:019d}" for i in range(500)):
        group, bucket, field = layout.locate(code)
        address = layout.address(code)
        assert (address.group, address.field) == (group, field)
        assert address.bucket_key == layout.bucket_key(group, bucket)
        assert 0 <= bucket < 8


def test_a_changed_encoding_version_has_other_generation_markers() -> None:
    assert f":v{ENCODING_VERSION}:" in Layout(12, 16).generation_key(0)
