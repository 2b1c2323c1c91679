/*
 * cs_value.h -- the contract of captured values: the byte encoding of
 * arguments and return values, shared by the extension (which encodes
 * Python objects and decodes them back), the log, the store and the
 * reports. The layout is documented in docs/log-format.md ("Values").
 *
 * A value is a tag byte followed by its payload, little-endian:
 *
 *   NONE FALSE TRUE REDACTED       no payload
 *   INT       i64
 *   BIGINT    u32 n, n bytes: two's complement, little-endian
 *   FLOAT     f64;   COMPLEX f64 real, f64 imag
 *   STR       data (UTF-8, surrogates passed through)
 *   BYTES     data
 *   TUPLE LIST SET FROZENSET   u32 count, count values
 *   DICT      u32 count, count (key, value) pairs
 *   ARRAY     name dtype (numpy's dtype.str), u8 ndim, u64 shape[ndim],
 *             u8 order ('C' or 'F'; 'S' for a numpy scalar such as
 *             numpy.float64, with ndim 0), data (the elements in that order)
 *   PICKLE    name type, data (a pickle)
 *   REPR      name type, data (UTF-8): only a repr was kept
 *   HANDLER   name handler, data (what the handler's save returned)
 *   IDENT     name type, u64 id: an object recorded by identity
 *   TRUNC     u64 original length (characters, bytes or items), then the
 *             kept part as one value
 *   FAILED    data (UTF-8): why the value could not be captured
 *   REF       u64 hash, u64 size: the whole value is encoded in a blob
 *
 *   name = u16 n, n bytes
 *   data = u32 n, n bytes; or n = CS_VAL_BLOB and u64 hash, u64 size:
 *          the bytes are in a blob, stored once per run
 *
 * Nothing here includes Python.h.
 */
#ifndef CS_VALUE_H
#define CS_VALUE_H

#include "cs_core.h"

#include <string.h>

enum cs_val_tag {
    CS_V_NONE = 0,
    CS_V_FALSE = 1,
    CS_V_TRUE = 2,
    CS_V_INT = 3,
    CS_V_BIGINT = 4,
    CS_V_FLOAT = 5,
    CS_V_COMPLEX = 6,
    CS_V_STR = 7,
    CS_V_BYTES = 8,
    CS_V_TUPLE = 9,
    CS_V_LIST = 10,
    CS_V_SET = 11,
    CS_V_FROZENSET = 12,
    CS_V_DICT = 13,
    CS_V_ARRAY = 14,
    CS_V_PICKLE = 15,
    CS_V_REPR = 16,
    CS_V_HANDLER = 17,
    CS_V_IDENT = 18,
    CS_V_TRUNC = 19,
    CS_V_FAILED = 20,
    CS_V_REDACTED = 21,
    CS_V_REF = 22,
    CS_V__MAX = 23
};

/* A data length of CS_VAL_BLOB announces a blob reference. */
#define CS_VAL_BLOB 0xffffffffu
/* Data of at least this many bytes goes into a blob. */
#define CS_VAL_BLOB_MIN 4096u
/* Nesting deeper than this is rejected by the reader. */
#define CS_VAL_MAX_DEPTH 64
#define CS_VAL_MAX_NDIM 64

/* The hash that names a blob: cs_hash64 (cs_core.h). */
CS_EXPORT uint64_t cs_value_hash(const void *p, size_t n);

/* ---- writing: append to a cs_buf ---------------------------------------- */
static inline void
cs_val_tag(cs_buf *b, unsigned tag)
{
    unsigned char c = (unsigned char)tag;
    cs_buf_append(b, &c, 1);
}

static inline void
cs_val_u8(cs_buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    cs_buf_append(b, &c, 1);
}

static inline void
cs_val_u32(cs_buf *b, uint32_t v)
{
    cs_buf_append(b, &v, 4);
}

static inline void
cs_val_u64(cs_buf *b, uint64_t v)
{
    cs_buf_append(b, &v, 8);
}

/* A name: at most 65535 bytes (longer is cut). */
static inline void
cs_val_name(cs_buf *b, const char *s, size_t n)
{
    uint16_t k = (uint16_t)(n > 0xffffu ? 0xffffu : n);
    cs_buf_append(b, &k, 2);
    cs_buf_append(b, s, k);
}

/* Inline data. The caller keeps n below CS_VAL_BLOB. */
static inline void
cs_val_data(cs_buf *b, const void *p, size_t n)
{
    cs_val_u32(b, (uint32_t)n);
    cs_buf_append(b, p, n);
}

static inline void
cs_val_blobref(cs_buf *b, uint64_t hash, uint64_t size)
{
    cs_val_u32(b, CS_VAL_BLOB);
    cs_val_u64(b, hash);
    cs_val_u64(b, size);
}

/* ---- reading ------------------------------------------------------------- */

/* A cursor over encoded bytes. Every read checks the bounds; a read past
 * the end sets `bad` and yields zeros. */
typedef struct cs_vreader {
    const unsigned char *p, *end;
    int bad;
} cs_vreader;

static inline void
cs_vr_init(cs_vreader *r, const void *p, size_t n)
{
    r->p = (const unsigned char *)p;
    r->end = r->p + n;
    r->bad = 0;
}

static inline int
cs_vr_take(cs_vreader *r, void *out, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        memset(out, 0, n);
        return 0;
    }
    memcpy(out, r->p, n);
    r->p += n;
    return 1;
}

static inline unsigned
cs_vr_u8(cs_vreader *r)
{
    unsigned char c;
    cs_vr_take(r, &c, 1);
    return c;
}

static inline uint32_t
cs_vr_u32(cs_vreader *r)
{
    uint32_t v;
    cs_vr_take(r, &v, 4);
    return v;
}

static inline uint64_t
cs_vr_u64(cs_vreader *r)
{
    uint64_t v;
    cs_vr_take(r, &v, 8);
    return v;
}

/* A name: *s points into the buffer, not NUL-terminated. */
static inline size_t
cs_vr_name(cs_vreader *r, const char **s)
{
    uint16_t n;
    cs_vr_take(r, &n, 2);
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        *s = "";
        return 0;
    }
    *s = (const char *)r->p;
    r->p += n;
    return n;
}

/* Data: inline (*s points into the buffer, returns its length, *blob 0)
 * or a blob reference (*blob 1, *hash and the returned size set, *s NULL). */
static inline uint64_t
cs_vr_data(cs_vreader *r, const char **s, int *blob, uint64_t *hash)
{
    uint32_t n = cs_vr_u32(r);
    *blob = 0;
    *s = NULL;
    if (n == CS_VAL_BLOB) {
        *blob = 1;
        *hash = cs_vr_u64(r);
        return cs_vr_u64(r);
    }
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return 0;
    }
    *s = (const char *)r->p;
    r->p += n;
    return n;
}

/* Check that the bytes at `p` hold exactly one well-formed value (with
 * nothing after it). CS_OK, or CS_EFORMAT. */
CS_EXPORT int cs_value_check(const void *p, size_t n);

/* Skip one value at the reader's position; 0 if it is malformed. */
CS_EXPORT int cs_value_skip(cs_vreader *r);

/* A readable rendering of one value, Python-like ("(1, 'a', <ndarray
 * float64 (3, 4)>)"), appended to `out`, at most about `max_chars`
 * characters (then "..."). A malformed value renders as "<damaged>". */
CS_EXPORT void cs_value_preview(const void *p, size_t n, cs_buf *out, size_t max_chars);

/* ---- the numbers in a value (for comparing runs) ------------------------ */

enum cs_num_kind { CS_NUM_FLOAT = 0, CS_NUM_COMPLEX = 1, CS_NUM_EXACT = 2 };

/* One number of a value: a float (re), a complex (re, im), or an int or
 * bool compared for equality (exact). `max_digits` is the precision of
 * its type in decimal digits (float64: 15.95). */
typedef struct cs_num {
    double re, im;
    int64_t exact;
    float max_digits;
    uint8_t kind;
} cs_num;

/* The bytes of blob `hash` of `size` bytes, valid until the next call, or
 * NULL when it is missing. */
typedef const void *(*cs_blob_fn)(void *ctx, uint64_t hash, uint64_t size);

/* Append (as cs_num) every number of the one value at `p` to `out`, in
 * traversal order: floats, complex numbers, ints and bools, inside
 * containers and numpy arrays (elements in their stored order). Text,
 * bytes, pickles, reprs and truncated parts hold no numbers. CS_OK, or
 * CS_EFORMAT for a malformed value or a missing blob. */
CS_EXPORT int cs_value_numbers(const void *p, size_t n, cs_blob_fn blob, void *ctx,
                               cs_buf *out);

/* The arguments of a call -- an ARGS value, (positional tuple, keyword
 * dict) -- as they are written in a call: "1, 'a', key=2.5". */
CS_EXPORT void cs_value_preview_args(const void *p, size_t n, cs_buf *out, size_t max_chars);

/* The name of a tag ("int", "pickle", ...), or "?" */
CS_EXPORT const char *cs_value_tag_name(unsigned tag);

#endif /* CS_VALUE_H */
