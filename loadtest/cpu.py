"""Where a run's CPU went: seconds of user + system time per role (consumers, PostgreSQL,
Kafka, Redis…), read from /proc (Linux) at the start and the end of the measured window.

Every process of a run shares the machine's cores, so one role's appetite is every other's
limit: the stream report shows microseconds of CPU per code for each. A process that exits
inside the window loses its share (a PostgreSQL backend that disconnects); one that starts
inside it counts from zero. /proc counts in clock ticks (10 ms): in a short run a quiet
role shows 0."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from cli.devstack.process import cpu_seconds
from cli.devstack.servers import ServerHandle


class Process(Protocol):
    @property
    def pids(self) -> list[int]: ...


@dataclass
class CpuMeter:
    """`roles` name a function listing the pids to count now (processes come and go)."""

    roles: dict[str, Callable[[], Sequence[int]]]
    start: dict[tuple[str, int], float] = field(default_factory=dict)

    def begin(self) -> None:
        self.start = self._read()

    def seconds(self) -> dict[str, float]:
        spent: dict[str, float] = dict.fromkeys(self.roles, 0.0)
        for (role, pid), now in self._read().items():
            spent[role] += now - self.start.get((role, pid), 0.0)
        return spent

    def _read(self) -> dict[tuple[str, int], float]:
        return {(role, pid): cpu_seconds(pid)
                for role, pids in self.roles.items() for pid in pids()}


def meter_for(servers: Sequence[ServerHandle], **groups: Sequence[Process]) -> CpuMeter:
    """Each server a role of its own (postgres, redis, kafka), each named group of processes
    one role (its pids and their descendants', read anew each time)."""
    roles: dict[str, Callable[[], Sequence[int]]] = {
        server.name: partial(_pids_of, [server]) for server in servers}
    roles.update({name: partial(_pids_of, group) for name, group in groups.items()})
    return CpuMeter(roles)


def _pids_of(processes: Sequence[Process]) -> list[int]:
    return [pid for process in processes for pid in process.pids]


def per_unit_us(spent: dict[str, float], units: int) -> dict[str, float]:
    """Microseconds of CPU per code (stream) or per call (gate), by role."""
    return {role: round(seconds / units * 1e6, 1) for role, seconds in spent.items()} if units \
        else {}
