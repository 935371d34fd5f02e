"""The Prometheus multiprocess directory of one `tracegate api` run. Apart from metrics.py on
purpose: it must be entered before prometheus_client is imported, since the library picks its
value store (in memory, or files shared by the workers) when it is imported."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_directory() -> Iterator[Path]:
    """The multiprocess directory of one API run: the one PROMETHEUS_MULTIPROC_DIR names
    (emptied first: a previous run's files would add its counts to this one's), else a new
    temporary one, removed afterwards. Must be entered before prometheus_client is imported
    by the process that starts the workers: the library picks its value store on import."""
    named = os.environ.get(MULTIPROC_ENV)
    directory = Path(named) if named else Path(tempfile.mkdtemp(prefix="tracegate-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        if not named:
            shutil.rmtree(directory, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
