"""The bugs the fault tests found, named once: each is the reason of the strict xfail marks on
the tests that show it (remove the mark with the fix: the test then passes)."""

from __future__ import annotations

import pytest

REBUILD_LOCK_OUTLIVES_REBUILDER = pytest.mark.xfail(strict=True, reason=(
    "BUG (open): after a consumer is killed while rebuilding the first-seen set, the set is "
    "still missing 15 s later. The rebuild lock now lives 6 s and is renewed while a rebuild "
    "runs (service/firstseen/rebuild.py), so the lock is gone in time; why no consumer takes "
    "the rebuild up within the window is not yet understood"))
