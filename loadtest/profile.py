"""Where a consumer's time goes: py-spy's raw (collapsed-stack) output summarised as the
share of samples under each function (inclusive) and at the top of the stack (self)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:)]+)(?::\d+)?\)$")
_OURS = ("service/", "consumers/")


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    if not path.is_file():
        return {"error": f"no profile at {path} (py-spy needs ptrace permission)"}
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_name(frame) for frame in stack.split(";")]
        total += int(count)
        leaf[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    share = _shares(total)
    ours = Counter({f: n for f, n in inclusive.items() if f.startswith(_OURS)})
    return {"samples": total, "inclusive_ours": share(ours.most_common(top)),
            "self_top": share(leaf.most_common(top))}


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"]
    for root in ("site-packages/", "/work/main/"):
        file = file.split(root, 1)[-1]
    return f"{file}:{match['func']}"


def _shares(total: int) -> Any:
    def share(items: list[tuple[str, int]]) -> list[list[Any]]:
        return [[name, round(100 * count / max(total, 1), 1)] for name, count in items]

    return share
