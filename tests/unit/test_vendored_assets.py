"""The vendored browser assets are the files their SOURCES.md names, byte for byte, and the
pages load nothing from elsewhere."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from service.api.docs import ASSETS
from service.api.routes.console import STATIC

DIRECTORIES = [Path(str(STATIC)) / "vendor", Path(str(ASSETS))]


@pytest.mark.parametrize("directory", DIRECTORIES, ids=lambda d: d.name)
def test_every_vendored_file_matches_its_recorded_digest(directory: Path) -> None:
    recorded = re.findall(r"^sha256 ([0-9a-f]{64}) (\S+)$",
                          (directory / "SOURCES.md").read_text(), re.MULTILINE)
    assert recorded
    for digest, name in recorded:
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest, name
    files = {p.name for p in directory.iterdir()} - {"SOURCES.md"}
    assert files == {name for _, name in recorded}


def test_the_console_page_names_only_its_own_assets() -> None:
    page = (Path(str(STATIC)) / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources
    assert all(source.startswith(("/console/assets/", "data:")) for source in sources), sources
