"""The load-test package's tiny workload on its own embedded servers, started once for the
package (the stream, baseline and report tests share it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadtest.stack import Stack, open_stack
from loadtest.workload import Workload, generate


@pytest.fixture(scope="package")
def tiny() -> Iterator[tuple[Stack, Workload]]:
    workload = generate(300, seed=3)
    stack = open_stack(workload.institutions)
    try:
        yield stack, workload
    finally:
        stack.close()
