# cython: language_level=3, boundscheck=False, wraparound=False
"""The first-seen store's packing of a batch's codes and effects into one script argument
(one call on a single Redis server), compiled: SHA-256 addresses from bucket_core.h, entries
written straight into one buffer. The pure-Python reference the tests hold it equal to, byte
for byte, is FirstSeenStore's own packing loop (store.py `_pack_each`, which a Redis Cluster's
calls, one per slot group, still take), over encoding.py's Layout."""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

cdef extern from "bucket_core.h":
    int bc_sha256_select(int portable)
    void bc_sha256(const uint8_t *msg, size_t len, uint8_t *out)

bc_sha256_select(0)

cdef enum:
    CODE_ENTRY = 12  # >HI6s: the group's slot in the call, bucket, field
    EFFECT_ENTRY = 27  # >BHI6sIIHHH: kind, slot, bucket, field, token, institution, day, units, size
    FORGET = 5
    WHOLE_STATE = 10  # >IIH: owner, institution, day
    SPLIT_HEAD = 14  # >IIHHH: and units_used, pack_size; then each split owner (u32)
    EPOCH = 1577836800  # 2020-01-01T00:00:00Z: paid days count from it
    DAY = 86400


cdef struct Packer:
    uint32_t bucket_bits
    uint32_t slot_groups
    int* slots  # a group's 1-based slot in the call, 0 while the call has none of it
    uint8_t* out
    Py_ssize_t at


cdef inline void _put16(uint8_t* p, uint32_t v) noexcept:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef int _address(Packer* k, object code, list groups) except -1:
    """Writes slot, bucket and field (12 bytes) at k.out + k.at for `code`."""
    cdef Py_ssize_t length
    cdef const char* text = PyUnicode_AsUTF8AndSize(code, &length)
    cdef uint8_t digest[32]
    bc_sha256(<const uint8_t*>text, length, digest)
    cdef uint32_t high = (<uint32_t>digest[0] << 24) | (<uint32_t>digest[1] << 16) \
        | (<uint32_t>digest[2] << 8) | digest[3]
    cdef uint32_t low = (<uint32_t>digest[4] << 24) | (<uint32_t>digest[5] << 16) \
        | (<uint32_t>digest[6] << 8) | digest[7]
    cdef uint32_t group = (high & 0x7FFFFFFF) % k.slot_groups
    cdef uint32_t mask = (1u << k.bucket_bits) - 1 if k.bucket_bits < 32 else 0xFFFFFFFF
    if k.slots[group] == 0:
        groups.append(group)
        k.slots[group] = len(groups)
    _put16(k.out + k.at, k.slots[group])
    _put32(k.out + k.at + 2, low & mask)
    memcpy(k.out + k.at + 6, digest + 8, 6)
    return 0


cdef int _start(Packer* k, uint32_t bucket_bits, uint32_t slot_groups, Py_ssize_t size) except -1:
    if slot_groups < 1:
        raise ValueError("slot_groups must be at least 1")
    k.bucket_bits, k.slot_groups, k.at = bucket_bits, slot_groups, 0
    k.slots = <int*>PyMem_Calloc(slot_groups, sizeof(int))
    k.out = <uint8_t*>PyMem_Malloc(size if size > 0 else 1)
    if k.slots == NULL or k.out == NULL:
        raise MemoryError()
    return 0


cdef void _end(Packer* k) noexcept:
    PyMem_Free(k.slots)
    PyMem_Free(k.out)


def pack_codes(codes, uint32_t bucket_bits, uint32_t slot_groups):
    """(groups in order of first use, the packed codes) for one call holding every code."""
    cdef Packer k
    cdef list groups = []
    _start(&k, bucket_bits, slot_groups, len(codes) * CODE_ENTRY)
    try:
        for code in codes:
            _address(&k, code, groups)
            k.at += CODE_ENTRY
        return groups, PyBytes_FromStringAndSize(<char*>k.out, k.at)
    finally:
        _end(&k)


cdef inline uint32_t _u32(object value, str name) except? 0xFFFFFFFF:
    cdef long long number = value
    if number < 0 or number > 0xFFFFFFFF:
        raise OverflowError(f"{name} {number} does not fit 32 bits")
    return <uint32_t>number


cdef inline uint32_t _u16_capped(object value, str name) except? 0xFFFFFFFF:
    cdef long long number = value
    if number < 0:
        raise OverflowError(f"{name} {number} is negative")
    return <uint32_t>(number if number < 0xFFFF else 0xFFFF)


cdef inline uint32_t _paid_day(object paid_at) except? 0xFFFFFFFF:
    cdef long long seconds = paid_at
    if seconds < EPOCH:
        return 0
    cdef long long day = (seconds - EPOCH) // DAY
    return <uint32_t>(day if day < 0xFFFF else 0xFFFF)


cdef int _effect(Packer* k, object effect, list groups) except -1:
    cdef uint8_t* p = k.out + k.at
    cdef long long kind = effect.kind
    if kind < 0 or kind > 0xFF:
        raise OverflowError(f"kind {kind} does not fit a byte")
    p[0] = <uint8_t>kind
    k.at += 1
    _address(k, effect.canonical, groups)
    p = k.out + k.at + CODE_ENTRY
    _put32(p, _u32(effect.token, "token"))
    _put32(p + 4, _u32(effect.institution_no, "institution_no"))
    _put16(p + 8, _paid_day(effect.paid_at))
    _put16(p + 10, _u16_capped(effect.units, "units"))
    _put16(p + 12, _u16_capped(effect.pack_size, "pack_size"))
    k.at += CODE_ENTRY + 14
    return 0


def pack_effects(effects, forget, uint32_t bucket_bits, uint32_t slot_groups):
    """(groups in order of first use, the packed effects then forgets) for one call."""
    cdef Packer k
    cdef list groups = []
    _start(&k, bucket_bits, slot_groups, (len(effects) + len(forget)) * EFFECT_ENTRY)
    try:
        for effect in effects:
            _effect(&k, effect, groups)
        for code in forget:
            k.out[k.at] = FORGET
            k.at += 1
            _address(&k, code, groups)
            memcpy(k.out + k.at + CODE_ENTRY, b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 14)
            k.at += CODE_ENTRY + 14
        return groups, PyBytes_FromStringAndSize(<char*>k.out, k.at)
    finally:
        _end(&k)


cdef inline uint32_t _u16(object value, str name) except? 0xFFFFFFFF:
    cdef long long number = value
    if number < 0 or number > 0xFFFF:
        raise OverflowError(f"{name} {number} does not fit 16 bits")
    return <uint32_t>number


cdef Py_ssize_t _state_size(object state) except -1:
    """The bytes `_state` writes for a state: encode_state's, after its u16 length."""
    if state is None:
        return 2
    if state.units_used is None or state.pack_size is None:
        return 2 + WHOLE_STATE
    return 2 + SPLIT_HEAD + 4 * len(state.split_owners)


cdef int _state(Packer* k, object state) except -1:
    """A CodeState as encoding.encode_state packs it (None: empty), u16-length-prefixed."""
    cdef Py_ssize_t size = _state_size(state)
    cdef uint8_t* p = k.out + k.at
    _put16(p, <uint32_t>(size - 2))
    if state is None:
        k.at += 2
        return 0
    _put32(p + 2, _u32(state.owner, "owner"))
    _put32(p + 6, _u32(state.institution_no, "institution_no"))
    _put16(p + 10, _paid_day(state.paid_at))
    if size > 2 + WHOLE_STATE:
        _put16(p + 12, _u16(state.units_used, "units_used"))
        _put16(p + 14, _u16(state.pack_size, "pack_size"))
        p += 2 + SPLIT_HEAD
        for token in state.split_owners:
            _put32(p, _u32(token, "split owner"))
            p += 4
    k.at += size
    return 0


def pack_changes(changes, details, uint32_t bucket_bits, uint32_t slot_groups):
    """(groups in order of first use, the packed changes) for one claim call: each change's
    address, then its expected and new states and its detail (`details`, bytes, one a
    change), each u16-length-prefixed, as claim.lua reads them."""
    cdef Packer k
    cdef list groups = []
    cdef Py_ssize_t size = 0
    cdef Py_ssize_t n
    cdef bytes detail
    for n in range(len(changes)):
        size += CODE_ENTRY + _state_size(changes[n].expected) + _state_size(changes[n].new) \
            + 2 + len(details[n])
    _start(&k, bucket_bits, slot_groups, size)
    try:
        for n in range(len(changes)):
            change, detail = changes[n], details[n]
            if len(detail) > 0xFFFF:
                raise OverflowError(f"a detail of {len(detail)} bytes does not fit 16 bits")
            _address(&k, change.canonical, groups)
            k.at += CODE_ENTRY
            _state(&k, change.expected)
            _state(&k, change.new)
            _put16(k.out + k.at, <uint32_t>len(detail))
            memcpy(k.out + k.at + 2, <const char*>detail, len(detail))
            k.at += 2 + len(detail)
        return groups, PyBytes_FromStringAndSize(<char*>k.out, k.at)
    finally:
        _end(&k)
