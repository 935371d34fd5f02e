# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The compiled BucketLoader (bucket_core.h does the work); service/firstseen/bucket_loader.py
is the pure-Python reference it equals byte for byte, and documents the API."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc


cdef extern from "bucket_core.h":
    ctypedef struct bc_piece:
        const uint8_t *ptr
        size_t len

    ctypedef struct bc_group:
        size_t len

    ctypedef struct bc_loader:
        uint32_t slot_groups
        bc_group *groups
        size_t buffered
        size_t unknown
        int header_seen
        int ended
        int split_ready
        const uint8_t *split_col[7]
        int32_t split_len[7]
        int64_t split_number
        char error[256]

    int bc_sha256_select(int portable)
    void bc_sha256(const uint8_t *msg, size_t len, uint8_t *out)
    void bc_crc_init()
    uint32_t bc_crc32_update(uint32_t c, const uint8_t *p, size_t n)
    uint64_t bc_crc64(uint64_t c, const uint8_t *p, size_t n)
    size_t bc_payload(uint8_t *dst, const bc_piece *pieces, size_t count)
    int bc_loader_init(bc_loader *L, uint32_t bucket_bits, uint32_t slot_groups)
    int bc_add_institution(bc_loader *L, const uint8_t *id, size_t len, int64_t number)
    void bc_loader_free(bc_loader *L)
    void bc_group_free(bc_group *g)
    long long bc_feed(bc_loader *L, const uint8_t *p, size_t n, size_t *rows)
    int bc_absorb(bc_loader *L, bc_loader *other)
    long long bc_prepare(bc_loader *L, uint32_t group)
    size_t bc_largest_bucket(bc_loader *L, uint32_t group)
    size_t bc_commands(uint8_t *dst, bc_loader *L, uint32_t group, int restore,
                       bc_piece *pieces, size_t *commands)


bc_crc_init()
_shani = bc_sha256_select(0)


def sha256_instructions() -> bool:
    """Whether SHA-256 runs on the CPU's SHA instructions (else portable C)."""
    return bool(_shani)


def use_portable_sha256(portable: bool) -> bool:
    """For the tests that hold both SHA-256 paths equal to hashlib; returns the former choice."""
    global _shani
    before = bool(_shani)
    _shani = bc_sha256_select(1 if portable else 0)
    return before


def sha256(const uint8_t[::1] data) -> bytes:
    cdef uint8_t out[32]
    bc_sha256(&data[0] if data.shape[0] else <const uint8_t *>b"", data.shape[0], out)
    return PyBytes_FromStringAndSize(<char *>out, 32)


def crc32(const uint8_t[::1] data) -> int:
    cdef const uint8_t *p = &data[0] if data.shape[0] else <const uint8_t *>b""
    return (~bc_crc32_update(0xFFFFFFFF, p, data.shape[0])) & 0xFFFFFFFF


def crc64(const uint8_t[::1] data) -> int:
    cdef const uint8_t *p = &data[0] if data.shape[0] else <const uint8_t *>b""
    return bc_crc64(0, p, data.shape[0])


def hash_payload(pairs) -> bytes:
    """DUMP payload of a hash holding `pairs` (distinct fields) as a ziplist."""
    cdef list flat = [piece for pair in pairs for piece in pair]
    cdef size_t count = len(flat), i
    cdef bc_piece *pieces = <bc_piece *>malloc((count + 1) * sizeof(bc_piece))
    if pieces == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            pieces[i].ptr = <const uint8_t *>PyBytes_AS_STRING(flat[i])
            pieces[i].len = len(flat[i])
        size = bc_payload(NULL, pieces, count)
        out = PyBytes_FromStringAndSize(NULL, size)
        bc_payload(<uint8_t *>PyBytes_AS_STRING(out), pieces, count)
        return out
    finally:
        free(pieces)


cdef int64_t _PG_EPOCH = 946684800  # PostgreSQL's timestamps count µs from 2000-01-01


cdef inline int32_t _be32(const uint8_t *p):
    return <int32_t>((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8)
                     | p[3])


cdef inline int64_t _be64(const uint8_t *p):
    return <int64_t>((<uint64_t><uint32_t>_be32(p) << 32) | <uint32_t>_be32(p + 4))


cdef class BucketLoader:
    cdef bc_loader loader
    cdef bytes _rest
    cdef list _split
    cdef readonly object bucket_bits, slot_groups

    def __cinit__(self, int bucket_bits, int slot_groups, institutions):
        if bucket_bits < 0 or bucket_bits > 31 or slot_groups < 1:
            raise ValueError(f"no such layout: {bucket_bits} bucket bits, {slot_groups} groups")
        if not bc_loader_init(&self.loader, bucket_bits, slot_groups):
            raise MemoryError()
        cdef bytes id_
        for institution_id, number in institutions.items():
            id_ = institution_id.encode()
            if id_ and bc_add_institution(&self.loader, <const uint8_t *>PyBytes_AS_STRING(id_),
                                          len(id_), number) < 0:
                raise MemoryError(self.loader.error.decode())
        self._rest, self._split = b"", []
        self.bucket_bits, self.slot_groups = bucket_bits, slot_groups

    def __dealloc__(self):
        bc_loader_free(&self.loader)

    @property
    def buffered(self) -> int:
        return self.loader.buffered

    @property
    def unknown_institutions(self) -> int:
        return self.loader.unknown

    def feed(self, data) -> int:
        """`data`: bytes, bytearray or any buffer of bytes."""
        cdef const uint8_t[::1] view = (self._rest + bytes(data)) if self._rest else data
        cdef size_t rows = 0, filed = 0, n = view.shape[0], position = 0
        cdef long long used
        while position < n:
            used = bc_feed(&self.loader, &view[position], n - position, &rows)
            if used < 0:
                raise ValueError(self.loader.error.decode())
            filed += rows
            position += <size_t>used
            if not self.loader.split_ready:
                break
            self._split.append(self._split_row())
        self._rest = bytes(view[position:]) if position < n else b""
        return filed

    cdef tuple _split_row(self):
        cdef const uint8_t **col = self.loader.split_col
        cdef int32_t *size = self.loader.split_len
        cdef int64_t paid_us = _be64(col[4])
        cdef int64_t seconds = paid_us // 1000000  # floor, as Python's // is
        return ((<const char *>col[0])[:size[0]].decode(),
                (<const char *>col[1])[:size[1]].decode(), _be32(col[2]),
                self.loader.split_number, seconds + _PG_EPOCH, _be32(col[5]),
                _be32(col[6]) if size[6] >= 0 else None)

    def absorb(self, BucketLoader other) -> None:
        """Takes over what `other` holds (it stays open for more of its own stream)."""
        if bc_absorb(&self.loader, &other.loader) < 0:
            raise ValueError(self.loader.error.decode())
        self._split += other.take_split()

    def take_split(self) -> list:
        split, self._split = self._split, []
        return split

    def finish(self) -> None:
        if not self.loader.ended or self._rest:
            raise ValueError("the COPY stream of whole-pack claims ended early")

    def next_stream(self) -> None:
        """The stream ended (checked); the next feed begins another (its header first)."""
        self.finish()
        self.loader.header_seen = self.loader.ended = 0

    def commands(self, int group, bint restore) -> tuple[bytes, int]:
        if group < 0 or <uint32_t>group >= self.loader.slot_groups:
            raise ValueError(f"no slot group {group}")
        cdef bc_group *g = &self.loader.groups[group]
        cdef size_t rows = g.len, count = 0
        if rows == 0:
            return b"", 0
        if bc_prepare(&self.loader, group) < 0:
            raise MemoryError(self.loader.error.decode())
        cdef size_t most = bc_largest_bucket(&self.loader, group)
        cdef bc_piece *pieces = <bc_piece *>malloc(2 * most * sizeof(bc_piece))
        if pieces == NULL:
            raise MemoryError()
        try:
            size = bc_commands(NULL, &self.loader, group, restore, pieces, &count)
            out = PyBytes_FromStringAndSize(NULL, size)
            bc_commands(<uint8_t *>PyBytes_AS_STRING(out), &self.loader, group, restore,
                        pieces, &count)
        finally:
            free(pieces)
        bc_group_free(g)
        self.loader.buffered -= rows
        return out, count
