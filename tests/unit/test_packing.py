"""The first-seen store's compiled packing (service/firstseen/_packing.pyx) against its
reference, the store's own code-by-code loops (`_pack_each`, `_pack_effects_each`,
`_pack_changes_each`, which a Redis Cluster's calls still take): the same groups in the same
order and the same bytes, for every layout."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.claims.schemas import ClaimChange, ClaimEffect, CodeState, Effect, FirstPayment
from service.firstseen import _packing as compiled
from service.firstseen.encoding import Layout
from service.firstseen.store import FirstSeenStore, _Call

LAYOUTS = st.sampled_from([Layout(13, 16), Layout(0, 7), Layout(28, 16_384), Layout(5, 1)])
CODES = st.text(min_size=1, max_size=40)  # canonical codes are digits; any text packs the same


def _reference(layout: Layout) -> Any:
    """A single-server store whose Python loop is called directly (no Redis is touched)."""
    store = FirstSeenStore.__new__(FirstSeenStore)
    store.layout, store._cluster = layout, False
    store._shape = (layout.bucket_bits, layout.slot_groups)
    return store


def _flat(calls: list[_Call]) -> tuple[list[int], bytes, list[int]]:
    [call] = calls
    return call.groups, b"".join(call.parts), call.origins


@settings(max_examples=200, deadline=None)
@given(LAYOUTS, st.lists(CODES, max_size=60, unique=True))
def test_codes_pack_as_the_reference_packs_them(layout: Layout, codes: list[str]) -> None:
    store = _reference(layout)
    groups, packed = compiled.pack_codes(codes, layout.bucket_bits, layout.slot_groups)
    if codes:
        assert (groups, packed, list(range(len(codes)))) == _flat(store._pack_each(codes))
        assert _flat(store._pack_codes(codes)) == _flat(store._pack_each(codes))
    else:
        assert (groups, packed, store._pack_codes(codes)) == ([], b"", [])


def _effects() -> st.SearchStrategy[ClaimEffect]:
    return st.builds(
        ClaimEffect, st.sampled_from(list(Effect)), CODES, st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1), st.integers(0, 2**33), st.integers(0, 70_000),
        st.integers(0, 70_000))


@settings(max_examples=200, deadline=None)
@given(LAYOUTS, st.lists(_effects(), max_size=40), st.lists(CODES, max_size=10, unique=True))
def test_effects_and_forgets_pack_as_the_reference_packs_them(
    layout: Layout, effects: list[ClaimEffect], forget: list[str],
) -> None:
    store = _reference(layout)
    if not effects and not forget:
        assert store._pack_effects(effects, forget) == []
        return
    expected = _flat(store._pack_effects_each(effects, forget))
    assert _flat(store._pack_effects(effects, forget)) == expected
    groups, packed = compiled.pack_effects(effects, forget, layout.bucket_bits,
                                           layout.slot_groups)
    assert (groups, packed) == expected[:2]


def _states() -> st.SearchStrategy[CodeState | None]:
    u32, u16 = st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF)
    whole = st.builds(CodeState, u32, u32, st.integers(0, 2**33))
    split = st.builds(CodeState, u32, u32, st.integers(0, 2**33), u16, u16,
                      st.lists(u32, max_size=5).map(tuple))
    return st.none() | whole | split


def _changes() -> st.SearchStrategy[ClaimChange]:
    return st.builds(ClaimChange, CODES, st.integers(1, 99), st.integers(0, 2**32 - 1),
                     _states(), _states(), st.none() | st.integers(-50, 50))


PAID = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)


@settings(max_examples=200, deadline=None)
@given(LAYOUTS, st.lists(_changes(), max_size=30), st.booleans(), st.data())
def test_claims_pack_as_the_reference_packs_them(
    layout: Layout, changes: list[ClaimChange], mark_releases: bool, data: st.DataObject,
) -> None:
    """Claims from unpaid with and without a first payment (two sharing one), releases with
    and without their marks, split packs: the same groups, bytes and positions."""
    store = _reference(layout)
    shared = FirstPayment("S-1", "P00000000001", PAID)
    details = {c.canonical: data.draw(st.sampled_from(
        [shared, FirstPayment(f"S-{n}", "P00000000002", PAID)])) for n, c in enumerate(changes)
        if data.draw(st.booleans())}
    if not changes:
        assert store._pack_changes(changes, details, mark_releases) == []
        return
    expected = _flat(store._pack_changes_each(changes, details, mark_releases))
    assert _flat(store._pack_changes(changes, details, mark_releases)) == expected


def test_a_state_that_does_not_fit_is_refused() -> None:
    state = CodeState(1, 1, 0, 2**16, 10)
    with pytest.raises(OverflowError, match="units_used"):
        compiled.pack_changes([ClaimChange("1" * 20, 1, 1, None, state)], [b""], 13, 16)


@pytest.mark.parametrize("field", ["token", "institution_no"])
def test_a_number_that_does_not_fit_is_refused(field: str) -> None:
    values = {"token": 1, "institution_no": 1, field: 2**32}
    effect = ClaimEffect(Effect.CLAIM, "1" * 20, values["token"], values["institution_no"],
                         0, 0, 0)
    with pytest.raises(OverflowError, match=field):
        compiled.pack_effects([effect], [], 13, 16)


def test_a_layout_without_groups_is_refused() -> None:
    with pytest.raises(ValueError, match="slot_groups"):
        compiled.pack_codes(["1"], 13, 0)
