"""A settlement's recorded lines are written as JSON arrays and read in either form: the
object form rows, topic events and recent answers written before it still hold."""

from __future__ import annotations

import msgspec
import pytest

from service.policy.schemas import NoCodeReason
from service.records.schemas import NamedRecordedLine, RecordedLine, decode_lines

LINES = [
    RecordedLine(1, "XC09AAL012A001010100543", 2, False, None,
                 ("81234560000000000011", "81234560000000000028"), None, "pay", [],
                 [("81234560000000000011", None, False), ("81234560000000000028", None, True)]),
    RecordedLine(2, "XN02BEA", 5, True, 20, ("81234560000000000035",), None, "pay", [],
                 [("81234560000000000035", 5, False)]),
    RecordedLine(3, "T0", 1, False, None, (), NoCodeReason.HERBAL_PIECES, "reject",
                 [{"code": "MISSING_TRACE_CODE", "severity": "error"}], []),
]


def test_lines_are_written_as_arrays_and_read_back_equal() -> None:
    raw = msgspec.json.encode(LINES)
    assert raw.startswith(b"[[1,")
    assert decode_lines(raw) == LINES


def test_lines_written_as_objects_before_read_as_the_same_lines() -> None:
    named = [NamedRecordedLine(*msgspec.structs.astuple(line)) for line in LINES]
    raw = msgspec.json.encode(named)
    assert raw.startswith(b'[{"line_no":1,')
    lines = decode_lines(raw)
    assert lines == LINES
    assert all(type(line) is RecordedLine for line in lines)
    assert [line.paid for line in lines] == [True, True, False]


def test_lines_of_neither_form_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_lines(b'[{"line_no": "one"}]')
