"""The readable failures of the embedded servers: each message says what went wrong and what to
do, because it ends up in front of a developer running `tracegate dev` or the tests."""

from __future__ import annotations


class DevStackError(RuntimeError):
    """Base of every failure of the embedded servers or the dev stack."""


class PortInUseError(DevStackError):
    def __init__(self, port: int, what: str) -> None:
        super().__init__(
            f"port 127.0.0.1:{port} for {what} is already in use; "
            "stop whatever listens there or let tracegate pick a free port"
        )
        self.port = port


class BinaryNotFoundError(DevStackError):
    """A server binary (or a tool needed to run it) is missing."""


class DataDirError(DevStackError):
    """A data directory cannot be used: not writable, busy, or from another server version."""


class ServerStartError(DevStackError):
    """A server or child process exited or stayed unready while starting; carries its log tail."""
