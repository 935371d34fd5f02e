# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""PostgreSQL's binary COPY format for rows of a few plain column kinds, encoded in one pass
into one buffer. The pure-Python reference, which the tests hold this equal to byte for byte
and error for error, is service/kit/pg_copy.py; what each kind accepts is written there."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport (
    PyDateTime_CheckExact, PyDateTime_DATE_GET_HOUR, PyDateTime_DATE_GET_MICROSECOND,
    PyDateTime_DATE_GET_MINUTE, PyDateTime_DATE_GET_SECOND, PyDateTime_DELTA_GET_DAYS,
    PyDateTime_DELTA_GET_MICROSECONDS, PyDateTime_DELTA_GET_SECONDS, PyDateTime_GET_DAY,
    PyDateTime_GET_MONTH, PyDateTime_GET_YEAR, datetime_tzinfo, import_datetime,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy

import datetime as _dt

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

import_datetime()

cdef object _FIXED = _dt.timezone
cdef enum:
    HEADER_LEN = 19
    PG_EPOCH_DAYS = 10957  # 2000-01-01 is this many days after 1970-01-01

cdef bytes _HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"


cdef struct Buffer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _reserve(Buffer* buf, Py_ssize_t more) except -1:
    cdef Py_ssize_t wanted = buf.size + more
    cdef Py_ssize_t capacity = buf.capacity
    cdef char* grown
    if wanted <= capacity:
        return 0
    while capacity < wanted:
        capacity *= 2
    grown = <char*>PyMem_Realloc(buf.data, capacity)
    if grown == NULL:
        raise MemoryError()
    buf.data = grown
    buf.capacity = capacity
    return 0


cdef inline void _be16(char* at, int value) noexcept:
    at[0] = <char>((value >> 8) & 0xFF)
    at[1] = <char>(value & 0xFF)


cdef inline void _be32(char* at, long value) noexcept:
    at[0] = <char>((value >> 24) & 0xFF)
    at[1] = <char>((value >> 16) & 0xFF)
    at[2] = <char>((value >> 8) & 0xFF)
    at[3] = <char>(value & 0xFF)


cdef inline void _be64(char* at, int64_t value) noexcept:
    cdef int i
    for i in range(8):
        at[i] = <char>((value >> (56 - 8 * i)) & 0xFF)


cdef int _raw(Buffer* buf, const char* data, Py_ssize_t length, int prefix) except -1:
    """A length-prefixed field: the bytes themselves, after an optional version byte."""
    _reserve(buf, 4 + prefix + length)
    _be32(buf.data + buf.size, length + prefix)
    buf.size += 4
    if prefix:
        buf.data[buf.size] = 1
        buf.size += 1
    memcpy(buf.data + buf.size, data, length)
    buf.size += length
    return 0


cdef inline int64_t _days_from_civil(int y, int m, int d) noexcept:
    # Howard Hinnant's days_from_civil: days since 1970-01-01 of a proleptic Gregorian date.
    cdef int64_t era, yoe, doy, doe
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef class _Offsets:
    """The last fixed-offset zone seen and its offset: rows of one batch share a handful."""
    cdef object zone
    cdef int64_t micros


cdef int64_t _offset_micros(object value, object zone, _Offsets last) except? -1:
    cdef object delta
    cdef int64_t micros
    if zone is last.zone:
        return last.micros
    delta = value.utcoffset()
    if delta is None:
        raise ValueError("timestamptz wants an aware datetime, not a naive one")
    micros = (<int64_t>PyDateTime_DELTA_GET_DAYS(delta) * 86400
              + PyDateTime_DELTA_GET_SECONDS(delta)) * 1000000 \
        + PyDateTime_DELTA_GET_MICROSECONDS(delta)
    if type(zone) is _FIXED:  # the same offset at every instant: safe to remember
        last.zone = zone
        last.micros = micros
    return micros


cdef int _timestamp(Buffer* buf, object value, _Offsets last) except -1:
    if not PyDateTime_CheckExact(value):
        raise TypeError(f"timestamptz wants a datetime, not {type(value).__name__}")
    cdef object zone = datetime_tzinfo(value)
    if zone is None:
        raise ValueError("timestamptz wants an aware datetime, not a naive one")
    cdef int64_t days = _days_from_civil(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                                         PyDateTime_GET_DAY(value)) - PG_EPOCH_DAYS
    cdef int64_t seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(value) * 3600 \
        + PyDateTime_DATE_GET_MINUTE(value) * 60 + PyDateTime_DATE_GET_SECOND(value)
    cdef int64_t micros = seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(value) \
        - _offset_micros(value, zone, last)
    _reserve(buf, 12)
    _be32(buf.data + buf.size, 8)
    _be64(buf.data + buf.size + 4, micros)
    buf.size += 12
    return 0


cdef int _int4(Buffer* buf, object value) except -1:
    if type(value) is not int:
        raise TypeError(f"int4 wants an int, not {type(value).__name__}")
    cdef long number
    try:
        number = value
    except OverflowError:
        raise OverflowError(f"{value} does not fit int4") from None
    if number < -2147483648 or number > 2147483647:
        raise OverflowError(f"{number} does not fit int4")
    _reserve(buf, 8)
    _be32(buf.data + buf.size, 4)
    _be32(buf.data + buf.size + 4, number)
    buf.size += 8
    return 0


cdef int _bool(Buffer* buf, object value) except -1:
    if value is not True and value is not False:
        raise TypeError(f"bool wants True or False, not {type(value).__name__}")
    _reserve(buf, 5)
    _be32(buf.data + buf.size, 1)
    buf.data[buf.size + 4] = 1 if value is True else 0
    buf.size += 5
    return 0


cdef int _text(Buffer* buf, object value) except -1:
    cdef Py_ssize_t length
    if not PyUnicode_Check(value):
        raise TypeError(f"text wants a str, not {type(value).__name__}")
    cdef const char* data = PyUnicode_AsUTF8AndSize(value, &length)
    return _raw(buf, data, length, 0)


cdef int _bytes(Buffer* buf, object value, int prefix, str kind) except -1:
    if type(value) is not bytes:
        raise TypeError(f"{kind} wants bytes, not {type(value).__name__}")
    return _raw(buf, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), prefix)


cdef int _field(Buffer* buf, Py_UCS4 kind, object value, _Offsets last) except -1:
    if value is None:
        _reserve(buf, 4)
        _be32(buf.data + buf.size, -1)
        buf.size += 4
        return 0
    if kind == u"t":
        return _text(buf, value)
    if kind == u"z":
        return _timestamp(buf, value, last)
    if kind == u"i":
        return _int4(buf, value)
    if kind == u"b":
        return _bool(buf, value)
    if kind == u"y":
        return _bytes(buf, value, 0, "bytea")
    if kind == u"j":
        return _bytes(buf, value, 0, "json")
    return _bytes(buf, value, 1, "jsonb")


def encode_rows(rows, str kinds):
    """The COPY ... (FORMAT binary) payload of `rows`, one kind letter a column."""
    unknown = sorted(set(kinds) - set("tzibyjJ"))
    if unknown:
        raise ValueError(f"unknown column kind(s) {', '.join(map(repr, unknown))}")
    cdef Py_ssize_t width = len(kinds)
    cdef Buffer buf
    cdef _Offsets last = _Offsets()
    cdef Py_ssize_t column
    buf.capacity = 65536
    buf.size = 0
    buf.data = <char*>PyMem_Malloc(buf.capacity)
    if buf.data == NULL:
        raise MemoryError()
    try:
        memcpy(buf.data, PyBytes_AS_STRING(_HEADER), HEADER_LEN)
        buf.size = HEADER_LEN
        for row in rows:
            if len(row) != width:
                raise ValueError(f"a row of {len(row)} values for {width} columns")
            _reserve(&buf, 2)
            _be16(buf.data + buf.size, width)
            buf.size += 2
            for column in range(width):
                _field(&buf, kinds[column], row[column], last)
        _reserve(&buf, 2)
        _be16(buf.data + buf.size, -1)
        buf.size += 2
        return PyBytes_FromStringAndSize(buf.data, buf.size)
    finally:
        PyMem_Free(buf.data)
