"""Flag triage (CONTRACT §7): every flag is a case that ops and regulators work from `new` to
`closed`, with a resolution, and a history of who did what when. The detection itself never
changes, and the flags topic carries only detections."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.schemas import Caller
from service.flags import repository
from service.flags.models import Flag, FlagHistory
from service.flags.schemas import CaseSummary, FlagStatus, FlagUpdate, OpenByAge, Resolution
from service.kit.errors import Conflict, NotFound

NEW, INVESTIGATING, ESCALATED, CLOSED = FlagStatus

# Where a case may go from each status. Anything else (staying put included) is a 409.
TRANSITIONS: dict[FlagStatus, frozenset[FlagStatus]] = {
    NEW: frozenset({INVESTIGATING, CLOSED}),
    INVESTIGATING: frozenset({ESCALATED, CLOSED}),
    ESCALATED: frozenset({CLOSED}),
    CLOSED: frozenset({INVESTIGATING}),
}

# Open cases by time since detection: the bucket edges of CaseSummary.open_by_age.
AGES = (dt.timedelta(days=1), dt.timedelta(days=7), dt.timedelta(days=30))

_FLAG_ID = re.compile(r"^fl_[0-9a-f]{32}$")


class FlagNotFound(NotFound):
    code = "FLAG_NOT_FOUND"


class InvalidTransition(Conflict):
    code = "INVALID_TRANSITION"


def check_transition(current: FlagStatus, wanted: FlagStatus) -> None:
    allowed = TRANSITIONS[current]
    if wanted not in allowed:
        choices = ", ".join(sorted(allowed))
        raise InvalidTransition(
            f"a case that is {current.value} cannot become {wanted.value}; it may become: "
            f"{choices}"
        )


async def update_case(
    session: AsyncSession, caller: Caller, flag_id: str, change: FlagUpdate
) -> dict[str, Any]:
    """One triage step: checked against the case's status under a row lock, recorded in its
    history. Returns the case with its whole history."""
    row = await _existing(session, flag_id, lock=True)
    check_transition(FlagStatus(row.status), change.status)
    resolution = change.resolution.value if change.resolution else None
    await repository.set_status(session, row, change.status.value, resolution)
    await repository.add_history(session, FlagHistory(
        flag_id=flag_id, status=change.status.value, resolution=resolution, note=change.note,
        actor_key_id=caller.key_id, actor_role=caller.role.value,
    ))
    return await _with_history(session, row)


async def case(session: AsyncSession, flag_id: str) -> dict[str, Any]:
    """The flag and its triage history."""
    return await _with_history(session, await _existing(session, flag_id, lock=False))


async def _existing(session: AsyncSession, flag_id: str, *, lock: bool) -> Flag:
    row = None
    if _FLAG_ID.match(flag_id):  # anything else was never a flag id: no query needed
        found = repository.locked_flag if lock else repository.get_flag
        row = await found(session, flag_id)
    if row is None:
        raise FlagNotFound(f"no recorded flag {flag_id}")
    return row


async def _with_history(session: AsyncSession, row: Flag) -> dict[str, Any]:
    entries = await repository.history_of(session, row.flag_id)
    return {**repository.case_json(row), "history": [_entry(entry) for entry in entries]}


def _entry(entry: FlagHistory) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": entry.status, "note": entry.note,
        "by": {"key_id": entry.actor_key_id, "role": entry.actor_role},
        "at": entry.at.isoformat(),
    }
    if entry.resolution is not None:
        body["resolution"] = entry.resolution
    return body


async def summary(session: AsyncSession, institution_id: str | None) -> CaseSummary:
    """Open cases by status and age, closed cases by resolution, and the false-alert rate
    (the share of closed cases resolved `legitimate`); one institution's, or everyone's."""
    by_status: dict[str, int] = {}
    within = [0] * len(AGES)
    for status, count, younger in await repository.open_counts(session, institution_id, AGES):
        by_status[status] = count
        within = [total + n for total, n in zip(within, younger, strict=True)]
    closed = await repository.closed_counts(session, institution_id)
    return CaseSummary(
        open=sum(by_status.values()),
        open_by_status={s.value: by_status.get(s.value, 0) for s in FlagStatus if s != CLOSED},
        open_by_age=_by_age(sum(by_status.values()), within),
        closed=sum(closed.values()),
        closed_by_resolution={r.value: closed.get(r.value, 0) for r in Resolution},
        false_alert_rate=_share(closed.get(Resolution.LEGITIMATE.value, 0), closed),
    )


def _by_age(total: int, within: list[int]) -> OpenByAge:
    """Cumulative counts (detected within 1, 7, 30 days) into the four buckets."""
    day, week, month = within
    return OpenByAge(under_1d=day, from_1d_to_7d=week - day, from_7d_to_30d=month - week,
                     over_30d=total - month)


def _share(part: int, counts: dict[str, int]) -> float | None:
    total = sum(counts.values())
    return None if total == 0 else round(part / total, 4)
