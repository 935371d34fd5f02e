"""The checkpoint of `tracegate import nhsa`: how far a file is confirmed on the topic, what was
counted up to there, and the rules for carrying on from it."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from service.nhsa.upload import Encoded, StreamEvent

HEAD_BYTES = 64 * 1024  # what identifies the file: a checkpoint is for this file only


class ImportRefused(Exception):
    """The file cannot be imported as asked (it changed under its checkpoint)."""


@dataclass(slots=True)
class Summary:
    messages: int = 0
    rows: int = 0
    settlements: int = 0
    codes: int = 0
    refused_rows: int = 0
    seconds: float = 0.0  # of every run, summed
    cpu_s: float = 0.0  # the importing process's and its workers'

    def spent(self, seconds: float, cpu_s: float) -> None:
        self.seconds += seconds
        self.cpu_s += cpu_s

    def add(self, encoded: list[Encoded], events: list[StreamEvent]) -> None:
        """A confirmed chunk: its messages (blank lines are none), rows, what was sent."""
        self.messages += len(encoded)
        self.rows += sum(e.rows for e in encoded)
        self.settlements += len(events)
        self.codes += sum(e.codes for e in events)
        self.refused_rows += sum(r.rows for e in encoded for r in e.refused)


@dataclass(slots=True)
class Checkpoint:
    """How far the file is confirmed on the topic, and what was counted up to there."""

    file: str
    head: str
    offset: int = 0  # bytes of the file confirmed
    line: int = 0  # lines of the file confirmed
    refused_bytes: int = 0  # of the refusals file, written for the confirmed lines
    summary: Summary = field(default_factory=Summary)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint:
        body = orjson.loads(raw)
        return cls(**{**body, "summary": Summary(**body["summary"])})


@dataclass(frozen=True, slots=True)
class Paths:
    checkpoint: Path
    refused: Path  # every refused row, one JSON a line

    @classmethod
    def for_file(cls, path: Path, state_dir: Path | None) -> Paths:
        if state_dir is None:
            return cls(path.with_name(path.name + ".import.json"),
                       path.with_name(path.name + ".refused.jsonl"))
        tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        return cls(state_dir / f"{path.name}.{tag}.import.json",
                   state_dir / f"{path.name}.{tag}.refused.jsonl")


def start(path: Path, paths: Paths, restart: bool) -> Checkpoint:
    head = head_of(path)
    if restart or not paths.checkpoint.exists():
        paths.refused.unlink(missing_ok=True)
        return Checkpoint(str(path.resolve()), head)
    checkpoint = Checkpoint.from_json(paths.checkpoint.read_bytes())
    if checkpoint.head != head or path.stat().st_size < checkpoint.offset:
        raise ImportRefused(f"{path} is not the file {paths.checkpoint} was written for (it "
                            "changed); --restart sends it all again (the consumers record "
                            "each settlement once)")
    if paths.refused.exists():  # refusals written for lines the checkpoint does not cover
        with paths.refused.open("r+b") as handle:
            handle.truncate(checkpoint.refused_bytes)
    return checkpoint


def head_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.sha256(handle.read(HEAD_BYTES)).hexdigest()


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Written whole or not at all: a crash mid-write leaves the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(checkpoint.to_json())
    partial.replace(path)
