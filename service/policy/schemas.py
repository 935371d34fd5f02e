"""Policy inputs: the go-live schedule and exemption rules of CONTRACT §2, as plain values."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

from service.settings import DuplicatePolicy, InstitutionKind, Settings


class NoCodeReason(StrEnum):
    """Why a line may carry no trace code."""

    HERBAL_PIECES = "herbal_pieces"  # 中药饮片
    HERBAL_GRANULES = "herbal_granules"  # 中药颗粒
    INPATIENT_SPLIT = "inpatient_split"  # 住院拆零
    LEGACY_STOCK = "legacy_stock"  # 无码库 stock bought before the rule; has a sunset


@dataclass(frozen=True, slots=True)
class InstitutionPolicy:
    """What the rules need to know about one institution (定点医药机构)."""

    institution_id: str
    kind: InstitutionKind
    go_live_override: dt.date | None = None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    go_live: dict[InstitutionKind, dt.date]
    go_live_overrides: dict[str, dt.date] = field(default_factory=dict)
    legacy_stock_sunset: dt.date = dt.date(2026, 1, 1)
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.REJECT

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyConfig:
        return cls(
            go_live=dict(settings.go_live),
            go_live_overrides=dict(settings.go_live_overrides),
            legacy_stock_sunset=settings.legacy_stock_sunset,
            duplicate_policy=settings.duplicate_policy,
        )
