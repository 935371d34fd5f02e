# The compiled encoder's interface (_pg_copy.pyx); pg_copy.encode_rows is its reference.
from collections.abc import Iterable, Sequence
from typing import Any

def encode_rows(rows: Iterable[Sequence[Any]], kinds: str) -> bytes: ...
