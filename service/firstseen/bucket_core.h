/* The compiled core of the first-seen set's rebuild (service/firstseen/_bucket_loader.pyx).

   It turns PostgreSQL's COPY (FORMAT binary) stream of whole-pack claims into one Redis
   command per bucket: it addresses each code (SHA-256), encodes its value (owner token =
   CRC-32, institution number, day), files it under its bucket, and writes each bucket whole
   as a RESTORE of a DUMP payload (a ziplist-encoded hash, RDB type 13, RDB version 9, CRC-64
   Jones), or as an HSET. service/firstseen/bucket_loader.py is the pure-Python reference it
   must equal byte for byte (tests/integration/test_bucket_loader.py).

   Self-contained on purpose: the install needs only gcc and the Python headers (no OpenSSL or
   zlib headers), so SHA-256, CRC-32 and CRC-64 are bundled here. SHA-256 uses the CPU's SHA
   instructions where it has them (checked at run time; x86-64) and portable C elsewhere. */

#ifndef TRACEGATE_BUCKET_CORE_H
#define TRACEGATE_BUCKET_CORE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BC_SHANI 1
#include <immintrin.h>
#endif

/* ---- SHA-256 -------------------------------------------------------------------------- */

static const uint32_t bc_k256[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static inline uint32_t bc_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t bc_be64(const uint8_t *p) {
    return ((uint64_t)bc_be32(p) << 32) | bc_be32(p + 4);
}

static inline void bc_put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

#define BC_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void bc_sha256_blocks_portable(uint32_t s[8], const uint8_t *p, size_t blocks) {
    uint32_t w[64];
    while (blocks--) {
        for (int i = 0; i < 16; i++) w[i] = bc_be32(p + 4 * i);
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = BC_ROR(w[i - 15], 7) ^ BC_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = BC_ROR(w[i - 2], 17) ^ BC_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6],
                 h = s[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (BC_ROR(e, 6) ^ BC_ROR(e, 11) ^ BC_ROR(e, 25)) +
                          ((e & f) ^ (~e & g)) + bc_k256[i] + w[i];
            uint32_t t2 = (BC_ROR(a, 2) ^ BC_ROR(a, 13) ^ BC_ROR(a, 22)) +
                          ((a & b) ^ (a & c) ^ (b & c));
            h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g;
        s[7] += h;
        p += 64;
    }
}

#ifdef BC_SHANI
/* The SHA extensions (Intel since Goldmont/Ice Lake, AMD since Zen): 4 rounds per pair of
   sha256rnds2, the message schedule with sha256msg1/msg2. Words rotate through m[4]. */
__attribute__((target("sha,sse4.1")))
static void bc_sha256_blocks_shani(uint32_t s[8], const uint8_t *p, size_t blocks) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&s[0]);
    __m128i st1 = _mm_loadu_si128((const __m128i *)&s[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);          /* CDAB */
    st1 = _mm_shuffle_epi32(st1, 0x1B);          /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);  /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);       /* CDGH */
    while (blocks--) {
        __m128i abef = st0, cdgh = st1, m[4];
        for (int i = 0; i < 4; i++)
            m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), swap);
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
            __m128i x = m[g & 3];
            __m128i msg = _mm_add_epi32(x, _mm_load_si128((const __m128i *)&bc_k256[4 * g]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, msg);
            if (g >= 3 && g <= 14) {  /* the words of group g + 1 */
                __m128i *next = &m[(g + 1) & 3];
                *next = _mm_add_epi32(*next, _mm_alignr_epi8(x, m[(g + 3) & 3], 4));
                *next = _mm_sha256msg2_epu32(*next, x);
            }
            st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(msg, 0x0E));
            if (g >= 1 && g <= 12) m[(g + 3) & 3] = _mm_sha256msg1_epu32(m[(g + 3) & 3], x);
        }
        st0 = _mm_add_epi32(st0, abef);
        st1 = _mm_add_epi32(st1, cdgh);
        p += 64;
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);          /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);          /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);       /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);          /* HGFE */
    _mm_storeu_si128((__m128i *)&s[0], st0);
    _mm_storeu_si128((__m128i *)&s[4], st1);
}

/* Two one-block messages at once: each round depends on the last, so one message leaves the
   SHA unit idle most of the time; two interleaved nearly halve the time a code. */
__attribute__((target("sha,sse4.1")))
static void bc_sha256_x2_shani(uint32_t sa[8], const uint8_t *pa, uint32_t sb[8],
                               const uint8_t *pb) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i ta = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sa[0]), 0xB1);
    __m128i tb = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sb[0]), 0xB1);
    __m128i a1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sa[4]), 0x1B);
    __m128i b1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sb[4]), 0x1B);
    __m128i a0 = _mm_alignr_epi8(ta, a1, 8), b0 = _mm_alignr_epi8(tb, b1, 8);
    a1 = _mm_blend_epi16(a1, ta, 0xF0);
    b1 = _mm_blend_epi16(b1, tb, 0xF0);
    __m128i abef_a = a0, cdgh_a = a1, abef_b = b0, cdgh_b = b1, ma[4], mb[4];
    for (int i = 0; i < 4; i++) {
        ma[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa + 16 * i)), swap);
        mb[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb + 16 * i)), swap);
    }
#pragma GCC unroll 16
    for (int g = 0; g < 16; g++) {
        __m128i k = _mm_load_si128((const __m128i *)&bc_k256[4 * g]);
        __m128i xa = ma[g & 3], xb = mb[g & 3];
        __m128i msga = _mm_add_epi32(xa, k), msgb = _mm_add_epi32(xb, k);
        a1 = _mm_sha256rnds2_epu32(a1, a0, msga);
        b1 = _mm_sha256rnds2_epu32(b1, b0, msgb);
        if (g >= 3 && g <= 14) {
            __m128i *na = &ma[(g + 1) & 3], *nb = &mb[(g + 1) & 3];
            *na = _mm_sha256msg2_epu32(_mm_add_epi32(*na, _mm_alignr_epi8(xa, ma[(g + 3) & 3], 4)), xa);
            *nb = _mm_sha256msg2_epu32(_mm_add_epi32(*nb, _mm_alignr_epi8(xb, mb[(g + 3) & 3], 4)), xb);
        }
        a0 = _mm_sha256rnds2_epu32(a0, a1, _mm_shuffle_epi32(msga, 0x0E));
        b0 = _mm_sha256rnds2_epu32(b0, b1, _mm_shuffle_epi32(msgb, 0x0E));
        if (g >= 1 && g <= 12) {
            ma[(g + 3) & 3] = _mm_sha256msg1_epu32(ma[(g + 3) & 3], xa);
            mb[(g + 3) & 3] = _mm_sha256msg1_epu32(mb[(g + 3) & 3], xb);
        }
    }
    a0 = _mm_add_epi32(a0, abef_a); a1 = _mm_add_epi32(a1, cdgh_a);
    b0 = _mm_add_epi32(b0, abef_b); b1 = _mm_add_epi32(b1, cdgh_b);
    ta = _mm_shuffle_epi32(a0, 0x1B); a1 = _mm_shuffle_epi32(a1, 0xB1);
    tb = _mm_shuffle_epi32(b0, 0x1B); b1 = _mm_shuffle_epi32(b1, 0xB1);
    _mm_storeu_si128((__m128i *)&sa[0], _mm_blend_epi16(ta, a1, 0xF0));
    _mm_storeu_si128((__m128i *)&sa[4], _mm_alignr_epi8(a1, ta, 8));
    _mm_storeu_si128((__m128i *)&sb[0], _mm_blend_epi16(tb, b1, 0xF0));
    _mm_storeu_si128((__m128i *)&sb[4], _mm_alignr_epi8(b1, tb, 8));
}
#endif

typedef void (*bc_sha_blocks_fn)(uint32_t *, const uint8_t *, size_t);
static bc_sha_blocks_fn bc_sha_blocks = bc_sha256_blocks_portable;
static int bc_sha_x2 = 0;  /* the two-message path is there */

/* 1 if the SHA instructions are used, 0 for portable C; `portable` forces the latter. */
static int bc_sha256_select(int portable) {
    bc_sha_blocks = bc_sha256_blocks_portable;
    bc_sha_x2 = 0;
#ifdef BC_SHANI
    __builtin_cpu_init();
    if (!portable && __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1")) {
        bc_sha_blocks = bc_sha256_blocks_shani;
        bc_sha_x2 = 1;
        return 1;
    }
#endif
    (void)portable;
    return 0;
}

static const uint32_t bc_sha_init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
#define BC_ONE_BLOCK 55  /* the longest message that pads into one block */

/* The one padded block of a message of at most BC_ONE_BLOCK bytes. */
static void bc_sha256_pad1(uint8_t block[64], const uint8_t *msg, size_t len) {
    memcpy(block, msg, len);
    block[len] = 0x80;
    memset(block + len + 1, 0, 64 - len - 1 - 8);
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) block[63 - i] = (uint8_t)(bits >> (8 * i));
}

/* Two messages of at most BC_ONE_BLOCK bytes each. */
static void bc_sha256_pair(const uint8_t *a, size_t alen, uint8_t outa[32], const uint8_t *b,
                           size_t blen, uint8_t outb[32]) {
    uint32_t sa[8], sb[8];
    uint8_t ba[64], bb[64];
    memcpy(sa, bc_sha_init, sizeof sa);
    memcpy(sb, bc_sha_init, sizeof sb);
    bc_sha256_pad1(ba, a, alen);
    bc_sha256_pad1(bb, b, blen);
#ifdef BC_SHANI
    if (bc_sha_x2) {
        bc_sha256_x2_shani(sa, ba, sb, bb);
    } else
#endif
    {
        bc_sha_blocks(sa, ba, 1);
        bc_sha_blocks(sb, bb, 1);
    }
    for (int i = 0; i < 8; i++) { bc_put_be32(outa + 4 * i, sa[i]); bc_put_be32(outb + 4 * i, sb[i]); }
}

static void bc_sha256(const uint8_t *msg, size_t len, uint8_t out[32]) {
    uint32_t s[8];
    memcpy(s, bc_sha_init, sizeof s);
    size_t full = len / 64;
    if (full) bc_sha_blocks(s, msg, full);
    uint8_t tail[128];
    size_t rest = len - full * 64;
    memcpy(tail, msg + full * 64, rest);
    tail[rest] = 0x80;
    size_t blocks = rest < 56 ? 1 : 2;
    memset(tail + rest + 1, 0, blocks * 64 - rest - 1 - 8);
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    bc_sha_blocks(s, tail, blocks);
    for (int i = 0; i < 8; i++) bc_put_be32(out + 4 * i, s[i]);
}

/* ---- CRC-32 (zlib's, = PostgreSQL's crc32()) and CRC-64 Jones (Redis's), slice-by-8 ---- */

static uint32_t bc_crc32_table[8][256];
static uint64_t bc_crc64_table[8][256];

static void bc_crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        uint64_t d = i;
        for (int k = 0; k < 8; k++) {
            c = (c >> 1) ^ ((c & 1) ? 0xEDB88320u : 0);
            d = (d >> 1) ^ ((d & 1) ? 0x95AC9329AC4BC9B5ULL : 0);  /* 0xad93d23594c935a9 reflected */
        }
        bc_crc32_table[0][i] = c;
        bc_crc64_table[0][i] = d;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++) {
            uint32_t c = bc_crc32_table[t - 1][i];
            uint64_t d = bc_crc64_table[t - 1][i];
            bc_crc32_table[t][i] = (c >> 8) ^ bc_crc32_table[0][c & 0xFF];
            bc_crc64_table[t][i] = (d >> 8) ^ bc_crc64_table[0][d & 0xFF];
        }
}

static inline uint64_t bc_le64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* Slice-by-8 over one of the tables above: both CRCs are reflected, so one body serves. */
#define BC_CRC_SLICE8(table, c, p, n)                                                         \
    do {                                                                                      \
        while ((n) >= 8) {                                                                    \
            uint64_t x_ = bc_le64(p) ^ (c);                                                   \
            (c) = table[7][x_ & 0xFF] ^ table[6][(x_ >> 8) & 0xFF] ^                          \
                  table[5][(x_ >> 16) & 0xFF] ^ table[4][(x_ >> 24) & 0xFF] ^                 \
                  table[3][(x_ >> 32) & 0xFF] ^ table[2][(x_ >> 40) & 0xFF] ^                 \
                  table[1][(x_ >> 48) & 0xFF] ^ table[0][x_ >> 56];                           \
            (p) += 8; (n) -= 8;                                                               \
        }                                                                                     \
        while ((n)--) (c) = ((c) >> 8) ^ table[0][((c) ^ *(p)++) & 0xFF];                     \
    } while (0)

/* The raw register update: callers start from ~0 and end with ~ for CRC-32 (zlib). */
static uint32_t bc_crc32_update(uint32_t c, const uint8_t *p, size_t n) {
    BC_CRC_SLICE8(bc_crc32_table, c, p, n);
    return c;
}

/* Redis's crc64(): Jones polynomial, reflected, initial value 0, no final xor. */
static uint64_t bc_crc64(uint64_t c, const uint8_t *p, size_t n) {
    BC_CRC_SLICE8(bc_crc64_table, c, p, n);
    return c;
}

/* ---- ziplist entries, as Redis 6.2's ziplistPush writes them ------------------------------ */

/* Redis's string2ll() behind zipTryEncoding(): the canonical decimal form of an int64 (no
   leading zeros, no '+', "0" alone) is stored as an integer, anything else as a string. */
static int bc_zl_integer(const uint8_t *s, size_t len, int64_t *out) {
    if (len == 0 || len >= 21) return 0;  /* ziplist: < 32; string2ll: < LONG_STR_SIZE (21) */
    if (len == 1 && s[0] == '0') { *out = 0; return 1; }
    size_t i = 0;
    int negative = 0;
    if (s[0] == '-') { negative = 1; i = 1; if (len == 1) return 0; }
    if (s[i] < '1' || s[i] > '9') return 0;
    uint64_t v = (uint64_t)(s[i++] - '0');
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        if (v > UINT64_MAX / 10) return 0;
        v *= 10;
        if (v > UINT64_MAX - (uint64_t)(s[i] - '0')) return 0;
        v += (uint64_t)(s[i] - '0');
    }
    if (negative) {
        if (v > (uint64_t)INT64_MAX + 1) return 0;
        *out = (int64_t)(0 - v);
    } else {
        if (v > (uint64_t)INT64_MAX) return 0;
        *out = (int64_t)v;
    }
    return 1;
}

/* Writes one entry after one of `prevlen` bytes (dst NULL: only sizes it); returns its size. */
static size_t bc_zl_entry(uint8_t *dst, size_t prevlen, const uint8_t *s, size_t len) {
    uint8_t head[16];
    size_t h = 0;
    if (prevlen < 254) {
        head[h++] = (uint8_t)prevlen;
    } else {
        head[h++] = 254;
        uint32_t p32 = (uint32_t)prevlen;
        for (int i = 0; i < 4; i++) head[h++] = (uint8_t)(p32 >> (8 * i));  /* little endian */
    }
    int64_t v;
    size_t data = 0;
    const uint8_t *payload = s;
    uint8_t ints[8];
    if (bc_zl_integer(s, len, &v)) {
        if (v >= 0 && v <= 12) { head[h++] = (uint8_t)(0xF1 + v); data = 0; }
        else if (v >= INT8_MIN && v <= INT8_MAX) { head[h++] = 0xFE; data = 1; }
        else if (v >= INT16_MIN && v <= INT16_MAX) { head[h++] = 0xC0; data = 2; }
        else if (v >= -(1 << 23) && v <= (1 << 23) - 1) { head[h++] = 0xF0; data = 3; }
        else if (v >= INT32_MIN && v <= INT32_MAX) { head[h++] = 0xD0; data = 4; }
        else { head[h++] = 0xE0; data = 8; }
        uint64_t u = (uint64_t)v;
        for (size_t i = 0; i < data; i++) ints[i] = (uint8_t)(u >> (8 * i));  /* LE */
        payload = ints;
    } else {
        if (len <= 0x3F) {
            head[h++] = (uint8_t)len;
        } else if (len <= 0x3FFF) {
            head[h++] = (uint8_t)(0x40 | (len >> 8));
            head[h++] = (uint8_t)len;
        } else {
            head[h++] = 0x80;
            bc_put_be32(head + h, (uint32_t)len);
            h += 4;
        }
        data = len;
    }
    if (dst != NULL) {
        memcpy(dst, head, h);
        memcpy(dst + h, payload, data);
    }
    return h + data;
}

/* RDB's length prefix (rdbSaveLen) of a string of `len` bytes; returns its size. */
static size_t bc_rdb_len(uint8_t *dst, uint64_t len) {
    if (len < 64) { if (dst) dst[0] = (uint8_t)len; return 1; }
    if (len < 16384) {
        if (dst) { dst[0] = (uint8_t)(0x40 | (len >> 8)); dst[1] = (uint8_t)len; }
        return 2;
    }
    if (len <= UINT32_MAX) { if (dst) { dst[0] = 0x80; bc_put_be32(dst + 1, (uint32_t)len); }
        return 5; }
    if (dst) {
        dst[0] = 0x81;
        bc_put_be32(dst + 1, (uint32_t)(len >> 32));
        bc_put_be32(dst + 5, (uint32_t)len);
    }
    return 9;
}

#define BC_RDB_TYPE_HASH_ZIPLIST 13
#define BC_RDB_VERSION 9
#define BC_ZL_HEADER 10

/* A hash's DUMP payload from n pairs: pieces[2i], pieces[2i+1] are field and value. Sized
   first with dst NULL. */
typedef struct { const uint8_t *ptr; size_t len; } bc_piece;

static size_t bc_ziplist_size(const bc_piece *pieces, size_t count, size_t *tail) {
    size_t size = BC_ZL_HEADER, prev = 0;
    for (size_t i = 0; i < count; i++) {
        *tail = size;
        prev = bc_zl_entry(NULL, prev, pieces[i].ptr, pieces[i].len);
        size += prev;
    }
    return size + 1;
}

static size_t bc_payload(uint8_t *dst, const bc_piece *pieces, size_t count) {
    size_t tail = BC_ZL_HEADER;
    size_t zl = bc_ziplist_size(pieces, count, &tail);
    size_t total = 1 + bc_rdb_len(NULL, zl) + zl + 2 + 8;
    if (dst == NULL) return total;
    uint8_t *p = dst;
    *p++ = BC_RDB_TYPE_HASH_ZIPLIST;
    p += bc_rdb_len(p, zl);
    uint32_t zlbytes = (uint32_t)zl, zltail = (uint32_t)tail;
    uint16_t zllen = count < 0xFFFF ? (uint16_t)count : 0xFFFF;  /* 0xFFFF: "count them" */
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(zlbytes >> (8 * i));
    for (int i = 0; i < 4; i++) p[4 + i] = (uint8_t)(zltail >> (8 * i));
    p[8] = (uint8_t)zllen; p[9] = (uint8_t)(zllen >> 8);
    p += BC_ZL_HEADER;
    size_t prev = 0;
    for (size_t i = 0; i < count; i++) {
        prev = bc_zl_entry(p, prev, pieces[i].ptr, pieces[i].len);
        p += prev;
    }
    *p++ = 0xFF;
    *p++ = BC_RDB_VERSION; *p++ = 0;
    uint64_t crc = bc_crc64(0, dst, (size_t)(p - dst));
    for (int i = 0; i < 8; i++) *p++ = (uint8_t)(crc >> (8 * i));
    return total;
}

/* ---- RESP ------------------------------------------------------------------------------- */

static size_t bc_decimal(char *dst, uint64_t v) {
    char tmp[24];
    size_t n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (size_t i = 0; i < n; i++) dst[i] = tmp[n - 1 - i];
    return n;
}

/* "<kind><number>\r\n": a bulk string's head ('$') or an array's ('*'). */
static size_t bc_resp_head(uint8_t *dst, char kind, uint64_t number) {
    char buf[32];
    size_t n = 0;
    buf[n++] = kind;
    n += bc_decimal(buf + n, number);
    buf[n++] = '\r'; buf[n++] = '\n';
    if (dst) memcpy(dst, buf, n);
    return n;
}

static size_t bc_bulk_head(uint8_t *dst, uint64_t len) { return bc_resp_head(dst, '$', len); }

static size_t bc_array_head(uint8_t *dst, uint64_t count) {
    return bc_resp_head(dst, '*', count);
}

static size_t bc_bulk(uint8_t *dst, const uint8_t *s, size_t len) {
    size_t n = bc_bulk_head(dst, len);
    if (dst) { memcpy(dst + n, s, len); dst[n + len] = '\r'; dst[n + len + 1] = '\n'; }
    return n + len + 2;
}

/* ---- the loader ------------------------------------------------------------------------- */

/* One whole-pack code: its bucket (native u32), field (6 bytes), value (10 bytes). */
#define BC_FIELD 6
#define BC_VALUE 10
typedef struct { uint32_t bucket; uint8_t field[BC_FIELD]; uint8_t value[BC_VALUE]; } bc_rec;

typedef struct { bc_rec *recs; size_t len, cap; } bc_group;

/* Institution numbers by institution id: open addressing over CRC-32 of the id's bytes. */
typedef struct { uint32_t hash, len; size_t offset; int64_t number; } bc_institution;

typedef struct {
    bc_institution *slots;  /* len == 0: empty */
    size_t cap, count;
    uint8_t *ids;
    size_t ids_len, ids_cap;
} bc_institutions;

#define BC_COLUMNS 7

typedef struct {
    uint32_t bucket_bits, slot_groups, mask;
    bc_group *groups;
    size_t buffered, unknown;
    int header_seen, ended;
    bc_institutions institutions;
    uint32_t *table;  /* scratch for finding a field twice in one bucket */
    size_t table_cap;
    /* the split-pack row bc_feed stopped after: columns point into the caller's buffer */
    int split_ready;
    const uint8_t *split_col[BC_COLUMNS];
    int32_t split_len[BC_COLUMNS];
    int64_t split_number;
    char error[256];
} bc_loader;

static int bc_loader_init(bc_loader *L, uint32_t bucket_bits, uint32_t slot_groups) {
    memset(L, 0, sizeof *L);
    L->bucket_bits = bucket_bits;
    L->slot_groups = slot_groups;
    L->mask = bucket_bits >= 32 ? 0xFFFFFFFFu : (uint32_t)((1ULL << bucket_bits) - 1);
    L->groups = calloc(slot_groups, sizeof(bc_group));
    return L->groups != NULL;
}

static void bc_group_free(bc_group *g) {
    free(g->recs);
    g->recs = NULL;
    g->len = g->cap = 0;
}

static void bc_loader_free(bc_loader *L) {
    if (L->groups) {
        for (uint32_t g = 0; g < L->slot_groups; g++) bc_group_free(&L->groups[g]);
        free(L->groups);
    }
    free(L->table);
    free(L->institutions.slots);
    free(L->institutions.ids);
    memset(L, 0, sizeof *L);
}

static const uint8_t bc_copy_signature[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xFF,
                                              '\r', '\n', 0};
#define BC_EPOCH_DAY_2020 7305              /* days from 2000-01-01 (PostgreSQL's) to 2020 */
#define BC_US_PER_DAY 86400000000LL

static int bc_fail(bc_loader *L, const char *message) {
    snprintf(L->error, sizeof L->error, "%s", message);
    return -1;
}

static inline uint32_t bc_id_hash(const uint8_t *id, size_t len) {
    return ~bc_crc32_update(0xFFFFFFFFu, id, len);
}

/* Slot of `id`: its own, or the empty one where it would go. */
static size_t bc_institution_slot(const bc_institutions *I, const uint8_t *id, size_t len,
                                  uint32_t hash) {
    size_t slot = hash & (I->cap - 1);
    for (;;) {
        const bc_institution *at = &I->slots[slot];
        if (at->len == 0) return slot;
        if (at->hash == hash && at->len == len && memcmp(I->ids + at->offset, id, len) == 0)
            return slot;
        slot = (slot + 1) & (I->cap - 1);
    }
}

/* Adds (or renumbers) one institution; ids are never empty (checked by the caller). */
static int bc_add_institution(bc_loader *L, const uint8_t *id, size_t len, int64_t number) {
    bc_institutions *I = &L->institutions;
    if (2 * (I->count + 1) > I->cap) {  /* keep it at most half full */
        size_t cap = I->cap ? 2 * I->cap : 1024;
        bc_institution *slots = calloc(cap, sizeof *slots);
        if (slots == NULL) return bc_fail(L, "out of memory keeping institutions");
        bc_institutions grown = *I;
        grown.slots = slots;
        grown.cap = cap;
        for (size_t i = 0; i < I->cap; i++)
            if (I->slots[i].len)
                slots[bc_institution_slot(&grown, I->ids + I->slots[i].offset, I->slots[i].len,
                                          I->slots[i].hash)] = I->slots[i];
        free(I->slots);
        *I = grown;
    }
    if (I->ids_len + len > I->ids_cap) {
        size_t cap = I->ids_cap ? 2 * I->ids_cap : 16384;
        while (cap < I->ids_len + len) cap *= 2;
        uint8_t *ids = realloc(I->ids, cap);
        if (ids == NULL) return bc_fail(L, "out of memory keeping institutions");
        I->ids = ids;
        I->ids_cap = cap;
    }
    uint32_t hash = bc_id_hash(id, len);
    bc_institution *at = &I->slots[bc_institution_slot(I, id, len, hash)];
    if (at->len == 0) {
        memcpy(I->ids + I->ids_len, id, len);
        at->hash = hash;
        at->len = (uint32_t)len;
        at->offset = I->ids_len;
        I->ids_len += len;
        I->count++;
    }
    at->number = number;
    return 0;
}

static int bc_institution_number(const bc_loader *L, const uint8_t *id, size_t len,
                                 int64_t *number) {
    const bc_institutions *I = &L->institutions;
    if (I->cap == 0 || len == 0) return 0;
    const bc_institution *at = &I->slots[bc_institution_slot(I, id, len, bc_id_hash(id, len))];
    if (at->len == 0) return 0;
    *number = at->number;
    return 1;
}

/* One whole pack as bc_feed found it: the code's digest comes later, two at a time. */
typedef struct {
    const uint8_t *code, *sid;
    size_t code_len, sid_len;
    int32_t line_no;
    int64_t number, paid_us;
} bc_pack;

/* Files one whole pack under the bucket its code's digest names. */
static int bc_file(bc_loader *L, const bc_pack *pack, const uint8_t digest[32]) {
    const uint8_t *sid = pack->sid;
    size_t sid_len = pack->sid_len;
    int32_t line_no = pack->line_no;
    int64_t number = pack->number, paid_us = pack->paid_us;
    uint32_t group = (bc_be32(digest) & 0x7FFFFFFFu) % L->slot_groups;
    bc_group *g = &L->groups[group];
    if (g->len == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 256;
        bc_rec *grown = realloc(g->recs, cap * sizeof(bc_rec));
        if (grown == NULL) return bc_fail(L, "out of memory filing codes under their buckets");
        g->recs = grown;
        g->cap = cap;
    }
    bc_rec *r = &g->recs[g->len++];
    r->bucket = bc_be32(digest + 4) & L->mask;
    memcpy(r->field, digest + 8, BC_FIELD);
    /* owner token: CRC-32 of "settlement_id:line_no" */
    char suffix[16];
    size_t n = 0;
    suffix[n++] = ':';
    if (line_no < 0) suffix[n++] = '-';
    n += bc_decimal(suffix + n, line_no < 0 ? (uint64_t)(-(int64_t)line_no) : (uint64_t)line_no);
    uint32_t crc = bc_crc32_update(0xFFFFFFFFu, sid, sid_len);
    crc = ~bc_crc32_update(crc, (const uint8_t *)suffix, n);
    bc_put_be32(r->value, crc);
    bc_put_be32(r->value + 4, (uint32_t)number);  /* the low 32 bits, as int4send(::bit(32)) did */
    int64_t day = paid_us / BC_US_PER_DAY;
    if (paid_us % BC_US_PER_DAY < 0) day -= 1;  /* floor, for instants before 2000 */
    day -= BC_EPOCH_DAY_2020;
    if (day < 0) day = 0;
    if (day > 0xFFFF) day = 0xFFFF;
    r->value[8] = (uint8_t)(day >> 8);
    r->value[9] = (uint8_t)day;
    L->buffered++;
    return 0;
}

/* Files `pack`, or holds it until a second one can share its SHA-256: at most one is held,
   and bc_flush files it before bc_feed returns (its bytes live in the caller's buffer). */
static int bc_take(bc_loader *L, bc_pack *held, int *holding, const bc_pack *pack) {
    uint8_t digest[32], other[32];
    if (pack->code_len <= BC_ONE_BLOCK) {
        if (!*holding) { *held = *pack; *holding = 1; return 0; }
        bc_sha256_pair(held->code, held->code_len, other, pack->code, pack->code_len, digest);
        *holding = 0;
        if (bc_file(L, held, other) < 0) return -1;
        return bc_file(L, pack, digest);
    }
    if (*holding) {
        bc_sha256(held->code, held->code_len, other);
        *holding = 0;
        if (bc_file(L, held, other) < 0) return -1;
    }
    bc_sha256(pack->code, pack->code_len, digest);
    return bc_file(L, pack, digest);
}

static int bc_flush(bc_loader *L, bc_pack *held, int *holding) {
    if (!*holding) return 0;
    uint8_t digest[32];
    bc_sha256(held->code, held->code_len, digest);
    *holding = 0;
    return bc_file(L, held, digest);
}

/* Parses COPY binary rows of claims (code, settlement_id, line_no int4, institution_id,
   paid_at timestamptz, units_used int4 or NULL, pack_size int4 or NULL) from p[0..n): whole
   packs are filed; at a split pack it stops after the row with L->split_ready set, for the
   caller to take. A claim whose institution is unknown is skipped and counted (the inner
   join the record's SQL made before). Returns the bytes consumed (whole rows; the caller
   keeps the rest for the next call) or -1 with L->error set; `rows` counts packs filed. */
/* The stream's header: bytes to skip (0 while it has not all come), or -1. */
static long long bc_header(bc_loader *L, const uint8_t *p, size_t n) {
    if (n < 19) return 0;
    if (memcmp(p, bc_copy_signature, 11) != 0)
        return bc_fail(L, "not a COPY (FORMAT binary) stream: bad signature");
    uint32_t extension = bc_be32(p + 15);
    if (n - 19 < (size_t)extension) return 0;
    L->header_seen = 1;
    return (long long)(19 + extension);
}

/* One row's columns (a NULL's pointer is past its length word, its length -1): the row's
   size, 0 if it has not all come, or -1. */
static long long bc_row(bc_loader *L, const uint8_t *p, size_t n, const uint8_t **col,
                        int32_t *len) {
    size_t q = 2;
    for (int c = 0; c < BC_COLUMNS; c++) {
        if (n - q < 4) return 0;
        len[c] = (int32_t)bc_be32(p + q);
        q += 4;
        col[c] = p + q;
        if (len[c] < 0) {
            if (c < 5) return bc_fail(L, "a claim row has a NULL column before units used");
            continue;
        }
        if (n - q < (size_t)len[c]) return 0;
        q += (size_t)len[c];
    }
    if (len[2] != 4 || len[4] != 8 || (len[5] >= 0 && len[5] != 4) ||
        (len[6] >= 0 && len[6] != 4))
        return bc_fail(L, "a claim row's line number, units used and pack size must be "
                          "int4 and its paid-at a timestamptz");
    return (long long)q;
}

/* A parsed row: filed, kept for the caller (split_ready), or skipped (unknown institution). */
static int bc_dispatch(bc_loader *L, const uint8_t **col, const int32_t *len, bc_pack *held,
                       int *holding, size_t *rows) {
    int64_t number;
    if (!bc_institution_number(L, col[3], (size_t)len[3], &number)) {
        L->unknown++;
        return 0;
    }
    if (len[5] >= 0) {
        memcpy(L->split_col, col, sizeof L->split_col);
        memcpy(L->split_len, len, sizeof L->split_len);
        L->split_number = number;
        L->split_ready = 1;
        return 0;
    }
    bc_pack pack = {col[0], col[1], (size_t)len[0], (size_t)len[1],
                    (int32_t)bc_be32(col[2]), number, (int64_t)bc_be64(col[4])};
    if (bc_take(L, held, holding, &pack) < 0) return -1;
    (*rows)++;
    return 0;
}

static long long bc_feed_rows(bc_loader *L, const uint8_t *p, size_t n, size_t *rows,
                              bc_pack *held, int *holding) {
    long long pos = 0;
    *rows = 0;
    L->split_ready = 0;
    if (!L->header_seen && (pos = bc_header(L, p, n)) <= 0) return pos;
    while ((size_t)pos < n && !L->split_ready) {
        if (L->ended) return bc_fail(L, "data after the end of the COPY stream");
        if (n - (size_t)pos < 2) break;
        int16_t columns = (int16_t)((p[pos] << 8) | p[pos + 1]);
        if (columns == -1) { L->ended = 1; pos += 2; continue; }
        if (columns != BC_COLUMNS)
            return bc_fail(L, "a claim row must have 7 columns (code, settlement id, line "
                              "number, institution, paid at, units used, pack size)");
        const uint8_t *col[BC_COLUMNS];
        int32_t len[BC_COLUMNS];
        long long size = bc_row(L, p + pos, n - (size_t)pos, col, len);
        if (size <= 0) return size < 0 ? -1 : pos;
        pos += size;
        if (bc_dispatch(L, col, len, held, holding, rows) < 0) return -1;
    }
    return pos;
}

static long long bc_feed(bc_loader *L, const uint8_t *p, size_t n, size_t *rows) {
    bc_pack held;
    int holding = 0;
    long long used = bc_feed_rows(L, p, n, rows, &held, &holding);
    if (bc_flush(L, &held, &holding) < 0) return -1;  /* before any split row it stopped at */
    return used;
}

/* Moves every pack `other` holds behind this loader's own, group by group: after the sort
   they follow this loader's in each bucket (a field in both keeps `other`'s value). */
static int bc_absorb(bc_loader *L, bc_loader *other) {
    if (other->slot_groups != L->slot_groups || other->bucket_bits != L->bucket_bits)
        return bc_fail(L, "loaders of two layouts cannot be merged");
    for (uint32_t gi = 0; gi < L->slot_groups; gi++) {
        bc_group *g = &L->groups[gi], *o = &other->groups[gi];
        if (o->len == 0) continue;
        if (g->len + o->len > g->cap) {
            bc_rec *grown = realloc(g->recs, (g->len + o->len) * sizeof(bc_rec));
            if (grown == NULL) return bc_fail(L, "out of memory merging loaders");
            g->recs = grown;
            g->cap = g->len + o->len;
        }
        memcpy(g->recs + g->len, o->recs, o->len * sizeof(bc_rec));
        g->len += o->len;
        bc_group_free(o);
    }
    L->buffered += other->buffered;
    L->unknown += other->unknown;
    other->buffered = other->unknown = 0;
    return 0;
}

/* Stable LSD radix sort of a group's codes by bucket (arrival order kept within a bucket). */
static int bc_sort(bc_loader *L, bc_group *g) {
    uint32_t bits = L->bucket_bits;
    if (bits == 0 || g->len < 2) return 0;
    uint32_t passes = (bits + 10) / 11, width = (bits + passes - 1) / passes;
    bc_rec *scratch = malloc(g->len * sizeof(bc_rec));
    if (scratch == NULL) return bc_fail(L, "out of memory sorting codes by bucket");
    size_t *count = malloc(((size_t)1 << width) * sizeof(size_t));
    if (count == NULL) { free(scratch); return bc_fail(L, "out of memory sorting codes"); }
    bc_rec *from = g->recs, *to = scratch;
    for (uint32_t pass = 0; pass < passes; pass++) {
        uint32_t shift = pass * width, digits = 1u << width, mask = digits - 1;
        memset(count, 0, digits * sizeof(size_t));
        for (size_t i = 0; i < g->len; i++) count[(from[i].bucket >> shift) & mask]++;
        size_t sum = 0;
        for (uint32_t d = 0; d < digits; d++) { size_t c = count[d]; count[d] = sum; sum += c; }
        for (size_t i = 0; i < g->len; i++) to[count[(from[i].bucket >> shift) & mask]++] = from[i];
        bc_rec *t = from; from = to; to = t;
    }
    if (from != g->recs) { free(g->recs); g->recs = from; g->cap = g->len; }
    else free(scratch);
    free(count);
    return 0;
}

/* HSET semantics within a bucket [start, end): a field written twice keeps its first place
   and its last value. Compacts in place; returns the bucket's new end. */
static long long bc_dedupe(bc_loader *L, bc_rec *r, size_t start, size_t end) {
    size_t n = end - start, w = start;
    if (n < 2) return (long long)end;
    if (n <= 8) {
        for (size_t i = start; i < end; i++) {
            size_t k = start;
            while (k < w && memcmp(r[k].field, r[i].field, BC_FIELD) != 0) k++;
            if (k < w) memcpy(r[k].value, r[i].value, BC_VALUE);
            else r[w++] = r[i];
        }
        return (long long)w;
    }
    size_t size = 16;
    while (size < 2 * n) size <<= 1;
    if (size > L->table_cap) {
        uint32_t *grown = realloc(L->table, size * sizeof(uint32_t));
        if (grown == NULL) { bc_fail(L, "out of memory checking buckets"); return -1; }
        L->table = grown;
        L->table_cap = size;
    }
    memset(L->table, 0xFF, size * sizeof(uint32_t));
    for (size_t i = start; i < end; i++) {
        uint32_t h;
        memcpy(&h, r[i].field, 4);  /* SHA-256 bits: already uniform */
        size_t slot = h & (size - 1);
        for (;;) {
            uint32_t at = L->table[slot];
            if (at == 0xFFFFFFFFu) { L->table[slot] = (uint32_t)(w - start); r[w++] = r[i]; break; }
            if (memcmp(r[start + at].field, r[i].field, BC_FIELD) == 0) {
                memcpy(r[start + at].value, r[i].value, BC_VALUE);
                break;
            }
            slot = (slot + 1) & (size - 1);
        }
    }
    return (long long)w;
}

/* Sorts and dedupes a group; returns its number of buckets, or -1. */
static long long bc_prepare(bc_loader *L, uint32_t group) {
    bc_group *g = &L->groups[group];
    if (bc_sort(L, g) < 0) return -1;
    size_t w = 0, i = 0, buckets = 0;
    while (i < g->len) {
        size_t j = i;
        while (j < g->len && g->recs[j].bucket == g->recs[i].bucket) j++;
        /* move the bucket down to w first (earlier buckets may have shrunk) */
        if (w != i) memmove(&g->recs[w], &g->recs[i], (j - i) * sizeof(bc_rec));
        long long end = bc_dedupe(L, g->recs, w, w + (j - i));
        if (end < 0) return -1;
        w = (size_t)end;
        i = j;
        buckets++;
    }
    g->len = w;
    return (long long)buckets;
}

static size_t bc_key(char *dst, uint32_t group, uint32_t bucket) {
    size_t n = 0;
    memcpy(dst, "tg:fs{", 6); n = 6;
    n += bc_decimal(dst + n, group);
    dst[n++] = '}'; dst[n++] = ':';
    n += bc_decimal(dst + n, bucket);
    return n;
}

/* Could Redis store this entry as an integer? (bc_zl_integer, answered from the first byte for
   nearly every random field and value.) */
static inline int bc_integerish(const uint8_t *s, size_t len) {
    int64_t ignored;
    return (s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) && bc_zl_integer(s, len, &ignored);
}

/* The payload of a bucket none of whose fields or values Redis would store as integers (all
   but ~1 in 10^8): every entry has the same size, written without sizing each. */
#define BC_PLAIN_FIELD (1 + 1 + BC_FIELD)  /* prevlen, string length, bytes */
#define BC_PLAIN_VALUE (1 + 1 + BC_VALUE)
#define BC_PLAIN_PAIR (BC_PLAIN_FIELD + BC_PLAIN_VALUE)

static size_t bc_plain_payload(uint8_t *dst, const bc_rec *recs, size_t m) {
    size_t zl = BC_ZL_HEADER + m * BC_PLAIN_PAIR + 1;
    size_t total = 1 + bc_rdb_len(NULL, zl) + zl + 2 + 8;
    if (dst == NULL) return total;
    uint8_t *p = dst;
    *p++ = BC_RDB_TYPE_HASH_ZIPLIST;
    p += bc_rdb_len(p, zl);
    uint32_t zltail = (uint32_t)(BC_ZL_HEADER + (m - 1) * BC_PLAIN_PAIR + BC_PLAIN_FIELD);
    uint16_t zllen = 2 * m < 0xFFFF ? (uint16_t)(2 * m) : 0xFFFF;
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(zl >> (8 * i));
    for (int i = 0; i < 4; i++) p[4 + i] = (uint8_t)(zltail >> (8 * i));
    p[8] = (uint8_t)zllen; p[9] = (uint8_t)(zllen >> 8);
    p += BC_ZL_HEADER;
    for (size_t i = 0; i < m; i++) {
        p[0] = i == 0 ? 0 : BC_PLAIN_VALUE;
        p[1] = BC_FIELD;
        memcpy(p + 2, recs[i].field, BC_FIELD);
        p[BC_PLAIN_FIELD] = BC_PLAIN_FIELD;
        p[BC_PLAIN_FIELD + 1] = BC_VALUE;
        memcpy(p + BC_PLAIN_FIELD + 2, recs[i].value, BC_VALUE);
        p += BC_PLAIN_PAIR;
    }
    *p++ = 0xFF;
    *p++ = BC_RDB_VERSION; *p++ = 0;
    uint64_t crc = bc_crc64(0, dst, (size_t)(p - dst));
    for (int i = 0; i < 8; i++) *p++ = (uint8_t)(crc >> (8 * i));
    return total;
}

/* One command for the bucket of recs[0..m): RESTORE key 0 payload REPLACE, or HSET key f v…
   dst NULL sizes it. */
static size_t bc_command(uint8_t *dst, uint32_t group, const bc_rec *recs, size_t m,
                         int restore, bc_piece *pieces) {
    char key[48];
    size_t klen = bc_key(key, group, recs[0].bucket), n = 0;
    if (restore) {
        int plain = 1;
        for (size_t i = 0; i < m && plain; i++)
            plain = !bc_integerish(recs[i].field, BC_FIELD) &&
                    !bc_integerish(recs[i].value, BC_VALUE);
        for (size_t i = 0; i < m && !plain; i++) {
            pieces[2 * i].ptr = recs[i].field; pieces[2 * i].len = BC_FIELD;
            pieces[2 * i + 1].ptr = recs[i].value; pieces[2 * i + 1].len = BC_VALUE;
        }
        size_t payload = plain ? bc_plain_payload(NULL, recs, m)
                               : bc_payload(NULL, pieces, 2 * m);
        n += bc_array_head(dst ? dst + n : NULL, 5);
        n += bc_bulk(dst ? dst + n : NULL, (const uint8_t *)"RESTORE", 7);
        n += bc_bulk(dst ? dst + n : NULL, (const uint8_t *)key, klen);
        n += bc_bulk(dst ? dst + n : NULL, (const uint8_t *)"0", 1);
        n += bc_bulk_head(dst ? dst + n : NULL, payload);
        if (dst && plain) bc_plain_payload(dst + n, recs, m);
        else if (dst) bc_payload(dst + n, pieces, 2 * m);
        n += payload;
        if (dst) { dst[n] = '\r'; dst[n + 1] = '\n'; }
        n += 2;
        n += bc_bulk(dst ? dst + n : NULL, (const uint8_t *)"REPLACE", 7);
        return n;
    }
    n += bc_array_head(dst ? dst + n : NULL, 2 * m + 2);
    n += bc_bulk(dst ? dst + n : NULL, (const uint8_t *)"HSET", 4);
    n += bc_bulk(dst ? dst + n : NULL, (const uint8_t *)key, klen);
    for (size_t i = 0; i < m; i++) {
        n += bc_bulk(dst ? dst + n : NULL, recs[i].field, BC_FIELD);
        n += bc_bulk(dst ? dst + n : NULL, recs[i].value, BC_VALUE);
    }
    return n;
}

/* Sizes (dst NULL) or writes every command of a prepared group; `pieces` holds 2 × the
   largest bucket. Returns bytes; *commands gets the count. */
static size_t bc_commands(uint8_t *dst, bc_loader *L, uint32_t group, int restore,
                          bc_piece *pieces, size_t *commands) {
    bc_group *g = &L->groups[group];
    size_t n = 0, i = 0;
    *commands = 0;
    while (i < g->len) {
        size_t j = i;
        while (j < g->len && g->recs[j].bucket == g->recs[i].bucket) j++;
        n += bc_command(dst ? dst + n : NULL, group, &g->recs[i], j - i, restore, pieces);
        (*commands)++;
        i = j;
    }
    return n;
}

static size_t bc_largest_bucket(bc_loader *L, uint32_t group) {
    bc_group *g = &L->groups[group];
    size_t most = 0, i = 0;
    while (i < g->len) {
        size_t j = i;
        while (j < g->len && g->recs[j].bucket == g->recs[i].bucket) j++;
        if (j - i > most) most = j - i;
        i = j;
    }
    return most;
}

#endif
