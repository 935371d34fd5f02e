"""Fault-test fixtures: the scale (short in the suite, long under TRACEGATE_SOAK=1) and a
working directory for the logs of the processes a scenario starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import scale as scales


@pytest.fixture(scope="session")
def scale() -> scales.Scale:
    return scales.current()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long form (TRACEGATE_SOAK=1) outlasts the suite's per-test timeout."""
    if scales.current() is not scales.LONG:
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(3600))
