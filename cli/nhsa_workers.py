"""The worker processes of `tracegate import nhsa`: each maps and encodes whole chunks of the
file. A module of its own so that a worker imports only what mapping needs."""

from __future__ import annotations

from service.kit.garbage_collection import tune_for_throughput
from service.nhsa.upload import Encoded, encode_line

_PACK_SIZES: dict[str, int] = {}  # this worker's copy of the catalogue


def start(pack_sizes: dict[str, int]) -> None:
    _PACK_SIZES.update(pack_sizes)
    tune_for_throughput()


def encode(first_line: int, lines: list[bytes]) -> list[Encoded]:
    return encode_chunk(first_line, lines, _PACK_SIZES)


def encode_chunk(first_line: int, lines: list[bytes], pack_sizes: dict[str, int]) -> list[Encoded]:
    return [encode_line(line, first_line + n, pack_sizes)
            for n, line in enumerate(lines) if line.strip()]
